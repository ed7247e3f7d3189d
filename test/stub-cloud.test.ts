// Tests of the stub cloud: every fault knob, held operations, and the simulated SSH sessions.

import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../src/clock.js';
import type { CloudInstance } from '../src/cloud/driver.js';
import { CapacityError, CloudError, QuotaError, RateLimitError } from '../src/cloud/errors.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { cloudFromConfig, stubDriverNotice } from '../src/cloud/from-config.js';
import { loadConfig } from '../src/config/load.js';
import type { StubFaults } from '../src/cloud/stub/faults.js';
import type { CommandResult, Executor } from '../src/ssh/executor.js';
import { instanceTypeFixture } from './support/fixtures.js';

const bootProbeCommand = 'test -e /run/drover-ready';
const runnerCommand = 'drover-runner';

const small = instanceTypeFixture('small');
const large = instanceTypeFixture('large');
const poolTags = { 'drover-pool': 'p1' };

function makeCloud(faults: Partial<StubFaults> = {}): StubCloud {
  return new StubCloud({ clock: systemClock, faults, bootProbeCommand, runnerCommand });
}

function ssh(cloud: StubCloud, instance: CloudInstance): Executor {
  return cloud.executorFor({ id: instance.id, address: instance.address ?? '', port: instance.port ?? 22 });
}

interface Tracked {
  result?: CommandResult;
  error?: unknown;
}

/** Records how `pending` settles, so a test can look without awaiting it. */
function track(pending: Promise<CommandResult>): Tracked {
  const state: Tracked = {};
  void pending.then(
    (result) => (state.result = result),
    (error: unknown) => (state.error = error),
  );
  return state;
}

// Lets queued promise callbacks run without moving virtual time.
async function flush(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});

afterEach(() => {
  vi.useRealTimers();
});

describe('create', () => {
  it('makes instances with unique ids and addresses, copied tags and the provider type', async () => {
    const cloud = makeCloud();
    const tags = { ...poolTags, extra: 'x' };
    const a = await cloud.create({ instanceType: small, tags });
    const b = await cloud.create({ instanceType: large, tags: poolTags });
    expect(a).toMatchObject({ providerType: 'prov.small', port: 22, tags });
    expect(b.providerType).toBe('prov.large');
    expect(a.id).toMatch(/^stub-\d+$/);
    expect(a.address).toMatch(/^10\.\d+\.\d+\.\d+$/);
    expect(a.id).not.toBe(b.id);
    expect(a.address).not.toBe(b.address);
    tags.extra = 'changed';
    expect(cloud.getVm(a.id)?.tags.extra).toBe('x');
    expect(cloud.callCounts.create).toBe(2);
  });

  it('refuses beyond quotaMaxInstances with a QuotaError', async () => {
    const cloud = makeCloud({ quotaMaxInstances: 2 });
    await cloud.create({ instanceType: small, tags: poolTags });
    await cloud.create({ instanceType: small, tags: poolTags });
    await expect(cloud.create({ instanceType: small, tags: poolTags })).rejects.toBeInstanceOf(QuotaError);
    expect(cloud.liveCount()).toBe(2);
    expect(cloud.callCounts.create).toBe(3);

    const [first] = cloud.liveInstances();
    await cloud.destroy(first?.id ?? '');
    await expect(cloud.create({ instanceType: small, tags: poolTags })).resolves.toBeDefined();
  });

  it('rate-limits creates with a RateLimitError whose retryAt is when a retry succeeds', async () => {
    const cloud = makeCloud({ minCreateIntervalMs: 1_000 });
    const start = Date.now();
    await cloud.create({ instanceType: small, tags: poolTags });
    await vi.advanceTimersByTimeAsync(400);
    const error: unknown = await cloud.create({ instanceType: small, tags: poolTags }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitError);
    expect((error as RateLimitError).retryAt).toBe(start + 1_000);

    await vi.advanceTimersByTimeAsync(599);
    await expect(cloud.create({ instanceType: small, tags: poolTags })).rejects.toBeInstanceOf(RateLimitError);
    await vi.advanceTimersByTimeAsync(1);
    await expect(cloud.create({ instanceType: small, tags: poolTags })).resolves.toBeDefined();
    expect(cloud.liveCount()).toBe(2);
  });

  it('gives a CapacityError naming the type for listed types, and a zone-wide one for *', async () => {
    const cloud = makeCloud({ capacityErrorTypes: ['small'] });
    const error: unknown = await cloud.create({ instanceType: small, tags: poolTags }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CapacityError);
    expect((error as CapacityError).instanceType).toBe('small');
    await expect(cloud.create({ instanceType: large, tags: poolTags })).resolves.toBeDefined();

    cloud.faults.capacityErrorTypes = ['*'];
    const zoneWide: unknown = await cloud.create({ instanceType: large, tags: poolTags }).catch((e: unknown) => e);
    expect(zoneWide).toBeInstanceOf(CapacityError);
    expect((zoneWide as CapacityError).instanceType).toBeUndefined();
    expect(cloud.liveCount()).toBe(1);
  });

  it('fails every create with a plain CloudError at createErrorRate 1 and none at 0', async () => {
    const cloud = makeCloud({ createErrorRate: 1 });
    const error: unknown = await cloud.create({ instanceType: small, tags: poolTags }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CloudError);
    expect((error as CloudError).kind).toBe('other');
    expect(cloud.liveCount()).toBe(0);

    cloud.faults.createErrorRate = 0;
    for (let i = 0; i < 20; i++) await cloud.create({ instanceType: small, tags: poolTags });
    expect(cloud.liveCount()).toBe(20);
  });

  it('fails roughly createErrorRate of creates, repeatably for one seed', async () => {
    async function failures(seed: number): Promise<boolean[]> {
      const cloud = makeCloud({ createErrorRate: 0.5, seed });
      const outcomes: boolean[] = [];
      for (let i = 0; i < 200; i++) {
        outcomes.push(await cloud.create({ instanceType: small, tags: poolTags }).then(() => false, () => true));
      }
      return outcomes;
    }
    const first = await failures(7);
    expect(await failures(7)).toEqual(first);
    const failed = first.filter(Boolean).length;
    expect(failed).toBeGreaterThan(60);
    expect(failed).toBeLessThan(140);
  });
});

