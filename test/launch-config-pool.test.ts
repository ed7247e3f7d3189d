// Launch configs inside the pool, on the stub cloud and fake timers: where a capacity error backs
// creates off when the config names no zone, and a trial instance killed before its create
// returned, which must leave the trial still to come.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CapacityError } from '../src/cloud/errors.js';
import type { LaunchConfigSettings } from '../src/config/launch-configs.js';
import { advance, createStub, PoolHarness, settle, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

const minute = 60_000;

function config(id: string, fields: Partial<LaunchConfigSettings> = {}): LaunchConfigSettings {
  return { id, instanceType: 'small', zone: null, region: null, subnet: null, image: null, extra: {}, weight: 1, maxInstances: null, initialState: 'active', ...fields };
}

describe('capacity back-off for a launch config that names no zone', () => {
  it('a capacity error naming the zone the driver chose backs the config off (as GCE errors do)', async () => {
    const stub = createStub();
    const create = stub.create.bind(stub);
    let failing = true;
    stub.create = async (request) => {
      if (failing) throw new CapacityError('ZONE_RESOURCE_POOL_EXHAUSTED', request.instanceType.name, { zone: 'us-central1-a' });
      return create(request);
    };
    const h = new PoolHarness(stub, { quotaErrorTTL: minute }, undefined, [config('plain')]);
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await settle();
    expect(h.pool.create('small')).toBe(false);
    expect(h.pool.createRefusal('small')).toBe('no capacity for small in us-central1-a (ZONE_RESOURCE_POOL_EXHAUSTED)');
    failing = false;
    await advance(minute);
    expect(h.pool.create('small')).toBe(true);
    h.pool.stop();
  });

  it('a config with a subnet and no zone is backed off alone, not its sibling in another subnet', async () => {
    const stub = createStub();
    const create = stub.create.bind(stub);
    stub.create = async (request) => {
      if (request.launchConfig?.subnet === 'subnet-a') throw new CapacityError('InsufficientInstanceCapacity', request.instanceType.name);
      return create(request);
    };
    const h = new PoolHarness(stub, { quotaErrorTTL: minute, maxConcurrentInstanceCreateOps: 10 }, undefined, [
      config('a', { subnet: 'subnet-a' }),
      config('b', { subnet: 'subnet-b' }),
    ]);
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await settle();
    const views = () => Object.fromEntries(h.pool.launchConfigs().map((view) => [view.id, view.refusal]));
    expect(views()).toEqual({ a: 'no capacity for small in subnet subnet-a (InsufficientInstanceCapacity)', b: null });
    expect(h.pool.createRefusal('small')).toBeNull();
    h.pool.stop();
  });
});

describe('a trial instance killed while its create is in flight', () => {
  it('leaves the trial to come: the config allows one create again', async () => {
    const stub = createStub({ neverBootFraction: 1 });
    const h = new PoolHarness(stub, { timeoutBooting: 10 * minute, maxConcurrentInstanceCreateOps: 3 }, undefined, [config('only')]);
    await h.start();
    for (let i = 0; i < 3; i++) expect(h.pool.create('small')).toBe(true);
    await advance(11 * minute);
    expect(h.pool.launchConfigs()[0]).toMatchObject({ state: 'broken' });
    await advance(minute);
    // The trial's create is held in flight while the operator kills it.
    const create = stub.create.bind(stub);
    let release: () => void = () => {};
    stub.create = (request) => new Promise((resolve) => (release = () => resolve(create(request))));
    expect(h.pool.create('small')).toBe(true);
    await settle();
    const trial = h.pool.instances().find((view) => view.state === 'creating')!;
    expect(h.pool.createRefusal('small')).toMatch(/is broken; its trial instance .* is booting/);
    h.pool.shutdown({ instanceId: trial.workerId });
    release();
    await settle();
    expect(h.pool.createRefusal('small')).toBeNull();
    h.pool.stop();
  });
});
