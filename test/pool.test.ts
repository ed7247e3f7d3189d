// The pool over the stub cloud on fake timers: in-flight creates, quota and rate limits, failed
// listings, restarts, bad images and orphans.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { tagKeys } from '../src/cloud/driver.js';
import { staleAfterFailedListings } from '../machines/pool.js';
import { commandTimeoutMs } from '../src/pool/pool.js';
import { advance, createStub, instanceTypes, PoolHarness, poolTags, settle, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

describe('in-flight creates', () => {
  it('refuses a second create while one is in flight, and counts the in-flight one as unallocated', async () => {
    const stub = createStub();
    const h = new PoolHarness(stub, { maxConcurrentInstanceCreateOps: 1 });
    await h.start();
    stub.holdCloudOps(['create']);

    expect(h.pool.create('small')).toBe(true);
    expect(h.pool.create('small')).toBe(false);
    expect(h.pool.createRefusal('small')).toMatch(/maxConcurrentInstanceCreateOps/);
    expect(h.pool.unallocated()).toEqual({ small: 1 });
    expect(h.pool.countByState().creating).toBe(1);

    stub.releaseCloudOps(['create']);
    await settle();
    expect(h.pool.countByState()).toMatchObject({ creating: 0, booting: 1 });
    expect(h.pool.unallocated()).toEqual({ small: 1 });
    expect(h.pool.create('small')).toBe(true);
    h.pool.stop();
  });

  it('counts once an instance that a listing shows before its create call returns', async () => {
    const stub = createStub();
    const h = new PoolHarness(stub, { syncInterval: 60_000 });
    await h.start();
    stub.holdCloudOps(['create']);
    expect(h.pool.create('small')).toBe(true);
    await settle();

    await advance(60_000);
    expect(stub.liveCount()).toBe(1);
    expect(stub.callCounts.list).toBe(2);
    expect(h.pool.unallocated()).toEqual({ small: 1 });
    expect(h.pool.instances()).toHaveLength(1);
    expect(h.pool.instances()[0]?.instanceId).toBe(stub.liveInstances()[0]?.id);

    stub.releaseCloudOps(['create']);
    await settle();
    expect(h.pool.unallocated()).toEqual({ small: 1 });
    expect(h.pool.instances()).toHaveLength(1);

    await advance(60_000);
    expect(h.pool.unallocated()).toEqual({ small: 1 });
    expect(h.pool.instances()).toHaveLength(1);
    h.pool.stop();
  });
});

describe('cloud errors', () => {
  it('quota error: no create is attempted until quotaErrorTTL passes, then a notification fires', async () => {
    const stub = createStub({ quotaMaxInstances: 0 });
    const h = new PoolHarness(stub, { quotaErrorTTL: 60_000, syncInterval: 600_000, probeInterval: 600_000 });
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(stub.callCounts.create).toBe(1);
    expect(h.pool.status().atQuota).toBe(true);
    expect(h.logsWith('cloud call failed')).toEqual([expect.objectContaining({ operation: 'create', errorClass: 'QuotaError' })]);

    await advance(59_999);
    expect(h.pool.create('small')).toBe(false);
    expect(h.pool.createRefusal('small')).toBe('at the quota estimate of 0 instances (quota error 1m ago); one more allowed in 1s');
    expect(stub.callCounts.create).toBe(1);

    const before = h.notifications;
    stub.faults.quotaMaxInstances = null;
    await advance(1);
    expect(h.notifications).toBe(before + 1);
    expect(h.pool.status().atQuota).toBe(false);
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(stub.liveCount()).toBe(1);
    h.pool.stop();
  });

  it('quota error with creates in flight: the estimate is what exists, failed creates not counted, and the refusal says when one more is allowed', async () => {
    const stub = createStub({ quotaMaxInstances: 2 });
    const h = new PoolHarness(stub, { quotaErrorTTL: 60_000, syncInterval: 30_000, probeInterval: 600_000, maxConcurrentInstanceCreateOps: 4 });
    await h.start();
    stub.holdCloudOps(['create']);
    for (let i = 0; i < 4; i++) expect(h.pool.create('small')).toBe(true);
    stub.releaseCloudOps(['create']);
    await settle();
    expect(stub.liveCount()).toBe(2);
    expect(h.pool.instances()).toHaveLength(2);
    expect(h.pool.status()).toMatchObject({ atQuota: true });
    expect(h.pool.create('small')).toBe(false);

    // The next listing shows both: the estimate is 2, not the 4 creates tried, and the quiet period
    // runs from that listing.
    await advance(30_000);
    expect(h.pool.status()).toMatchObject({ atQuota: true, quotaEstimate: 2 });
    expect(h.pool.createRefusal('small')).toBe('at the quota estimate of 2 instances (quota error 30s ago); one more allowed in 1m');
    expect(h.pool.picture().createRefusal('small')).toMatchObject({ scope: 'pool' });
    expect(h.logsWith('pool state changed').at(-1)).toMatchObject({ quotaEstimate: 2 });

    await advance(60_000);
    expect(h.pool.status()).toMatchObject({ atQuota: false, quotaEstimate: 3 });
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(h.pool.createRefusal('small')).toBe('at the quota estimate of 2 instances (quota error 0s ago); one more allowed in 2m');
    expect(stub.liveCount()).toBe(2);
    h.pool.stop();
  });

  it('rate limit on create: creates are held off while listings and probes go on', async () => {
    const stub = createStub({ minCreateIntervalMs: 120_000, bootDelayMs: { min: 1_000, max: 1_000 } });
    const h = new PoolHarness(stub, { syncInterval: 10_000, probeInterval: 5_000, timeoutIdle: 3_600_000 });
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(h.logsWith('cloud call failed')).toEqual([expect.objectContaining({ operation: 'create', errorClass: 'RateLimitError' })]);
    expect(h.pool.status().throttled).toEqual(['create']);

    const listsBefore = stub.callCounts.list;
    const sshBefore = stub.sshCommandCount;
    for (let i = 0; i < 10; i++) {
      expect(h.pool.create('small')).toBe(false);
      await advance(10_000);
    }
    expect(stub.callCounts.create).toBe(2);
    expect(stub.callCounts.list - listsBefore).toBeGreaterThanOrEqual(9);
    expect(stub.sshCommandCount - sshBefore).toBeGreaterThanOrEqual(10);
    expect(h.pool.countByState().idle).toBe(1);

    await advance(20_000);
    expect(h.pool.status().throttled).toEqual([]);
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(stub.liveCount()).toBe(2);
    h.pool.stop();
  });

  it('capacity error for one type refuses that type only, until the TTL passes', async () => {
    const stub = createStub({ capacityErrorTypes: ['large'] });
    const h = new PoolHarness(stub, { quotaErrorTTL: 60_000 });
    await h.start();
    expect(h.pool.create('large')).toBe(true);
    await settle();
    expect(h.pool.create('large')).toBe(false);
    expect(h.pool.status().capacityExhausted).toEqual(['large in *']);
    expect(h.pool.create('small')).toBe(true);
    await settle();
    stub.faults.capacityErrorTypes = [];
    await advance(60_000);
    expect(h.pool.create('large')).toBe(true);
    h.pool.stop();
  });
});

describe('listings', () => {
  it('refuses creates until the first listing succeeds', async () => {
    const stub = createStub({ failListings: true });
    const h = new PoolHarness(stub);
    await h.start();
    expect(h.pool.status().loaded).toBe(false);
    expect(h.pool.create('small')).toBe(false);
    expect(stub.callCounts.create).toBe(0);
  });

  it('listings failing for 5 intervals: nothing forgotten, no create while stale, never above maxInstances', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 } });
    for (let i = 0; i < 2; i++) stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const maxInstances = 5;
    const h = new PoolHarness(stub, { maxInstances, syncInterval: 60_000, timeoutIdle: 3_600_000 });
    await h.start();
    const known = stub.liveInstances().map((instance) => instance.id);
    expect(h.pool.instances().map((view) => view.instanceId)).toEqual(known);

    stub.faults.failListings = true;
    const staleFrom = staleAfterFailedListings * 60;
    const createsBySecond: number[] = [];
    for (let second = 1; second <= 5 * 60; second++) {
      // After one or two failed listings a create may still go ahead; once stale, none may,
      // though maxInstances would allow two more.
      if (second === 90 || second > staleFrom) h.pool.create('small');
      await advance(1_000);
      createsBySecond.push(stub.callCounts.create);
      expect(stub.liveCount()).toBeLessThanOrEqual(maxInstances);
      const seen = new Set(h.pool.instances().map((view) => view.instanceId));
      for (const id of known) expect(seen.has(id)).toBe(true);
    }
    expect(stub.callCounts.list).toBe(1 + 5);
    expect(h.pool.status().stale).toBe(true);
    expect(createsBySecond[staleFrom - 1]).toBe(1);
    expect(createsBySecond.at(-1)).toBe(createsBySecond[staleFrom - 1]);
    expect(h.pool.createRefusal('small')).toMatch(/listings are failing/);
    expect(h.pool.instances().length).toBe(stub.liveCount());

    stub.faults.failListings = false;
    await advance(60_000);
    expect(h.pool.status().stale).toBe(false);
    while (h.pool.create('small')) await settle();
    expect(stub.liveCount()).toBe(maxInstances);
    expect(stub.peakLiveCount).toBe(maxInstances);
    h.pool.stop();
  });

  it('forgets an instance gone from listings that began after its last update', async () => {
    const stub = createStub();
    const instance = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const h = new PoolHarness(stub, { syncInterval: 60_000 });
    await h.start();
    expect(h.pool.instances()).toHaveLength(1);
    stub.vanish(instance.id);
    await advance(60_000);
    await advance(60_000);
    expect(h.pool.instances()).toHaveLength(0);
    expect(h.logsWith('instance gone from the cloud')).toHaveLength(1);
  });
});