describe('destroy and setTags', () => {
  it('fails destroys at destroyErrorRate 1, leaving the VM, and succeeds at 0', async () => {
    const cloud = makeCloud({ destroyErrorRate: 1 });
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    await expect(cloud.destroy(vm.id)).rejects.toBeInstanceOf(CloudError);
    expect(cloud.liveCount()).toBe(1);

    cloud.faults.destroyErrorRate = 0;
    await cloud.destroy(vm.id);
    expect(cloud.liveCount()).toBe(0);
    expect(cloud.getVm(vm.id)).toBeUndefined();
  });

  it('treats destroying an unknown or already destroyed id as success', async () => {
    const cloud = makeCloud();
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    await cloud.destroy(vm.id);
    await expect(cloud.destroy(vm.id)).resolves.toBeUndefined();
    await expect(cloud.destroy('stub-999')).resolves.toBeUndefined();
  });

  it('merges tags and names the id when it does not exist', async () => {
    const cloud = makeCloud();
    const vm = await cloud.create({ instanceType: small, tags: { ...poolTags, a: '1' } });
    await cloud.setTags(vm.id, { a: '2', b: '3' });
    expect(cloud.getVm(vm.id)?.tags).toEqual({ ...poolTags, a: '2', b: '3' });
    await expect(cloud.setTags('stub-999', { a: '1' })).rejects.toThrow(/stub-999/);
    await expect(cloud.setTags('stub-999', { a: '1' })).rejects.toBeInstanceOf(CloudError);
  });
});

