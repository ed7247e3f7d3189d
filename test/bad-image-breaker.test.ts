// The 2019 story (the retrospective in the seeds): a pool of at most 3 instances, 86 containers
// queued, an image whose VMs never pass their boot probe, and 30% of listings failing, for four
// simulated days. Without a breaker the pool created about 16 instances an hour, every hour
// (1,565 in four days); with it the config breaks after 3 boot failures and is then tried by one
// trial instance at a time, the waits doubling up to 30 minutes.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { firstBreakerDelayMs, maxBreakerDelayMs } from '../machines/launch-config.js';
import type { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';
import { createStub, instanceTypes, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

const minute = 60_000;
const hour = 60 * minute;
const day = 24 * hour;
const timeoutBooting = 10 * minute;

/** The clock time of every create call the stub answers. */
function recordCreates(stub: StubCloud): number[] {
  const at: number[] = [];
  const create = stub.create.bind(stub);
  stub.create = (request) => {
    at.push(Date.now());
    return create(request);
  };
  return at;
}

describe('bad-image breaker', () => {
  it('the 2019 story, 4 simulated days: at most 3 instances, one trial per 30 min once ramped up, creates bounded', async () => {
    const stub = createStub({ neverBootFraction: 1, listFailureRate: 0.3, containerRunMs: hour });
    const creates = recordCreates(stub);
    const h = new DispatchHarness(stub, {
      instanceTypes: { small: instanceTypes.small! },
      pool: { maxInstances: 3, maxConcurrentInstanceCreateOps: 3, timeoutBooting, probeInterval: 30_000, syncInterval: minute },
      scheduler: { pollInterval: 30_000 },
    });
    h.start();
    for (let i = 0; i < 86; i++) h.queue.submit(spec());
    const start = Date.now();
    let peak = 0;
    const step = 30_000;
    await h.runUntil(() => Date.now() - start >= 4 * day, 4 * day + step, step, () => {
      peak = Math.max(peak, stub.liveInstances().length, h.pool.instances().length);
    });
    const reason = h.pool.createRefusal('small');
    const queued = h.count('queued');
    const waits = h.containers().map((container) => h.dispatcher.waitReason(container.uuid) ?? '');
    h.stop();

    // The bound: 3 creates fill the pool and fail their boots at timeoutBooting, which breaks the
    // config. Then each trial waits the breaker's delay (1, 2, 4, 8, 16 min, then 30 min for good)
    // and takes timeoutBooting to fail, so once ramped up a cycle lasts at least 30 + 10 = 40 min.
    // Ramp-up trials: 5. Steady trials in 4 days: at most 4 days / 40 min = 144. Total ≤ 3 + 5 + 144.
    const rampUp = Math.log2(maxBreakerDelayMs / firstBreakerDelayMs);
    const bound = 3 + Math.ceil(rampUp) + Math.ceil((4 * day) / (maxBreakerDelayMs + timeoutBooting));
    console.log(`2019 story: ${creates.length} creates in 4 days (bound ${bound}; without the breaker 1,565-1,574), peak ${peak} instances`);
    expect(peak).toBeLessThanOrEqual(3);
    expect(creates.length).toBeLessThanOrEqual(bound);
    // It kept trying: one trial per cycle, not a config given up for good.
    expect(creates.length).toBeGreaterThan(100);
    // Once ramped up (the first 3 + 5 trials), creates are at least 30 min apart.
    const gaps = creates.slice(3 + Math.ceil(rampUp)).map((at, i, rest) => (i === 0 ? Infinity : at - rest[i - 1]!));
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(maxBreakerDelayMs);
    // The containers wait, and say why: the config is broken, with its last error.
    expect(queued).toBe(86);
    // Each waiting container says so too, with the config's last error (the one the trial is for, if
    // a trial boots, waits for that boot).
    const broken = /launch config small-\w+ is broken.*; last error: boot probe did not pass within timeoutBooting/;
    expect(waits.filter((wait) => broken.test(wait)).length).toBeGreaterThanOrEqual(85);
    expect(reason).toMatch(/launch config small-\w+ is broken(; its trial instance \S+ is booting| after \d+ boot failures in a row; a trial create in \S+); last error: boot probe did not pass within timeoutBooting/);
  }, 240_000);

  it('freezePoolAfterBootFailures: the failure that reaches it stops every create until the operator resumes the pool', async () => {
    const stub = createStub({ neverBootFraction: 1, containerRunMs: hour });
    const creates = recordCreates(stub);
    const h = new DispatchHarness(stub, {
      instanceTypes: { small: instanceTypes.small! },
      // The breaker out of the way, so the freeze alone stops creates.
      pool: { maxInstances: 3, maxConcurrentInstanceCreateOps: 3, timeoutBooting, bootFailuresToBreak: 100, freezePoolAfterBootFailures: 4, probeInterval: 30_000 },
      scheduler: { pollInterval: 30_000 },
    });
    h.start();
    for (let i = 0; i < 10; i++) h.queue.submit(spec());
    expect(await h.runUntil(() => h.pool.createsFrozen() !== null, hour, 30_000)).toBe(true);
    const frozenAt = creates.length;
    // 3 boots failed at timeoutBooting, then the 4th among the next 3 froze the pool.
    expect(frozenAt).toBe(6);
    await h.runUntil(() => false, 3 * hour, 60_000);
    expect(creates.length).toBe(frozenAt);
    expect(h.pool.createRefusal('small')).toMatch(/^creates frozen after 4 boot failures within an hour \(freezePoolAfterBootFailures 4\); resume with POST \/pool\/resume$/);
    expect(h.pool.resumeCreates()).toBe(true);
    expect(h.pool.resumeCreates()).toBe(false);
    expect(await h.runUntil(() => creates.length > frozenAt, 5 * minute, 10_000)).toBe(true);
    h.stop();
  }, 60_000);

  it('create errors of no other class break the config, but never freeze the pool: an API outage is not a bad image', async () => {
    const stub = createStub({ createErrorRate: 1 });
    const h = new DispatchHarness(stub, {
      instanceTypes: { small: instanceTypes.small! },
      pool: { maxInstances: 3, maxConcurrentInstanceCreateOps: 3, freezePoolAfterBootFailures: 2 },
      scheduler: { pollInterval: 30_000 },
    });
    h.start();
    h.queue.submit(spec());
    await h.runUntil(() => false, hour, 30_000);
    expect(h.pool.createsFrozen()).toBeNull();
    expect(h.pool.launchConfigs()[0]).toMatchObject({ state: 'broken' });
    h.stop();
  }, 60_000);
});

