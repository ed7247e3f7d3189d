// Dispatch on the stub cloud with a real SQLite queue, on fake timers: the failure stories of the
// scheduler (slow boots, concurrency limits, races, lost instances, restarts, priority).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { advance, createStub, settle, useFakeClock } from './support/pool-harness.js';
import { DispatchHarness, queuePath, spec } from './support/dispatch-harness.js';
import type { Container } from '../src/queue/types.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { simulatedOutput } from '../src/cloud/stub/stub-cloud.js';
import { instanceTypes, poolTags } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

describe('dispatch on the stub cloud', () => {
  it('one queued container and a slow boot: exactly one instance is created', async () => {
    const stub = createStub({ bootDelayMs: { min: 30_000, max: 30_000 }, containerRunMs: 5_000 });
    const h = new DispatchHarness(stub, { scheduler: { pollInterval: 1_000 } });
    h.start();
    const container = h.queue.submit(spec());
    const done = await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', 120_000);
    expect(done).toBe(true);
    expect(stub.callCounts.create).toBe(1);
    expect(h.dispatcher.passes).toBeGreaterThan(30);
    expect(h.queue.get(container.uuid)).toMatchObject({ exitCode: 0, attempts: 1 });
    h.stop();
  });

  it('maxConcurrentContainers 24 with 100 queued: never more than 24 running, all complete', async () => {
    const stub = createStub({ bootDelayMs: { min: 2_000, max: 5_000 }, containerRunMs: 7_000 });
    const h = new DispatchHarness(stub, {
      pool: { maxInstances: 64, maxConcurrentInstanceCreateOps: 8 },
      scheduler: { maxConcurrentContainers: 24 },
    });
    h.start();
    for (let i = 0; i < 100; i++) h.queue.submit(spec());
    let peak = 0;
    const done = await h.runUntil(
      () => h.count('complete') === 100,
      15 * 60_000,
      1_000,
      () => {
        const active = h.count('running') + h.count('locked');
        const onVms = stub.liveInstances().reduce((sum, instance) => {
          const containers = Object.values(stub.getVm(instance.id)?.containers ?? {});
          return sum + containers.filter((container) => container.state === 'running').length;
        }, 0);
        peak = Math.max(peak, active, onVms);
        expect(active).toBeLessThanOrEqual(24);
        expect(onVms).toBeLessThanOrEqual(24);
      },
    );
    expect(done).toBe(true);
    expect(peak).toBe(24);
    expect(stub.peakLiveCount).toBeLessThanOrEqual(64);
    expect([...h.starts.values()].every((n) => n === 1)).toBe(true);
    h.stop();
  });

  it('an idle timeout and a start in the same tick: the container runs once, never lost', async () => {
    for (const order of ['start first', 'timeout first'] as const) {
      const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 1_000 });
      const h = new DispatchHarness(stub, { pool: { timeoutIdle: 60_000 }, scheduler: { pollInterval: 600_000 } });
      h.start();
      const first = h.queue.submit(spec());
      expect(await h.runUntil(() => h.queue.get(first.uuid)?.state === 'complete', 60_000, 100)).toBe(true);
      await settle();
      const [idle] = h.pool.instances().filter((view) => view.state === 'idle');
      expect(idle).toBeDefined();
      const idleSince = idle!.history.at(-1)!.at;
      // Stop one tick short of the idle deadline, then let the deadline and the start meet.
      await advance(idleSince + 60_000 - Date.now() - 1);
      expect(h.pool.instance(idle!.instanceId!)?.state).toBe('idle');
      let second;
      if (order === 'start first') {
        second = h.queue.submit(spec());
        await advance(1);
      } else {
        await advance(1);
        expect(h.pool.instance(idle!.instanceId!)?.state).toBe('shutdown');
        second = h.queue.submit(spec());
        expect(h.pool.startContainer(second, idle!.workerId)).toBe(false);
      }
      expect(await h.runUntil(() => h.queue.get(second.uuid)?.state === 'complete', 120_000, 100)).toBe(true);
      expect(h.starts.get(second.uuid)).toBe(1);
      expect(h.queue.get(second.uuid)?.attempts).toBe(1);
      if (order === 'start first') expect(h.queue.get(second.uuid)?.instanceId).toBe(idle!.instanceId);
      else expect(h.queue.get(second.uuid)?.instanceId).not.toBe(idle!.instanceId);
      h.stop();
    }
  });

  it('an instance vanishing under a running container: requeued with attempts + 1, then completes elsewhere', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 60_000 });
    const h = new DispatchHarness(stub);
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 30_000)).toBe(true);
    const firstInstance = h.queue.get(container.uuid)!.instanceId!;
    stub.vanish(firstInstance);
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state !== 'running', 60_000)).toBe(true);
    expect(h.queue.get(container.uuid)).toMatchObject({ state: 'queued', attempts: 1 });
    expect(h.queue.get(container.uuid)?.reason).toContain(`instance ${firstInstance} disappeared`);
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', 180_000)).toBe(true);
    expect(h.queue.get(container.uuid)).toMatchObject({ attempts: 2, exitCode: 0 });
    expect(h.queue.get(container.uuid)?.instanceId).not.toBe(firstInstance);
    h.stop();
  });

  it('after maxAttempts lost instances the container fails and says why', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 60_000 });
    const h = new DispatchHarness(stub, { scheduler: { maxAttempts: 2 } });
    h.start();
    const container = h.queue.submit(spec());
    for (let attempt = 1; attempt <= 2; attempt++) {
      expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 60_000)).toBe(true);
      stub.vanish(h.queue.get(container.uuid)!.instanceId!);
      expect(await h.runUntil(() => h.queue.get(container.uuid)?.state !== 'running', 60_000)).toBe(true);
    }
    const failed = h.queue.get(container.uuid)!;
    expect(failed.state).toBe('failed');
    expect(failed.attempts).toBe(2);
    expect(failed.reason).toMatch(/disappeared/);
    h.stop();
  });

  it('a restarted dispatcher adopts running containers: none starts twice, all complete', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 30_000 });
    const path = queuePath();
    const first = new DispatchHarness(stub, { queuePath: path, pool: { maxConcurrentInstanceCreateOps: 4 } });
    first.start();
    const uuids = Array.from({ length: 4 }, () => first.queue.submit(spec()).uuid);
    expect(await first.runUntil(() => first.count('running') === 4, 60_000)).toBe(true);
    first.stop();

    const second = new DispatchHarness(stub, { queuePath: path, pool: { maxConcurrentInstanceCreateOps: 4 } });
    second.start();
    expect(await second.runUntil(() => second.count('complete') === 4, 120_000)).toBe(true);
    expect(second.starts.size).toBe(0);
    for (const uuid of uuids) expect(second.queue.get(uuid)).toMatchObject({ state: 'complete', attempts: 1, exitCode: 0 });
    expect(stub.callCounts.create).toBe(4);
    second.stop();
  });

  it('priority: with maxInstances 1, a priority-10 container submitted after five priority-1 ones runs next', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 5_000 });
    const h = new DispatchHarness(stub, { pool: { maxInstances: 1 } });
    h.start();
    const low = Array.from({ length: 5 }, () => h.queue.submit(spec({ priority: 1 })).uuid);
    expect(await h.runUntil(() => h.count('running') === 1, 30_000, 100)).toBe(true);
    const high = h.queue.submit(spec({ priority: 10 })).uuid;
    expect(await h.runUntil(() => h.count('complete') === 6, 300_000, 100)).toBe(true);
    const order = h.containers().sort((a, b) => a.startedAt! - b.startedAt!).map((container) => container.uuid);
    expect(order[1]).toBe(high);
    expect(low).toContain(order[0]);
    expect(stub.peakLiveCount).toBe(1);
    h.stop();
  });

  it('a container no instance type can fit fails at once, naming the constraint', async () => {
    const h = new DispatchHarness(createStub());
    h.start();
    const container = h.queue.submit(spec({ constraints: { vcpus: 64, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } }));
    await advance(1_000);
    expect(h.queue.get(container.uuid)?.state).toBe('failed');
    expect(h.queue.get(container.uuid)?.reason).toMatch(/64 vCPUs/);
    h.stop();
  });

  it('a cancelled running container is killed on its instance; its output and exit code are kept', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 600_000 });
    const h = new DispatchHarness(stub);
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 30_000)).toBe(true);
    const instanceId = h.queue.get(container.uuid)!.instanceId!;
    h.queue.cancel(container.uuid);
    expect(await h.runUntil(() => stub.getVm(instanceId)?.containers[container.uuid] === undefined, 30_000)).toBe(true);
    // Its output up to the kill is kept, and its exit code says how it ended (TERM: 128 + 15).
    expect(h.queue.get(container.uuid)).toMatchObject({ state: 'cancelled', exitCode: 143, logTail: simulatedOutput(container.uuid) });
    h.stop();
  });

  it('a broken instance (its runner refuses every start) takes 3 starts, is taken out of service, and fails no container', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 } });
    const broken = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const h = new DispatchHarness(stub, { pool: { maxInstances: 2 } });
    h.brokenInstances.add(broken.id);
    h.start();
    const uuids = Array.from({ length: 5 }, () => h.queue.submit(spec()).uuid);
    expect(await h.runUntil(() => h.count('complete') === 5, 120_000, 100)).toBe(true);
    expect(h.refusedStarts.get(broken.id)).toBe(3);
    expect(stub.getVm(broken.id)).toBeUndefined();
    expect(h.count('failed')).toBe(0);
    // A refused start is the instance's failure: it counts no attempt against the container.
    for (const uuid of uuids) expect(h.queue.get(uuid)?.attempts).toBe(1);
    h.stop();
  });

  it('a container every instance refuses fails after maxRefusalsPerContainer starts, having drained only a few instances', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, startExitCode: 1 });
    const h = new DispatchHarness(stub, { pool: { maxInstances: 2 } });
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'failed', 600_000, 100)).toBe(true);
    expect(h.queue.get(container.uuid)?.reason).toMatch(/^refused on instance stub-\d+: refused by 10 starts in a row; the last: runner start on stub-\d+ exited with 1/);
    expect(h.queue.get(container.uuid)?.attempts).toBe(0);
    // Each instance is drained after 3 refusals: 10 refusals take 4 instances, and then no more are made.
    expect(stub.callCounts.create).toBe(4);
    await h.runUntil(() => false, 120_000);
    expect(stub.callCounts.create).toBe(4);
    h.stop();
  });

  it('a container the runner cannot be asked to start (docker without an image) fails at once', async () => {
    const h = new DispatchHarness(createStub({ bootDelayMs: { min: 1_000, max: 1_000 } }), { docker: true });
    h.start();
    const container = h.queue.submit(spec({ image: null }));
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'failed', 30_000, 100)).toBe(true);
    expect(h.queue.get(container.uuid)?.reason).toMatch(/docker needs an image/);
    h.stop();
  });

  it('a start whose answer is lost runs once: the runner list confirms it and the worker takes nothing else meanwhile', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 20_000 });
    const h = new DispatchHarness(stub, { pool: { maxConcurrentInstanceCreateOps: 2 } });
    h.start();
    h.startFault = 'answer lost';
    const arrived: Container[] = [];
    h.onAnswerLost = () => {
      // Higher-priority work arrives just then: it must not land on the busy worker, nor the
      // first container run again elsewhere.
      h.startFault = null;
      arrived.push(h.queue.submit(spec({ priority: 10 })));
    };
    const first = h.queue.submit(spec());
    expect(await h.runUntil(() => h.starts.get(first.uuid) === 1, 30_000, 100)).toBe(true);
    const busiestVm = () =>
      Math.max(...stub.liveInstances().map((vm) => Object.values(stub.getVm(vm.id)!.containers).filter((c) => c.state === 'running').length));
    let busiest = 0;
    expect(await h.runUntil(() => h.count('complete') === 2, 120_000, 100, () => (busiest = Math.max(busiest, busiestVm())))).toBe(true);
    expect(busiest).toBe(1);
    expect(h.starts.get(first.uuid)).toBe(1);
    expect(arrived).toHaveLength(1);
    const second = arrived[0]!;
    expect(h.starts.get(second.uuid)).toBe(1);
    expect(h.queue.get(first.uuid)?.attempts).toBe(1);
    expect(h.queue.get(second.uuid)?.instanceId).not.toBe(h.queue.get(first.uuid)?.instanceId);
    h.stop();
  });

  it('listings that leave instances out: never above maxInstances, nothing started twice', async () => {
    for (const listOmitRate of [0.2, 0.5]) {
      const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 20 * 60_000, listOmitRate, seed: 3 });
      const h = new DispatchHarness(stub, { pool: { maxInstances: 3, maxConcurrentInstanceCreateOps: 3 } });
      h.start();
      for (let i = 0; i < 6; i++) h.queue.submit(spec());
      await h.runUntil(() => false, 15 * 60_000, 1_000);
      expect(stub.peakLiveCount).toBeLessThanOrEqual(3);
      expect(h.count('running')).toBe(3);
      expect([...h.starts.values()]).toEqual([1, 1, 1]);
      h.stop();
    }
  });

  it('locks left by a dispatcher that stopped mid-start: adopted where a runner has the container, else queued again', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs: 5_000 });
    const path = queuePath();
    const before = new SqliteQueue({ path, maxAttempts: 3 });
    const started = before.submit(spec());
    const neverStarted = before.submit(spec());
    const vm = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    before.lock(started.uuid, vm.id, 'small');
    before.lock(neverStarted.uuid, vm.id, 'small');
    before.close();
    stub.setContainers(vm.id, { [started.uuid]: { state: 'running', endsAt: Date.now() + 5_000 } });

    const h = new DispatchHarness(stub, { queuePath: path });
    h.start();
    expect(await h.runUntil(() => h.queue.get(started.uuid)?.state === 'running', 30_000, 100)).toBe(true);
    expect(h.queue.get(started.uuid)?.instanceId).toBe(vm.id);
    // Adopted from its lock, never put back in the queue on the way.
    expect(h.queue.get(started.uuid)?.reason).toBeNull();
    expect(await h.runUntil(() => h.count('complete') === 2, 120_000)).toBe(true);
    expect(h.starts.get(started.uuid)).toBeUndefined();
    expect(h.starts.get(neverStarted.uuid)).toBe(1);
    expect(h.queue.get(neverStarted.uuid)?.reason).toMatch(/has no record of it/);
    h.stop();
  });

  it('one type out of capacity does not hold back another: after 60 minutes the priority-1 small container is done, the priority-10 big one waits', async () => {
    const types = { small: instanceTypes.small!, big: { ...instanceTypes.large!, name: 'big', providerType: 'stub.big' } };
    const stub = createStub({ bootDelayMs: { min: 30_000, max: 30_000 }, containerRunMs: 60_000, capacityErrorTypes: ['big'] });
    const createsOf = new Map<string, number>();
    const create = stub.create.bind(stub);
    stub.create = (request) => {
      createsOf.set(request.instanceType.name, (createsOf.get(request.instanceType.name) ?? 0) + 1);
      return create(request);
    };
    // The pool backs a type off for quotaErrorTTL (60 s here) after each capacity error.
    const h = new DispatchHarness(stub, { instanceTypes: types, pool: { quotaErrorTTL: 60_000 } });
    h.start();
    const big = h.queue.submit(spec({ priority: 10, constraints: { vcpus: 8, ramMiB: 8192, scratchGiB: 0, gpus: 0, preemptible: false } })).uuid;
    const small = h.queue.submit(spec({ priority: 1 })).uuid;
    await h.runUntil(() => false, 60 * 60_000);
    const bigCreates = createsOf.get('big') ?? 0;
    console.log(`capacity story: ${bigCreates} big creates tried in 60 simulated minutes, ${createsOf.get('small') ?? 0} small`);
    expect(h.queue.get(small)).toMatchObject({ state: 'complete', exitCode: 0, instanceType: 'small' });
    expect(h.queue.get(big)).toMatchObject({ state: 'queued', attempts: 0 });
    expect(createsOf.get('small')).toBe(1);
    // Tried again only when the back-off ends: about once a minute, never more.
    expect(bigCreates).toBeGreaterThan(0);
    expect(bigCreates).toBeLessThanOrEqual(61);
    h.stop();
  });

  it('a preemptible type out of capacity: its container waits preemptibleFallbackAfter (10 min), then runs on on-demand', async () => {
    const spot = { ...instanceTypes.small!, name: 'spot', providerType: 'stub.spot', price: 0.02, preemptible: true };
    const types = { spot, small: instanceTypes.small! };
    const stub = createStub({ bootDelayMs: { min: 30_000, max: 30_000 }, containerRunMs: 60_000, capacityErrorTypes: ['spot'] });
    const h = new DispatchHarness(stub, {
      instanceTypes: types,
      pool: { quotaErrorTTL: 60_000 },
      scheduler: { maxPriceFactor: 1.5, preemptibleFallbackAfter: 10 * 60_000 },
    });
    h.start();
    const began = Date.now();
    const uuid = h.queue.submit(spec({ constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: true } })).uuid;
    expect(await h.runUntil(() => h.queue.get(uuid)?.state === 'complete', 30 * 60_000)).toBe(true);
    expect(h.queue.get(uuid)).toMatchObject({ exitCode: 0, instanceType: 'small' });
    const startedAfter = h.queue.get(uuid)!.startedAt! - began;
    expect(startedAfter).toBeGreaterThanOrEqual(10 * 60_000);
    // The first back-off after the 10 minutes lets the on-demand create go: within one back-off and one boot.
    expect(startedAfter).toBeLessThanOrEqual(10 * 60_000 + 60_000 + 30_000 + 10_000);
    h.stop();
  });

  it('one type out of capacity, a dearer one within maxPriceFactor: the big container runs on the next type up, the small one is done within one boot and run', async () => {
    const big = { ...instanceTypes.large!, name: 'big', providerType: 'stub.big' };
    // 0.25/h against big's 0.20/h: within maxPriceFactor 1.5.
    const bigger = { ...big, name: 'bigger', providerType: 'stub.bigger', price: 0.25 };
    const types = { small: instanceTypes.small!, big, bigger };
    const stub = createStub({ bootDelayMs: { min: 30_000, max: 30_000 }, containerRunMs: 60_000, capacityErrorTypes: ['big'] });
    const h = new DispatchHarness(stub, { instanceTypes: types, pool: { quotaErrorTTL: 60_000 }, scheduler: { maxPriceFactor: 1.5 } });
    h.start();
    const began = Date.now();
    const bigUuid = h.queue.submit(spec({ priority: 10, constraints: { vcpus: 8, ramMiB: 8192, scratchGiB: 0, gpus: 0, preemptible: false } })).uuid;
    const smallUuid = h.queue.submit(spec({ priority: 1 })).uuid;
    expect(await h.runUntil(() => h.queue.get(smallUuid)?.state === 'complete', 10 * 60_000)).toBe(true);
    // One boot (30 s) and one run (60 s), with a few seconds for listings, probes and passes.
    expect(Date.now() - began).toBeLessThanOrEqual(30_000 + 60_000 + 10_000);
    expect(h.queue.get(smallUuid)).toMatchObject({ exitCode: 0, instanceType: 'small' });
    expect(await h.runUntil(() => h.queue.get(bigUuid)?.state === 'complete', 10 * 60_000)).toBe(true);
    expect(h.queue.get(bigUuid)).toMatchObject({ exitCode: 0, attempts: 1, instanceType: 'bigger' });
    expect(Date.now() - began).toBeLessThanOrEqual(30_000 + 60_000 + 10_000);
    h.stop();
  });
});