describe('list', () => {
  it('returns only instances whose tags include every filter entry', async () => {
    const cloud = makeCloud();
    const a = await cloud.create({ instanceType: small, tags: { ...poolTags, role: 'x' } });
    const b = await cloud.create({ instanceType: small, tags: { ...poolTags, role: 'y' } });
    await cloud.create({ instanceType: small, tags: { 'drover-pool': 'p2', role: 'x' } });
    expect((await cloud.list(poolTags)).map((i) => i.id)).toEqual([a.id, b.id]);
    expect((await cloud.list({ ...poolTags, role: 'x' })).map((i) => i.id)).toEqual([a.id]);
    expect(await cloud.list({ missing: 'tag' })).toEqual([]);
    expect(await cloud.list({})).toHaveLength(3);
  });

  it('returns copies the caller cannot use to change the cloud', async () => {
    const cloud = makeCloud();
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    const [listed] = await cloud.list({});
    (listed?.tags as Record<string, string>)['drover-pool'] = 'other';
    expect(cloud.getVm(vm.id)?.tags['drover-pool']).toBe('p1');
  });

  it('fails every listing with failListings and with listFailureRate 1', async () => {
    const cloud = makeCloud({ failListings: true });
    await cloud.create({ instanceType: small, tags: poolTags });
    await expect(cloud.list(poolTags)).rejects.toThrow(new CloudError('listing failed'));
    cloud.faults.failListings = false;
    cloud.faults.listFailureRate = 1;
    await expect(cloud.list(poolTags)).rejects.toThrow('listing failed');
    cloud.faults.listFailureRate = 0;
    await expect(cloud.list(poolTags)).resolves.toHaveLength(1);
  });

  it('omits every instance at listOmitRate 1 without removing them', async () => {
    const cloud = makeCloud({ listOmitRate: 1 });
    await cloud.create({ instanceType: small, tags: poolTags });
    await cloud.create({ instanceType: small, tags: poolTags });
    expect(await cloud.list(poolTags)).toEqual([]);
    expect(cloud.liveCount()).toBe(2);
    cloud.faults.listOmitRate = 0;
    expect(await cloud.list(poolTags)).toHaveLength(2);
  });

  it('rate-limits listings with a RateLimitError whose retryAt is when a retry succeeds', async () => {
    const cloud = makeCloud({ minListIntervalMs: 500 });
    const start = Date.now();
    await cloud.list({});
    const error: unknown = await cloud.list({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitError);
    expect((error as RateLimitError).retryAt).toBe(start + 500);
    await vi.advanceTimersByTimeAsync(499);
    await expect(cloud.list({})).rejects.toBeInstanceOf(RateLimitError);
    await vi.advanceTimersByTimeAsync(1);
    await expect(cloud.list({})).resolves.toEqual([]);
    // Creates have their own limit.
    await expect(cloud.create({ instanceType: small, tags: poolTags })).resolves.toBeDefined();
    expect(cloud.callCounts.list).toBe(4);
  });

  it('lists 10,000 instances correctly', async () => {
    const cloud = makeCloud();
    for (let i = 0; i < 10_000; i++) {
      cloud.addInstance({ instanceType: small, tags: { 'drover-pool': i % 2 === 0 ? 'even' : 'odd' } });
    }
    const even = await cloud.list({ 'drover-pool': 'even' });
    expect(even).toHaveLength(5_000);
    expect(new Set(even.map((i) => i.id)).size).toBe(5_000);
    expect(new Set(cloud.liveInstances().map((i) => i.address)).size).toBe(10_000);
    expect(await cloud.list({})).toHaveLength(10_000);
  });
});

describe('VM lifecycle', () => {
  it('passes the boot probe only after the boot delay', async () => {
    const cloud = makeCloud({ bootDelayMs: { min: 3_000, max: 3_000 } });
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    const session = ssh(cloud, vm);
    expect(await session.run(bootProbeCommand)).toEqual({ stdout: '', stderr: 'not booted', exitCode: 1 });
    await vi.advanceTimersByTimeAsync(2_999);
    expect((await session.run(bootProbeCommand)).exitCode).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await session.run(bootProbeCommand)).toEqual({ stdout: '', stderr: '', exitCode: 0 });
  });

  it('draws boot delays within [min, max]', async () => {
    const cloud = makeCloud({ bootDelayMs: { min: 1_000, max: 2_000 } });
    const now = Date.now();
    for (let i = 0; i < 50; i++) await cloud.create({ instanceType: small, tags: poolTags });
    const delays = cloud.liveInstances().map((i) => (cloud.getVm(i.id)?.bootAt ?? NaN) - now);
    for (const delay of delays) {
      expect(delay).toBeGreaterThanOrEqual(1_000);
      expect(delay).toBeLessThanOrEqual(2_000);
    }
    expect(new Set(delays).size).toBeGreaterThan(1);
  });

  it('never boots a VM drawn into neverBootFraction 1', async () => {
    const cloud = makeCloud({ neverBootFraction: 1, bootDelayMs: { min: 10, max: 10 } });
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    await vi.advanceTimersByTimeAsync(24 * 3600_000);
    expect((await ssh(cloud, vm).run(bootProbeCommand)).exitCode).toBe(1);
  });

  it('makes VMs drawn into vanishFraction disappear vanishAfterMs after creation', async () => {
    const cloud = makeCloud({ vanishFraction: 1, vanishAfterMs: 60_000 });
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    cloud.faults.vanishFraction = 0;
    const stays = await cloud.create({ instanceType: small, tags: poolTags });
    await vi.advanceTimersByTimeAsync(59_999);
    expect(cloud.liveCount()).toBe(2);
    expect(await ssh(cloud, vm).run(bootProbeCommand)).toMatchObject({ exitCode: 0 });

    await vi.advanceTimersByTimeAsync(1);
    expect(cloud.liveCount()).toBe(1);
    expect((await cloud.list(poolTags)).map((i) => i.id)).toEqual([stays.id]);
    expect(cloud.getVm(vm.id)).toBeUndefined();
    await expect(ssh(cloud, vm).run(bootProbeCommand)).rejects.toThrow(`ssh: connect ECONNREFUSED ${vm.address}`);
  });

  it('lets a test vanish a VM at once', async () => {
    const cloud = makeCloud();
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    cloud.vanish(vm.id);
    expect(await cloud.list({})).toEqual([]);
  });

  it('records the peak number of live instances', async () => {
    const cloud = makeCloud();
    const a = await cloud.create({ instanceType: small, tags: poolTags });
    const b = await cloud.create({ instanceType: small, tags: poolTags });
    await cloud.destroy(a.id);
    await cloud.destroy(b.id);
    await cloud.create({ instanceType: small, tags: poolTags });
    expect(cloud.liveCount()).toBe(1);
    expect(cloud.peakLiveCount).toBe(2);
    cloud.addInstance({ instanceType: small, tags: poolTags });
    cloud.addInstance({ instanceType: small, tags: poolTags });
    expect(cloud.peakLiveCount).toBe(3);
  });

  it('adds pre-existing instances without checks, booted unless told otherwise', async () => {
    const cloud = makeCloud({ quotaMaxInstances: 0, createErrorRate: 1, bootDelayMs: { min: 100, max: 100 } });
    const booted = cloud.addInstance({ instanceType: small, tags: poolTags });
    const booting = cloud.addInstance({ instanceType: small, tags: poolTags, booted: false });
    expect(cloud.liveCount()).toBe(2);
    expect((await ssh(cloud, booted).run(bootProbeCommand)).exitCode).toBe(0);
    expect((await ssh(cloud, booting).run(bootProbeCommand)).exitCode).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    expect((await ssh(cloud, booting).run(bootProbeCommand)).exitCode).toBe(0);
    expect(cloud.callCounts.create).toBe(0);
  });
});

