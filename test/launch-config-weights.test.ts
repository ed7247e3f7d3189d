// Two launch configs for one type, the first in a zone out of capacity, on the stub cloud with the
// whole dispatcher and steady demand: creates move to the other config at once, the failing one is
// still tried every retry interval, and it is given work again once its zone recovers.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { LaunchConfigSettings } from '../src/config/launch-configs.js';
import { CapacityError } from '../src/cloud/errors.js';
import type { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';
import { createStub, instanceTypes, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

const minute = 60_000;
const hour = 60 * minute;
const retryInterval = 5 * minute;

function config(id: string, zone: string): LaunchConfigSettings {
  return { id, instanceType: 'small', zone, region: null, subnet: null, image: null, extra: {}, weight: 1, maxInstances: null, initialState: 'active' };
}

interface CreateCall {
  at: number;
  config: string;
  failed: boolean;
}

function recordCreates(stub: StubCloud): CreateCall[] {
  const calls: CreateCall[] = [];
  const create = stub.create.bind(stub);
  stub.create = async (request) => {
    const call = { at: Date.now(), config: request.launchConfig?.id ?? '-', failed: false };
    calls.push(call);
    try {
      return await create(request);
    } catch (error) {
      call.failed = error instanceof CapacityError;
      throw error;
    }
  };
  return calls;
}

describe('launch configs', () => {
  it('config A out of capacity: ≥ 90% of the next hour\'s creates go to B, A is tried every 5 min, and A gets work again when it recovers', async () => {
    // Containers outlast the run, so every arrival needs a new instance: a steady stream of creates.
    const stub = createStub({ capacityErrorZones: ['zone-a'], containerRunMs: 10 * hour, bootDelayMs: { min: 2 * minute, max: 2 * minute } });
    const calls = recordCreates(stub);
    const h = new DispatchHarness(stub, {
      instanceTypes: { small: instanceTypes.small! },
      launchConfigs: [config('a', 'zone-a'), config('b', 'zone-b')],
      pool: { maxInstances: 2_000, maxConcurrentInstanceCreateOps: 20, timeoutIdle: hour, probeInterval: 2 * minute, syncInterval: 2 * minute, launchConfigRetryInterval: retryInterval },
      scheduler: { pollInterval: 30_000 },
    });
    h.start();
    const start = Date.now();
    const step = 30_000;
    // Four arrivals a minute.
    const arrive = () => {
      h.queue.submit(spec());
      h.queue.submit(spec());
    };
    await h.runUntil(() => Date.now() - start >= hour + 5 * minute, 2 * hour, step, arrive);

    const firstFailure = calls.find((call) => call.config === 'a' && call.failed);
    expect(firstFailure).toBeDefined();
    const t0 = firstFailure!.at;
    const hourAfter = calls.filter((call) => call.at > t0 && call.at <= t0 + hour);
    const toB = hourAfter.filter((call) => call.config === 'b').length;
    const aTries = [t0, ...hourAfter.filter((call) => call.config === 'a').map((call) => call.at)];
    const gaps = aTries.slice(1).map((at, i) => at - aTries[i]!);
    console.log(`hour after A's first capacity error: ${hourAfter.length} creates, ${toB} to B (${((100 * toB) / hourAfter.length).toFixed(1)}%), A tried ${aTries.length - 1} times, longest gap ${Math.max(...gaps) / 1_000}s`);
    expect(toB / hourAfter.length).toBeGreaterThanOrEqual(0.9);
    // Tried every retry interval: by the first create the type wants once it has passed, and work
    // arrives every step, so within one step of it.
    expect(gaps.length).toBeGreaterThanOrEqual(10);
    expect(Math.max(...gaps, t0 + hour - aTries.at(-1)!)).toBeLessThanOrEqual(retryInterval + step);
    expect(hourAfter.every((call) => call.config === 'b' || call.failed)).toBe(true);

    // Zone A has room again: its next retry boots, and from then on it takes a share by its
    // weight, which grows as its failures leave the hour's window.
    stub.faults.capacityErrorZones = [];
    const recovered = Date.now();
    const phase = 20 * minute;
    await h.runUntil(() => Date.now() - recovered >= phase, 2 * phase, step, arrive);
    const since = calls.filter((call) => call.at > recovered);
    const toA = since.filter((call) => call.config === 'a' && !call.failed).length;
    const aView = h.pool.launchConfigs().find((view) => view.id === 'a')!;
    console.log(`20 min after recovery: ${since.length} creates, ${toA} to A; A has ${aView.instances} instances, weight ${aView.effectiveWeight.toFixed(2)}`);
    h.stop();
    // More than the retries alone (one per 5 min) would give it.
    expect(toA).toBeGreaterThan(2 * (phase / retryInterval));
    expect(aView.recent.successes).toBeGreaterThan(0);
    expect(aView.state).toBe('active');
  }, 240_000);
});