describe('hung commands', () => {
  it('a probe that never answers fails after commandTimeoutMs, and the instance goes at timeoutProbe', async () => {
    const stub = createStub();
    const instance = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    let hang = false;
    const h = new PoolHarness(stub, { probeInterval: 10_000, timeoutProbe: 300_000, timeoutIdle: 3_600_000 }, (target) => {
      const executor = stub.executorFor(target);
      return { ...executor, run: (command, options) => (hang ? new Promise(() => {}) : executor.run(command, options)) };
    });
    await h.start();
    await advance(10_000);
    expect(h.pool.instance(instance.id)?.state).toBe('idle');
    hang = true;
    await advance(10_000 + commandTimeoutMs);
    expect(h.pool.instance(instance.id)?.lastError).toMatch(/did not finish within/);
    await advance(300_000);
    expect(h.pool.instance(instance.id)?.state).toBe('shutdown');
    h.pool.stop();
  });
});

describe('stop', () => {
  it('a listing that returns after stop() spawns no workers and destroys nothing', async () => {
    const stub = createStub();
    stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    stub.holdCloudOps(['list']);
    const h = new PoolHarness(stub);
    await h.start();
    h.pool.stop();
    stub.releaseCloudOps(['list']);
    await settle();
    expect(h.pool.instances()).toHaveLength(0);
    await advance(3_600_000);
    expect(stub.callCounts.destroy).toBe(0);
    expect(stub.liveCount()).toBe(1);
  });
});