describe('held operations', () => {
  it('makes a held create listable at once and answers it only on release', async () => {
    const cloud = makeCloud();
    cloud.holdCloudOps(['create']);
    let created: CloudInstance | undefined;
    const pending = cloud.create({ instanceType: small, tags: poolTags }).then((i) => (created = i));
    await flush();
    expect(created).toBeUndefined();
    expect(cloud.pendingOps('create')).toBe(1);
    expect(cloud.pendingOps()).toBe(1);
    const listed = await cloud.list(poolTags);
    expect(listed).toHaveLength(1);

    cloud.releaseCloudOps(['create']);
    await pending;
    expect(created?.id).toBe(listed[0]?.id);
    expect(cloud.pendingOps()).toBe(0);
  });

  it('withholds a held create error until release', async () => {
    const cloud = makeCloud({ quotaMaxInstances: 0 });
    cloud.holdCloudOps();
    let settled = false;
    const pending = cloud.create({ instanceType: small, tags: poolTags }).finally(() => (settled = true));
    pending.catch(() => undefined);
    await flush();
    expect(settled).toBe(false);
    cloud.releaseCloudOps();
    await expect(pending).rejects.toBeInstanceOf(QuotaError);
  });

  it('computes a held list at release time', async () => {
    const cloud = makeCloud();
    cloud.holdCloudOps(['list']);
    let answer: CloudInstance[] | undefined;
    const pending = cloud.list(poolTags).then((r) => (answer = r));
    await flush();
    expect(answer).toBeUndefined();
    expect(cloud.pendingOps('list')).toBe(1);
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    cloud.releaseCloudOps();
    await pending;
    expect(answer?.map((i) => i.id)).toEqual([vm.id]);
  });

  it('removes the VM of a held destroy only at release', async () => {
    const cloud = makeCloud();
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    cloud.holdCloudOps(['destroy']);
    let done = false;
    const pending = cloud.destroy(vm.id).then(() => (done = true));
    await flush();
    expect(done).toBe(false);
    expect(cloud.liveCount()).toBe(1);
    expect(cloud.pendingOps('destroy')).toBe(1);
    expect(cloud.pendingOps('create')).toBe(0);

    // Releasing another op leaves the destroy held.
    cloud.releaseCloudOps(['create', 'list']);
    await flush();
    expect(done).toBe(false);

    cloud.releaseCloudOps(['destroy']);
    await pending;
    expect(cloud.liveCount()).toBe(0);
  });

  it('stops holding after release', async () => {
    const cloud = makeCloud();
    cloud.holdCloudOps();
    cloud.releaseCloudOps();
    await expect(cloud.list({})).resolves.toEqual([]);
    expect(cloud.pendingOps()).toBe(0);
  });
});

