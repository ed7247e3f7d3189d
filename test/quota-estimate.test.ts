// The quota estimate end to end: the whole dispatcher on a stub cloud with a quota it does not
// know, 50 containers waiting for hours. Creates settle at what the quota allows, quota errors
// thin out as the quiet period doubles, and a raised quota is found.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { QuotaError } from '../src/cloud/errors.js';
import type { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';
import { createStub, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

const ttl = 60_000;
const hour = 3_600_000;
const step = 10_000;

/** Counts the quota errors the stub's creates answer, with the clock time of each. */
function countQuotaErrors(stub: StubCloud): number[] {
  const at: number[] = [];
  const create = stub.create.bind(stub);
  stub.create = async (request) => {
    try {
      return await create(request);
    } catch (error) {
      if (error instanceof QuotaError) at.push(Date.now());
      throw error;
    }
  };
  return at;
}

function quotaHarness(quota: number) {
  // The containers outlast the run, so work waits the whole time.
  const stub = createStub({ quotaMaxInstances: quota, containerRunMs: 10 * hour, bootDelayMs: { min: 5_000, max: 5_000 } });
  const quotaErrors = countQuotaErrors(stub);
  // Probes and passes spaced out, or four hours of virtual time take minutes of real time.
  const h = new DispatchHarness(stub, {
    pool: { quotaErrorTTL: ttl, maxConcurrentInstanceCreateOps: 4, timeoutIdle: hour, probeInterval: 20_000, syncInterval: 60_000 },
    scheduler: { pollInterval: 20_000 },
  });
  h.start();
  for (let i = 0; i < 50; i++) h.queue.submit(spec());
  return { stub, h, quotaErrors };
}

describe('quota estimate', () => {
  it('quota 7, 50 queued, 4 hours: the estimate settles at 7, 7 run throughout, quota errors stay rare', async () => {
    const { stub, h, quotaErrors } = quotaHarness(7);
    const start = Date.now();
    let reachedAt: number | null = null;
    const shortfalls: string[] = [];
    await h.runUntil(() => Date.now() - start >= 4 * hour, 4 * hour + step, step, () => {
      const now = Date.now();
      if (reachedAt === null && h.pool.status().quotaEstimate === 7) reachedAt = now;
      // Past the estimate and one boot: every instance the quota allows runs a container.
      if (reachedAt !== null && now - reachedAt > ttl && (stub.liveCount() !== 7 || h.count('running') !== 7)) {
        shortfalls.push(`${(now - start) / 1_000}s: ${stub.liveCount()} live, ${h.count('running')} running`);
      }
    });
    const firstError = quotaErrors[0] ?? null;
    const perTenTTLs = (quotaErrors.length / (4 * hour)) * 10 * ttl;
    console.log(
      `quota 7: first quota error at ${firstError === null ? '-' : (firstError - start) / 1_000}s, estimate 7 at ${reachedAt === null ? '-' : (reachedAt - start) / 1_000}s, ` +
        `${quotaErrors.length} quota errors in 4h (${perTenTTLs.toFixed(2)} per 10 TTLs), ${stub.callCounts.create} create calls`,
    );
    expect(firstError).not.toBeNull();
    expect(reachedAt).not.toBeNull();
    expect(reachedAt! - firstError!).toBeLessThanOrEqual(10 * ttl);
    expect(shortfalls).toEqual([]);
    expect(perTenTTLs).toBeLessThanOrEqual(1);
    expect(h.pool.createRefusal('small')).toMatch(/^at the quota estimate of 7 instances \(quota error \S+ ago\)(; one more allowed in \S+)?$/);
    h.stop();
  }, 120_000);

  it('a quota raised from 7 to 10 mid-run: the estimate follows and 10 run', async () => {
    const { stub, h, quotaErrors } = quotaHarness(7);
    const start = Date.now();
    await h.runUntil(() => Date.now() - start >= 2 * hour, 2 * hour + step, step);
    expect(h.pool.status().quotaEstimate).toBe(7);
    expect(h.count('running')).toBe(7);
    const errorsBefore = quotaErrors.length;

    stub.faults.quotaMaxInstances = 10;
    const raisedAt = Date.now();
    const followed = await h.runUntil(() => h.pool.status().quotaEstimate! >= 10 && h.count('running') === 10, 3 * hour, step);
    console.log(
      `quota raised to 10: estimate ${h.pool.status().quotaEstimate} and ${h.count('running')} running after ${(Date.now() - raisedAt) / 60_000} min; ` +
        `quota errors ${errorsBefore} before the raise, ${quotaErrors.length - errorsBefore} after`,
    );
    expect(followed).toBe(true);
    // At most an hour's quiet period for the first step, then one TTL a step.
    expect(Date.now() - raisedAt).toBeLessThanOrEqual(hour + 10 * ttl);
    expect(stub.liveCount()).toBe(10);
    h.stop();
  }, 120_000);
});