describe('restart', () => {
  it('a second pool over the same cloud sees every instance, keeps held ones held, reports orphans once', async () => {
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 } });
    const orphan = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('retired-type') });
    const first = new PoolHarness(stub, { maxConcurrentInstanceCreateOps: 3, probeInterval: 5_000 });
    await first.start();
    for (let i = 0; i < 3; i++) expect(first.pool.create(i < 2 ? 'small' : 'large')).toBe(true);
    await advance(20_000);
    const views0 = first.pool.instances();
    const smalls = views0.filter((view) => view.instanceType === 'small').map((view) => view.instanceId!);
    const ids = [smalls[0], smalls[1], views0.find((view) => view.instanceType === 'large')?.instanceId];
    expect(first.pool.countByState().idle).toBe(3);
    first.pool.setIdleBehavior(ids[0]!, 'hold');
    first.pool.setIdleBehavior(ids[2]!, 'drain');
    await settle();
    expect(first.pool.instance(ids[2]!)?.state).toBe('shutdown');
    first.pool.stop();
    expect(stub.getVm(ids[0]!)?.tags[tagKeys.idleBehavior]).toBe('hold');

    const second = new PoolHarness(stub, { probeInterval: 5_000 });
    await second.start();
    const views = second.pool.instances();
    expect(views.map((view) => view.instanceId).sort()).toEqual(stub.liveInstances().filter((i) => i.id !== orphan.id).map((i) => i.id).sort());
    expect(second.pool.instance(ids[0]!)?.idleBehavior).toBe('hold');
    expect(second.pool.instance(ids[1]!)?.idleBehavior).toBe('run');
    expect(second.pool.orphans().map((instance) => instance.id)).toEqual([orphan.id]);
    expect(views.some((view) => view.instanceId === orphan.id)).toBe(false);
    expect(second.pool.unallocated()).toEqual({ small: 1 });

    await advance(120_000);
    expect(second.pool.instance(ids[0]!)?.state).toBe('idle');
    expect(second.pool.instance(ids[1]!)).toBeUndefined();
    expect(stub.getVm(orphan.id)).toBeDefined();
    expect(second.logsWith("orphan instance: it has this pool's tag but an instance type this config does not define; it is not counted or used. Destroy it or add its type to the config")).toHaveLength(1);
    second.pool.stop();
  });
});

describe('boot failures', () => {
  it('destroys at timeoutBooting the VMs that never pass the boot probe', async () => {
    const stub = createStub({ neverBootFraction: 1 });
    const h = new PoolHarness(stub, { timeoutBooting: 600_000, probeInterval: 10_000 });
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await settle();
    const [view] = h.pool.instances();
    await advance(599_000);
    expect(h.pool.instance(view!.instanceId!)?.state).toBe('booting');
    expect(stub.callCounts.destroy).toBe(0);
    await advance(1_000);
    expect(stub.callCounts.destroy).toBe(1);
    expect(stub.liveCount()).toBe(0);
    const states = h.logsWith('instance state changed').map((line) => line.to);
    expect(states).toEqual(['creating', 'booting', 'shutdown']);
    expect(h.logsWith('instance state changed').at(-1)).toMatchObject({ instanceId: view!.instanceId, instanceType: 'small' });
    h.pool.stop();
  });
});

describe('scale', () => {
  it('10,000 instances listed at once all become workers', async () => {
    const stub = createStub();
    for (let i = 0; i < 10_000; i++) stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const h = new PoolHarness(stub, { probeInterval: 600_000 });
    h.logs.length = 0;
    await h.start();
    expect(h.pool.instances()).toHaveLength(10_000);
    expect(h.pool.countByState().unknown).toBe(10_000);
    h.pool.stop();
  });
});