describe('simulated SSH', () => {
  it('lists the runner containers sorted by uuid, one line each', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({
      instanceType: small,
      tags: poolTags,
      containers: {
        'c-uuid': { state: 'running' },
        'a-uuid': { state: 'exited', exitCode: 3 },
        'b-uuid': { state: 'exited', exitCode: 0 },
      },
    });
    const session = ssh(cloud, vm);
    expect(await session.run(`${runnerCommand} list`)).toEqual({
      stdout: 'a-uuid exited 3\nb-uuid exited 0\nc-uuid running\n',
      stderr: '',
      exitCode: 0,
    });
    cloud.setContainers(vm.id, {});
    expect((await session.run(`${runnerCommand} list`)).stdout).toBe('');
  });

  it('answers anything else with exit 127', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    expect(await ssh(cloud, vm).run('rm -rf /')).toEqual({ stdout: '', stderr: 'command not found', exitCode: 127 });
    expect(cloud.sshCommandCount).toBe(1);
  });

  it('drops every command at sshDropRate 1', async () => {
    const cloud = makeCloud({ sshDropRate: 1 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    const session = ssh(cloud, vm);
    await expect(session.run(bootProbeCommand)).rejects.toThrow('ssh: connection dropped');
    cloud.faults.sshDropRate = 0;
    await expect(session.run(bootProbeCommand)).resolves.toMatchObject({ exitCode: 0 });
  });

  it('refuses connections to a destroyed VM, and runs on a closed session', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    const other = cloud.addInstance({ instanceType: small, tags: poolTags });
    await cloud.destroy(vm.id);
    await expect(ssh(cloud, vm).run(bootProbeCommand)).rejects.toThrow(`ECONNREFUSED ${vm.address}`);

    const session = ssh(cloud, other);
    session.setTarget({ id: other.id, address: '192.0.2.1', port: 22 });
    await expect(session.run(bootProbeCommand)).resolves.toMatchObject({ exitCode: 0 });
    session.close();
    await expect(session.run(bootProbeCommand)).rejects.toThrow();
  });

  it('answers asynchronously', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    let answered = false;
    const pending = ssh(cloud, vm)
      .run(bootProbeCommand)
      .then(() => (answered = true));
    expect(answered).toBe(false);
    await pending;
    expect(answered).toBe(true);
  });
});

