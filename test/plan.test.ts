// The scheduling pass as a pure function: order, reservations, limits and surplus.
import { describe, expect, it } from 'vitest';
import type { Container } from '../src/queue/types.js';
import { plan, type PoolPicture } from '../src/scheduler/plan.js';
import { instanceTypes } from './support/pool-harness.js';

let clock = 0;
function container(overrides: Partial<Container> = {}): Container {
  clock++;
  return {
    uuid: `c-${clock}`,
    image: null,
    command: ['true'],
    env: {},
    constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
    state: 'queued',
    attempts: 0,
    exitCode: null,
    instanceId: null,
    instanceType: null,
    logTail: '',
    reason: null,
    submittedAt: clock,
    startedAt: null,
    finishedAt: null,
    updatedAt: clock,
    ...overrides,
  };
}

function pool(overrides: Partial<PoolPicture> = {}): PoolPicture {
  return { idle: {}, unallocated: {}, booting: {}, instances: 0, hourlySpend: 0, atQuota: false, createRefusal: () => null, ...overrides };
}

const limits = { maxInstances: 10, maxConcurrentContainers: null, maxHourlySpend: null };
const big = { vcpus: 8, ramMiB: 8192, scratchGiB: 0, gpus: 0, preemptible: false };

describe('scheduling pass', () => {
  it('starts on idle workers, waits for booting ones, creates only for the rest', () => {
    const queued = [container(), container(), container()];
    const result = plan(queued, instanceTypes, pool({ idle: { small: 1 }, unallocated: { small: 2 }, booting: { small: 1 }, instances: 2 }), limits);
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: queued[0]!.uuid, instanceType: 'small' },
      { kind: 'create', instanceType: 'small', forUuid: queued[2]!.uuid },
    ]);
    expect(result.shutdowns).toEqual([]);
  });

  it('picks the cheapest type that fits and fails what nothing fits', () => {
    const large = container({ constraints: big });
    const huge = container({ constraints: { ...big, vcpus: 64 } });
    const result = plan([large, huge], instanceTypes, pool(), limits);
    expect(result.decisions[0]).toEqual({ kind: 'create', instanceType: 'large', forUuid: large.uuid });
    expect(result.decisions[1]).toMatchObject({ kind: 'fail', uuid: huge.uuid });
  });

  it('counts running and locked containers against maxConcurrentContainers and keeps priority order', () => {
    const running = container({ state: 'running' });
    const high = container({ priority: 5 });
    const low = container({ priority: 1 });
    const result = plan([running, high, low], instanceTypes, pool({ idle: { small: 2 }, unallocated: { small: 2 }, instances: 3 }), {
      ...limits,
      maxConcurrentContainers: 2,
    });
    expect(result.decisions).toEqual([{ kind: 'start', uuid: high.uuid, instanceType: 'small' }]);
    expect(result.boundBy).toBe('maxConcurrentContainers');
  });

  it('when maxInstances binds, lower-priority work does not overtake and idle surplus makes room', () => {
    const high = container({ constraints: big, priority: 9 });
    const low = container({ priority: 1 });
    const result = plan([high, low], instanceTypes, pool({ idle: { small: 1 }, unallocated: { small: 1 }, instances: 1 }), { ...limits, maxInstances: 1 });
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('maxInstances');
    // The idle small worker would let the low-priority container overtake: it goes, to make room.
    expect(result.shutdowns).toEqual([{ instanceType: 'small', state: 'idle' }]);

    const alone = plan([high], instanceTypes, pool({ idle: { small: 1 }, unallocated: { small: 1 }, instances: 1 }), { ...limits, maxInstances: 1 });
    expect(alone.shutdowns).toEqual([{ instanceType: 'small', state: 'idle' }]);
  });

  it('respects maxHourlySpend, counting instances being created', () => {
    const result = plan([container(), container()], instanceTypes, pool({ instances: 1, hourlySpend: 0.1 }), { ...limits, maxHourlySpend: 0.16 });
    expect(result.decisions.filter((decision) => decision.kind === 'create')).toHaveLength(1);
    expect(result.boundBy).toBe('maxHourlySpend');
  });

  it('stops at a create the pool refuses (quota, throttle)', () => {
    const result = plan([container()], instanceTypes, pool({ createRefusal: () => 'at quota' }), limits);
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('at quota');
  });

  it('shuts down booting workers nothing needs, but leaves idle ones to timeoutIdle', () => {
    const result = plan([], instanceTypes, pool({ idle: { small: 2 }, unallocated: { small: 3, large: 1 }, booting: { small: 1, large: 1 }, instances: 4 }), limits);
    expect(result.shutdowns).toEqual([
      { instanceType: 'small', state: 'booting' },
      { instanceType: 'large', state: 'booting' },
    ]);
  });

  it('a create in flight binds creates but frees nothing: idle workers of other types stay, and still take their work', () => {
    const waitingForCreate = container({ constraints: big, priority: 9 });
    const fitsIdle = container({ priority: 1 });
    const result = plan([waitingForCreate, fitsIdle], instanceTypes, pool({
      idle: { small: 2 },
      unallocated: { small: 2 },
      instances: 2,
      createRefusal: () => '1 create calls in flight (maxConcurrentInstanceCreateOps)',
    }), limits);
    expect(result.decisions).toEqual([{ kind: 'start', uuid: fitsIdle.uuid, instanceType: 'small' }]);
    expect(result.shutdowns).toEqual([]);
  });

  it('at quota, an idle worker nothing waits for is shut down to make room', () => {
    const result = plan([container({ constraints: big })], instanceTypes, pool({ idle: { small: 1 }, unallocated: { small: 1 }, instances: 1, atQuota: true }), limits);
    expect(result.boundBy).toBe('at quota');
    expect(result.shutdowns).toEqual([{ instanceType: 'small', state: 'idle' }]);
  });
});
