// A restarted daemon whose first listings leave out an instance that runs a container: the new
// pool never saw it, so it must not judge it gone on two listings and run its container again
// elsewhere (found by the chaos soak). Once the instance really is gone, the container is requeued.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { tagKeys } from '../src/cloud/driver.js';
import { unseenGoneAfterListings } from '../src/pool/pool.js';
import { DispatchHarness, queuePath, spec } from './support/dispatch-harness.js';
import { createStub, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

const minute = 60_000;

describe('restart with partial listings', () => {
  it('an instance left out of the new pool\'s first listings keeps its container; one really gone has it requeued after enough listings', async () => {
    const stub = createStub({ containerRunMs: 3 * 60 * minute });
    const path = queuePath();
    const options = { queuePath: path, pool: { syncInterval: minute, probeInterval: 10_000 } };
    const first = new DispatchHarness(stub, options);
    first.start();
    const uuid = first.queue.submit(spec()).uuid;
    expect(await first.runUntil(() => first.queue.get(uuid)?.state === 'running', 5 * minute)).toBe(true);
    const instanceId = first.queue.get(uuid)!.instanceId!;
    first.stop();

    // The cloud leaves the instance out of the next 4 listings: fewer than the new pool needs.
    let hidden = unseenGoneAfterListings - 1;
    const list = stub.list.bind(stub);
    stub.list = async (filter) => {
      const instances = await list(filter);
      if (hidden <= 0) return instances;
      hidden--;
      return instances.filter((instance) => instance.id !== instanceId);
    };
    const second = new DispatchHarness(stub, options);
    second.start();
    await second.runUntil(() => false, (unseenGoneAfterListings + 2) * minute, 10_000);
    expect(second.queue.get(uuid)).toMatchObject({ state: 'running', instanceId, attempts: 1 });
    expect(second.starts.get(uuid) ?? 0).toBe(0);
    second.stop();

    // Now it is gone for good: a third daemon requeues its container, but only after enough listings.
    stub.vanish(instanceId);
    expect(stub.liveInstances().some((instance) => instance.tags[tagKeys.pool] && instance.id === instanceId)).toBe(false);
    const third = new DispatchHarness(stub, options);
    third.start();
    await third.runUntil(() => false, (unseenGoneAfterListings - 2) * minute, 10_000);
    expect(third.queue.get(uuid)?.state).toBe('running');
    expect(await third.runUntil(() => third.starts.get(uuid) === 1, 5 * minute, 10_000)).toBe(true);
    expect(third.queue.get(uuid)).toMatchObject({ attempts: 2 });
    third.stop();
  }, 60_000);
});