describe('simulated runner wait and start', () => {
  const wait = (seconds: number, ...known: string[]): string => [runnerCommand, 'wait', seconds, ...known].join(' ');

  it('answers a wait at the endsAt of a container, not before, with what list answers', async () => {
    const cloud = makeCloud({ containerRunMs: 5_000 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags, containers: { old: { state: 'exited', exitCode: 1 } } });
    const session = ssh(cloud, vm);
    expect((await session.run(`${runnerCommand} start 'c1' -- 'true'`)).exitCode).toBe(0);

    const waiting = track(session.run(wait(60, 'old')));
    await vi.advanceTimersByTimeAsync(4_999);
    expect(waiting).toEqual({});
    expect(cloud.pendingWaits(vm.id)).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.result).toEqual({ stdout: 'c1 exited 0\nold exited 1\n', stderr: '', exitCode: 0 });
    expect(waiting.result).toEqual(await session.run(`${runnerCommand} list`));
    // Settled waits leave no timer and no record behind.
    expect(cloud.pendingWaits()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('answers at once when a container the caller does not know of has already exited', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({
      instanceType: small,
      tags: poolTags,
      containers: { a: { state: 'exited', exitCode: 3 }, b: { state: 'running' } },
    });
    const session = ssh(cloud, vm);
    const waiting = track(session.run(wait(60)));
    await flush();
    expect(waiting.result?.stdout).toBe('a exited 3\nb running\n');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('times out after SECONDS when only known containers have exited, and answers 0 at once', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({
      instanceType: small,
      tags: poolTags,
      containers: { a: { state: 'exited', exitCode: 3 }, b: { state: 'running' } },
    });
    const session = ssh(cloud, vm);
    const waiting = track(session.run(wait(2, 'a', 'never-here')));
    await vi.advanceTimersByTimeAsync(1_999);
    expect(waiting).toEqual({});
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.result).toEqual({ stdout: 'a exited 3\nb running\n', stderr: '', exitCode: 0 });
    expect(vi.getTimerCount()).toBe(0);

    expect((await session.run(wait(0, 'a'))).stdout).toBe('a exited 3\nb running\n');
    expect((await session.run(`${runnerCommand} wait`)).exitCode).toBe(2);
    expect((await session.run(`${runnerCommand} wait -1`)).exitCode).toBe(2);
  });

  it('wakes a wait when another session kills a container or one starts and ends at once', async () => {
    const cloud = makeCloud({ containerRunMs: 60_000 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags, containers: { c1: { state: 'running' } } });
    const waiting = track(ssh(cloud, vm).run(wait(30)));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(waiting).toEqual({});
    expect((await ssh(cloud, vm).run(`${runnerCommand} kill TERM 'c1'`)).exitCode).toBe(0);
    await flush();
    expect(waiting.result?.stdout).toBe('c1 exited 143\n');

    // A wait for anything but c1; a container started with containerRunMs 0 ends before any list.
    const next = track(ssh(cloud, vm).run(wait(30, 'c1')));
    await flush();
    expect(next).toEqual({});
    cloud.faults.containerRunMs = 0;
    expect((await ssh(cloud, vm).run(`${runnerCommand} start 'c2' -- 'true'`)).exitCode).toBe(0);
    await flush();
    expect(next.result?.stdout).toBe('c1 exited 143\nc2 exited 0\n');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('wakes for a container started during the wait whose end comes before SECONDS', async () => {
    const cloud = makeCloud({ containerRunMs: 3_000 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    const waiting = track(ssh(cloud, vm).run(wait(60)));
    await vi.advanceTimersByTimeAsync(1_000);
    await ssh(cloud, vm).run(`${runnerCommand} start 'late' -- 'true'`);
    await vi.advanceTimersByTimeAsync(2_999);
    expect(waiting).toEqual({});
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.result?.stdout).toBe('late exited 0\n');
  });

  it('drops a wait at vanishAt, not later, even with a container ending at that moment', async () => {
    const cloud = makeCloud({ vanishFraction: 1, vanishAfterMs: 10_000, containerRunMs: 10_000 });
    const vm = await cloud.create({ instanceType: small, tags: poolTags });
    const session = ssh(cloud, vm);
    await session.run(`${runnerCommand} start 'c1' -- 'true'`);
    const waiting = track(session.run(wait(60)));
    await vi.advanceTimersByTimeAsync(9_999);
    expect(waiting).toEqual({});
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.error).toEqual(new Error('ssh: connection dropped'));
    expect(cloud.pendingWaits()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('drops a wait at once when its VM vanishes or is destroyed, or its executor is closed', async () => {
    const cloud = makeCloud();
    const running = { c1: { state: 'running' } } as const;
    const a = cloud.addInstance({ instanceType: small, tags: poolTags, containers: running });
    const b = cloud.addInstance({ instanceType: small, tags: poolTags, containers: running });
    const c = cloud.addInstance({ instanceType: small, tags: poolTags, containers: running });
    const closing = ssh(cloud, c);
    const waits = [track(ssh(cloud, a).run(wait(60))), track(ssh(cloud, b).run(wait(60))), track(closing.run(wait(60)))];
    await flush();
    expect(cloud.pendingWaits()).toBe(3);

    cloud.vanish(a.id);
    await cloud.destroy(b.id);
    closing.close();
    await flush();
    expect(waits.map((w) => w.error)).toEqual([
      new Error('ssh: connection dropped'),
      new Error('ssh: connection dropped'),
      new Error('ssh: executor closed'),
    ]);
    expect(cloud.pendingWaits()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('wakes a wait when a test replaces the containers', async () => {
    const cloud = makeCloud();
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags, containers: { c1: { state: 'running' } } });
    const waiting = track(ssh(cloud, vm).run(wait(60)));
    await flush();
    cloud.setContainers(vm.id, { c1: { state: 'exited', exitCode: 9 } });
    await flush();
    expect(waiting.result?.stdout).toBe('c1 exited 9\n');
  });

  it('answers every start with startExitCode when set, starting nothing', async () => {
    const cloud = makeCloud({ startExitCode: 1 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    const session = ssh(cloud, vm);
    const refused = await session.run(`${runnerCommand} start 'c1' -- 'true'`);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('startExitCode');
    cloud.faults.startExitCode = 5;
    expect((await session.run(`${runnerCommand} start 'c1' -- 'true'`)).exitCode).toBe(5);
    expect((await session.run(`${runnerCommand} list`)).stdout).toBe('');

    cloud.faults.startExitCode = null;
    expect((await session.run(`${runnerCommand} start 'c1' -- 'true'`)).exitCode).toBe(0);
    expect((await session.run(`${runnerCommand} start 'c1' -- 'true'`)).exitCode).toBe(3);
  });

  it('ends containers at once at containerRunMs 0', async () => {
    const cloud = makeCloud({ containerRunMs: 0 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    const session = ssh(cloud, vm);
    await session.run(`${runnerCommand} start 'c1' -- 'true'`);
    expect((await session.run(`${runnerCommand} list`)).stdout).toBe('c1 exited 0\n');
  });
});

describe('nothing runs on the stub, and it says so', () => {
  it("a container's output is one line saying nothing ran, cut like the runner's", async () => {
    const cloud = makeCloud({ containerRunMs: 0 });
    const vm = cloud.addInstance({ instanceType: small, tags: poolTags });
    const session = ssh(cloud, vm);
    await session.run(`${runnerCommand} start 'c1' -- 'make' 'results'`);
    const whole = '[stub cloud: nothing ran; this is simulated output for c1]\n';
    expect(await session.run(`${runnerCommand} logs 'c1'`)).toEqual({ stdout: whole, stderr: '', exitCode: 0 });
    expect((await session.run(`${runnerCommand} logs 'c1' 10`)).stdout).toMatch(/ were dropped, the last 10 kept\]\nt for c1]\n$/);
  });

  it('warns once when the stub driver is built', async () => {
    const warnings: unknown[][] = [];
    const cloud = await cloudFromConfig(loadConfig('config/stub.yml'), systemClock, new Registry(), {
      logger: { warn: (...args: unknown[]) => warnings.push(args) },
    });
    await cloud.close();
    expect(warnings).toEqual([[{ driver: 'stub' }, stubDriverNotice]]);
    expect(stubDriverNotice).toMatch(/simulated; nothing runs/);
  });
});
