// Completion throughput and exit bookkeeping on the stub cloud with a real SQLite queue, on fake
// timers and the default probe settings: exits reach the queue through the runner `wait` session
// of each busy instance, not through probes, and an exit once recorded is never undone by the
// instance vanishing.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { simulatedOutput } from '../src/cloud/stub/stub-cloud.js';
import { parseConfig } from '../src/config/load.js';
import { commandTimeoutMs } from '../src/pool/pool.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';
import { advance, createStub, instanceTypes, poolTags, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

// The daemon's own defaults, from a config that sets none, in place of the faster probes and
// listings DispatchHarness sets: probeInterval 10 s, maxProbesPerSecond 10, probeRateCeiling 500,
// syncInterval 60 s, pollInterval 10 s.
const defaults = parseConfig(
  'cloud:\n  driver: stub\ninstanceTypes:\n  small: { providerType: stub.small, vcpus: 2, ramMiB: 4096, price: 0.05 }\n',
  'defaults',
);

describe('completions on the stub cloud', () => {
  it('1,000 instances, 20,000 zero-length containers, default probe settings: at least 200 completions per simulated second, each container run once', async () => {
    const instances = 1_000;
    const total = 20_000;
    const stub = createStub({ containerRunMs: 0 });
    for (let i = 0; i < instances; i++) stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const h = new DispatchHarness(stub, { pool: { ...defaults.pool, maxInstances: instances }, scheduler: defaults.scheduler });
    h.start();
    const uuids = h.queue.submitMany(Array.from({ length: total }, () => spec())).map((container) => container.uuid);

    // Every container ends complete or failed; the live set is what is not finished yet.
    const finished = () => total - h.queue.pending().length;
    const startedAt = Date.now();
    const progress: Array<{ at: number; finished: number }> = [];
    const step = 100;
    const done = await h.runUntil(() => finished() === total, 120_000, step, () => progress.push({ at: Date.now() - startedAt, finished: finished() }));
    expect(done).toBe(true);

    // The middle 80% of the run. Instances found in the listing take work once the first probe
    // round (at probeInterval, 100 probes/s for 1,000 instances) finds them booted, and the run
    // ends before that round does: the rate is measured with fewer than 1,000 instances working.
    const from = progress.find((point) => point.finished >= total * 0.1)!;
    const to = progress.find((point) => point.finished >= total * 0.9)!;
    const perSecond = ((to.finished - from.finished) * 1_000) / (to.at - from.at);
    expect(perSecond).toBeGreaterThanOrEqual(200);

    expect(h.count('complete')).toBe(total);
    expect(h.starts.size).toBe(total);
    for (const uuid of uuids) expect(h.starts.get(uuid)).toBe(1);
    expect(stub.callCounts.create).toBe(0);
    h.stop();
  }, 60_000);

  it('a VM that vanishes right after a container exits: the container is complete with its exit code and never runs again', async () => {
    const variants = ['as the exit is recorded', '1 ms after the exit', 'as the exit is recorded, its logs never answering'] as const;
    for (const when of variants) {
      const stub = createStub({ containerRunMs: 600_000 });
      const hangLogs = when === 'as the exit is recorded, its logs never answering';
      if (hangLogs) {
        // The logs command hangs until the pool's command timeout: the pool forgets the instance
        // while the exit is still being finished.
        const executorFor = stub.executorFor.bind(stub);
        stub.executorFor = (target) => {
          const executor = executorFor(target);
          return { ...executor, run: (command, options) => (/ logs /.test(command) ? new Promise(() => {}) : executor.run(command, options)) };
        };
      }
      const vm = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
      // Listing often enough (not a probe setting) that the pool forgets the instance within the command timeout.
      const pool = { ...defaults.pool, maxInstances: 2, ...(hangLogs ? { syncInterval: 10_000 } : {}) };
      const h = new DispatchHarness(stub, { pool, scheduler: defaults.scheduler });
      h.start();
      const container = h.queue.submit(spec());
      expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 60_000, 100)).toBe(true);
      expect(h.queue.get(container.uuid)?.instanceId).toBe(vm.id);

      if (when === '1 ms after the exit') {
        setTimeout(() => stub.vanish(vm.id), 1);
      } else {
        // Gone between the durable exit code and the log collection that follows it.
        const recordExit = h.queue.recordExit.bind(h.queue);
        h.queue.recordExit = (uuid, exitCode) => {
          recordExit(uuid, exitCode);
          stub.vanish(vm.id);
        };
      }
      // The runner sees the container exit with 7; its wait session reports it at once.
      stub.setContainers(vm.id, { [container.uuid]: { state: 'exited', exitCode: 7 } });
      if (hangLogs) {
        expect(await h.runUntil(() => h.pool.isGone(vm.id), commandTimeoutMs - 1_000, 100)).toBe(true);
        // Forgotten before the exit was finished: the exit code is recorded, the container not yet complete.
        expect(h.queue.get(container.uuid)).toMatchObject({ state: 'running', exitCode: 7 });
      }
      expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', commandTimeoutMs + 1_000, 100)).toBe(true);
      expect(stub.getVm(vm.id)).toBeUndefined();

      // Until well after the pool has listed the cloud enough times to know the instance is gone.
      expect(await h.runUntil(() => h.pool.isGone(vm.id), 10 * defaults.pool.syncInterval, 1_000)).toBe(true);
      await advance(2 * defaults.pool.syncInterval);
      const done = h.queue.get(container.uuid)!;
      expect(done).toMatchObject({ state: 'complete', exitCode: 7, attempts: 1, instanceId: vm.id });
      // Collected only where the VM outlived the exit by a moment.
      expect(done.logTail).toBe(when === '1 ms after the exit' ? simulatedOutput(container.uuid) : '');
      expect(h.starts.get(container.uuid)).toBe(1);
      expect(h.count('queued') + h.count('locked') + h.count('running')).toBe(0);
      h.stop();
    }
  });
});
