// Completion throughput and exit bookkeeping on the stub cloud with a real SQLite queue, on fake
// timers and the default probe settings: exits reach the queue through the runner `wait` session
// of each busy instance, not through probes, and an exit once recorded is never undone by the
// instance vanishing.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DispatchHarness, spec } from './support/dispatch-harness.js';
import { advance, createStub, instanceTypes, poolSettings, poolTags, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

// The daemon's defaults (src/config/schema.ts), in place of the faster ones DispatchHarness sets.
const defaults = poolSettings();
const defaultProbes = {
  probeInterval: defaults.probeInterval,
  syncInterval: defaults.syncInterval,
  maxProbesPerSecond: defaults.maxProbesPerSecond,
  probeRateCeiling: defaults.probeRateCeiling,
};
const defaultScheduler = { pollInterval: 10_000 };

describe('completions on the stub cloud', () => {
  it('1,000 instances, 20,000 zero-length containers, default probe settings: at least 200 completions per simulated second, each container run once', async () => {
    const instances = 1_000;
    const total = 20_000;
    const stub = createStub({ containerRunMs: 0 });
    for (let i = 0; i < instances; i++) stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const h = new DispatchHarness(stub, { pool: { ...defaultProbes, maxInstances: instances }, scheduler: defaultScheduler });
    expect(defaultProbes).toEqual({ probeInterval: 10_000, syncInterval: 60_000, maxProbesPerSecond: 10, probeRateCeiling: 500 });
    h.start();
    const uuids = h.queue.submitMany(Array.from({ length: total }, () => spec())).map((container) => container.uuid);

    // Every container ends complete or failed; the live set is what is not finished yet.
    const finished = () => total - h.queue.pending().length;
    const startedAt = Date.now();
    const progress: Array<{ at: number; finished: number }> = [];
    const step = 100;
    const done = await h.runUntil(() => finished() === total, 120_000, step, () => progress.push({ at: Date.now() - startedAt, finished: finished() }));
    expect(done).toBe(true);

    // The steady part: from 10% to 90% of the containers finished, past the probes' ramp-up
    // (instances found in the listing take work once a probe has found them booted).
    const from = progress.find((point) => point.finished >= total * 0.1)!;
    const to = progress.find((point) => point.finished >= total * 0.9)!;
    const perSecond = ((to.finished - from.finished) * 1_000) / (to.at - from.at);
    console.log(JSON.stringify({ perSecond, from, to, end: progress.at(-1), firstNonZero: progress.find((p) => p.finished > 0), timeline: progress.filter((p, i) => i % 5 === 0).map((p) => `${p.at}:${p.finished}`).join(" ") }));
    expect(perSecond).toBeGreaterThanOrEqual(200);

    expect(h.count('complete')).toBe(total);
    expect(h.starts.size).toBe(total);
    for (const uuid of uuids) expect(h.starts.get(uuid)).toBe(1);
    expect(stub.callCounts.create).toBe(0);
    h.stop();
  }, 60_000);

  it('a VM that vanishes right after a container exits: the container is complete with its exit code and never runs again', async () => {
    for (const when of ['as the exit is recorded', '1 ms after the exit'] as const) {
      const stub = createStub({ containerRunMs: 600_000 });
      const vm = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
      const h = new DispatchHarness(stub, { pool: { ...defaultProbes, maxInstances: 2 }, scheduler: defaultScheduler });
      h.start();
      const container = h.queue.submit(spec());
      expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 60_000, 100)).toBe(true);
      expect(h.queue.get(container.uuid)?.instanceId).toBe(vm.id);

      if (when === 'as the exit is recorded') {
        // Gone between the durable exit code and the log collection that follows it.
        const recordExit = h.queue.recordExit.bind(h.queue);
        h.queue.recordExit = (uuid, exitCode) => {
          recordExit(uuid, exitCode);
          stub.vanish(vm.id);
        };
      } else {
        setTimeout(() => stub.vanish(vm.id), 1);
      }
      // The runner sees the container exit with 7; its wait session reports it at once.
      stub.setContainers(vm.id, { [container.uuid]: { state: 'exited', exitCode: 7 } });
      expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', 10_000, 1)).toBe(true);
      expect(stub.getVm(vm.id)).toBeUndefined();

      // Until well after the pool has listed the cloud enough times to know the instance is gone.
      expect(await h.runUntil(() => h.pool.isGone(vm.id), 10 * defaults.syncInterval, 1_000)).toBe(true);
      await advance(2 * defaults.syncInterval);
      expect(h.queue.get(container.uuid)).toMatchObject({ state: 'complete', exitCode: 7, attempts: 1, instanceId: vm.id });
      expect(h.starts.get(container.uuid)).toBe(1);
      expect(h.count('queued') + h.count('locked') + h.count('running')).toBe(0);
      h.stop();
    }
  });
});
