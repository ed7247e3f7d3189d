// maxHourlySpend on the stub cloud with slow create calls: instances whose create is still in
// flight count against the cap as much as live ones, at every instant.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createStub, instanceTypes, useFakeClock } from './support/pool-harness.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

describe('spend cap', () => {
  it('$2/h with $0.50/h instances and creates that take 30 s to answer: never more than 4 instances, in flight included, at any instant', async () => {
    const half = { ...instanceTypes.small!, name: 'half', providerType: 'stub.half', price: 0.5 };
    const stub = createStub({ bootDelayMs: { min: 20_000, max: 20_000 }, containerRunMs: 45_000 });
    let inFlight = 0;
    let peak = 0;
    // Recorded, not asserted, here: a throw inside a create would read as a failed create.
    const check = (): void => {
      peak = Math.max(peak, stub.liveInstances().length + inFlight);
    };
    const create = stub.create.bind(stub);
    stub.create = async (request) => {
      inFlight++;
      check();
      try {
        await new Promise((resolve) => setTimeout(resolve, 30_000));
        return await create(request);
      } finally {
        inFlight--;
      }
    };
    const h = new DispatchHarness(stub, {
      instanceTypes: { half },
      pool: { maxInstances: 64, maxConcurrentInstanceCreateOps: 8, timeoutIdle: 5_000 },
      scheduler: { maxHourlySpend: 2 },
    });
    h.start();
    for (let i = 0; i < 20; i++) h.queue.submit(spec());
    expect(await h.runUntil(() => h.count('complete') === 20, 60 * 60_000, 1_000, check)).toBe(true);
    expect(peak).toBe(4);
    expect(stub.peakLiveCount).toBeLessThanOrEqual(4);
    expect([...h.starts.values()].every((n) => n === 1)).toBe(true);
    h.stop();
  });
});
