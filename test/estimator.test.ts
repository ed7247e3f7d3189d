// The Taskcluster simple-estimator baseline: creates sized by counts, pending − (existing −
// claimed) − requested; starts and fails as plan() gives them; no booting or idle shutdowns.
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { InstanceType } from '../src/cloud/driver.js';
import type { Container, ContainerQueue } from '../src/queue/types.js';
import { Dispatcher } from '../src/scheduler/dispatcher.js';
import { estimatorCounts, estimatorPlan } from '../src/scheduler/estimator.js';
import { plan } from '../src/scheduler/plan.js';
import type { CreateRefusal, WorkerPool } from '../src/scheduler/worker-pool.js';
import { instanceTypes } from './support/pool-harness.js';
import {
  big,
  coming,
  container,
  creates,
  idle,
  large,
  limits,
  packing,
  packingTypes,
  pool,
  poolWide,
  queued,
  running,
  small,
  starts,
  typeA,
  typeB,
} from './support/plan-fixtures.js';

function runningContainer(workerId: string, type: InstanceType): Container {
  return container({ state: 'running', instanceId: `i-${workerId}`, instanceType: type.name });
}

describe('estimator baseline: how many it creates', () => {
  it('creates pending − (existing − claimed) − requested instances', () => {
    // w0 runs one container (full, so not open), w1 is idle, b1 boots, c1 is being created.
    const busy = runningContainer('w0', small);
    const work = queued(6);
    const picture = pool({ open: [idle('w1', small)], coming: [coming('b1', small), coming('c1', small, 'creating')], instances: 4, hourlySpend: 0.2 });
    expect(estimatorCounts([busy, ...work], picture, limits)).toEqual({ pending: 6, existing: 3, claimed: 1, requested: 1, maxCapacity: 10, desired: 3 });

    const result = estimatorPlan([busy, ...work], instanceTypes, picture, limits);
    // 6 − (3 − 1) − 1 = 3, for the last three (w1 takes the first, b1 and c1 the next two).
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: work[0]!.uuid, workerId: 'w1', instanceType: 'small' },
      { kind: 'create', instanceType: 'small', forUuid: work[3]!.uuid },
      { kind: 'create', instanceType: 'small', forUuid: work[4]!.uuid },
      { kind: 'create', instanceType: 'small', forUuid: work[5]!.uuid },
    ]);
    expect(result.shutdowns).toEqual([]);
    expect(result.boundBy).toBeNull();
    // With one type and one container an instance, the count is plan()'s.
    expect(result.decisions).toEqual(plan([busy, ...work], instanceTypes, picture, limits).decisions);
    expect(result.waits.get(work[1]!.uuid)).toBe('waiting for c1 (not yet booted)');
    expect(result.waits.get(work[2]!.uuid)).toBe('waiting for the boot of b1');
    expect(result.waits.get(work[5]!.uuid)).toBe('waiting for a new small instance');
  });

  it('counts a worker of any type as capacity: fewer creates than plan() when types differ', () => {
    const work = queued(3);
    const picture = pool({ open: [idle('w1', large)], coming: [coming('b1', large)], instances: 2 });
    const baseline = plan(work, instanceTypes, picture, limits);
    // plan() puts no small container on a large worker: three creates.
    expect(creates(baseline.decisions)).toHaveLength(3);

    const result = estimatorPlan(work, instanceTypes, picture, limits);
    // 3 − 2 free − 0 requested: one create, for the highest-priority container plan() created for.
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: work[0]!.uuid }]);
    expect(result.shutdowns).toEqual([]);
    expect(result.waits.get(work[0]!.uuid)).toBe('waiting for a new small instance');
    expect(result.waits.get(work[2]!.uuid)).toMatch(/counted against the pool's free or requested capacity/);
  });

  it("creates the cheapest type that fits each container it creates for, in plan()'s priority order", () => {
    const bigOne = container({ constraints: big, priority: 9 });
    const huge = container({ constraints: { ...big, vcpus: 64 }, priority: 5 });
    const smallOne = container({ priority: 1 });
    const result = estimatorPlan([bigOne, huge, smallOne], instanceTypes, pool(), limits);
    expect(result.decisions).toEqual([
      { kind: 'create', instanceType: 'large', forUuid: bigOne.uuid },
      { kind: 'fail', uuid: huge.uuid, reason: 'no instance type has 64 vCPUs (largest: 8)' },
      { kind: 'create', instanceType: 'small', forUuid: smallOne.uuid },
    ]);
  });

  it('creates nothing when free and requested capacity cover the pending containers', () => {
    const work = queued(2);
    const result = estimatorPlan(work, instanceTypes, pool({ coming: [coming('b1', small), coming('c1', small, 'creating')], instances: 2 }), limits);
    expect(result.decisions).toEqual([]);
    expect(result.shutdowns).toEqual([]);
  });

  it('does not count containers past maxConcurrentContainers as pending', () => {
    const busy = runningContainer('w0', small);
    const work = queued(5);
    const result = estimatorPlan([busy, ...work], instanceTypes, pool({ instances: 1 }), { ...limits, maxConcurrentContainers: 3 });
    expect(result.decisions).toEqual([
      { kind: 'create', instanceType: 'small', forUuid: work[0]!.uuid },
      { kind: 'create', instanceType: 'small', forUuid: work[1]!.uuid },
    ]);
    expect(result.boundBy).toBe('maxConcurrentContainers');
    expect(result.waits.get(work[2]!.uuid)).toBe('at maxConcurrentContainers (3)');
  });
});

describe('estimator baseline: shutdowns', () => {
  it('never shuts a booting worker down when nothing needs it', () => {
    const picture = pool({ open: [idle('w1', small)], coming: [coming('b1', small), coming('b2', large)], instances: 3 });
    const result = estimatorPlan([], instanceTypes, picture, limits);
    expect(result).toMatchObject({ decisions: [], shutdowns: [], boundBy: null, blockedTypes: [], deferredStarts: 0 });
  });

  it('leaves idle workers to their idle timeout even when maxInstances binds (where plan() shuts one down)', () => {
    const high = container({ constraints: big, priority: 9 });
    const picture = pool({ open: [idle('w1', small)], instances: 1 });
    expect(plan([high], instanceTypes, picture, { ...limits, maxInstances: 1 }).shutdowns).toEqual([{ workerId: 'w1', instanceType: 'small', state: 'idle' }]);
    const result = estimatorPlan([high], instanceTypes, picture, { ...limits, maxInstances: 1 });
    expect(result.decisions).toEqual([]);
    expect(result.shutdowns).toEqual([]);
  });
});

describe('estimator baseline: starts', () => {
  it("starts on idle workers exactly as plan() does, first come first served by priority", () => {
    const work = [container({ priority: 9 }), container({ priority: 5 }), container({ priority: 1 })];
    const picture = pool({ open: [idle('w1', small), idle('w2', small)], instances: 2 });
    const result = estimatorPlan(work, instanceTypes, picture, limits);
    expect(starts(result.decisions)).toEqual(starts(plan(work, instanceTypes, picture, limits).decisions));
    expect(starts(result.decisions).map((decision) => decision.uuid)).toEqual([work[0]!.uuid, work[1]!.uuid]);
    expect(creates(result.decisions)).toEqual([{ kind: 'create', instanceType: 'small', forUuid: work[2]!.uuid }]);
  });

  it('maxStartsPerPass: the deferred ones keep their worker and create nothing', () => {
    const work = queued(5);
    const workers = ['w1', 'w2', 'w3', 'w4', 'w5'].map((id) => idle(id, small));
    const result = estimatorPlan(work, instanceTypes, pool({ open: workers, instances: 5 }), { ...limits, maxStartsPerPass: 2 });
    expect(result.decisions.map((decision) => decision.kind)).toEqual(['start', 'start']);
    expect(result.deferredStarts).toBe(3);
  });
});

describe('estimator baseline: limits and refusals', () => {
  it('respects maxInstances: creates up to it, the rest wait at it', () => {
    const work = queued(5);
    const result = estimatorPlan(work, instanceTypes, pool({ coming: [coming('b1', small)], instances: 1 }), { ...limits, maxInstances: 3 });
    // clamp(5 − 1, 0, 3 − 1) − 0 = 2.
    expect(creates(result.decisions).map((decision) => decision.forUuid)).toEqual([work[1]!.uuid, work[2]!.uuid]);
    expect(result.boundBy).toBe('maxInstances');
    expect(result.waits.get(work[4]!.uuid)).toBe('at maxInstances (3)');
    expect(result.waits.get(work[0]!.uuid)).toBe('waiting for the boot of b1');
  });

  it('counts instances the picture holds outside its workers (stopping ones) against maxInstances', () => {
    const work = queued(3);
    const result = estimatorPlan(work, instanceTypes, pool({ instances: 2 }), { ...limits, maxInstances: 3 });
    expect(creates(result.decisions)).toHaveLength(1);
    expect(result.boundBy).toBe('maxInstances');
  });

  it('respects maxHourlySpend, counting instances being created', () => {
    const work = queued(2);
    const result = estimatorPlan(work, instanceTypes, pool({ instances: 1, hourlySpend: 0.1 }), { ...limits, maxHourlySpend: 0.16 });
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: work[0]!.uuid }]);
    expect(result.boundBy).toBe('maxHourlySpend');
  });

  it('a pool-wide refusal stops every create', () => {
    const work = queued(3);
    const asked: string[] = [];
    const createRefusal = (name: string): CreateRefusal => {
      asked.push(name);
      return poolWide('create calls are rate-limited');
    };
    const result = estimatorPlan(work, instanceTypes, pool({ createRefusal }), limits);
    expect(creates(result.decisions)).toEqual([]);
    expect(result.boundBy).toBe('create calls are rate-limited');
    expect(result.waits.get(work[2]!.uuid)).toBe('create calls are rate-limited');
    expect(result.shutdowns).toEqual([]);
  });

  it('a refusal for the type alone skips that type: lower-priority work of another type still gets its create', () => {
    const bigOne = container({ constraints: big, priority: 9 });
    const smallOne = container({ priority: 1 });
    const createRefusal = (name: string): CreateRefusal | null => (name === 'large' ? { reason: 'no capacity for large', scope: 'instanceType' } : null);
    const result = estimatorPlan([bigOne, smallOne], instanceTypes, pool({ createRefusal }), limits);
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: smallOne.uuid }]);
    expect(result.blockedTypes).toEqual(['large']);
    expect(result.waits.get(bigOne.uuid)).toBe('no capacity for large');
    expect(result.boundBy).toBeNull();
  });
});

describe('estimator baseline (packing: capacity in container slots)', () => {
  it('counts maxContainersPerInstance slots an instance, less the containers on running ones', () => {
    const busy = [runningContainer('w1', typeB), runningContainer('w1', typeB), runningContainer('w1', typeB)];
    const work = queued(20);
    const picture = pool({
      open: [running('w1', typeB, 3, { vcpus: 5, ramMiB: 16384 - 768, scratchGiB: 20, gpus: 0 })],
      coming: [coming('b1', typeB), coming('c1', typeB, 'creating')],
      instances: 3,
    });
    // 5 + 8 free, 16 existing (3 claimed), 8 requested: clamp(20 − 13, 0, 512 − 16) − 8 < 0, nothing to create.
    expect(estimatorCounts([...busy, ...work], picture, packing)).toMatchObject({ pending: 20, existing: 16, claimed: 3, requested: 8, maxCapacity: 512, desired: 0 });
    const result = estimatorPlan([...busy, ...work], packingTypes, picture, packing);
    expect(creates(result.decisions)).toEqual([]);
    expect(starts(result.decisions)).toHaveLength(5);
  });

  it("creates one instance of each container's cheapest type per group that fits it (next fit)", () => {
    const work = queued(6);
    const result = estimatorPlan(work, packingTypes, pool({ coming: [coming('b1', typeA)], instances: 1 }), packing);
    // 6 − 8 free slots (b1, an A, counts 8 though it holds two): nothing created.
    expect(creates(result.decisions)).toEqual([]);

    const more = queued(13);
    const grown = estimatorPlan(more, packingTypes, pool({ coming: [coming('b1', typeA)], instances: 1 }), packing);
    // 13 − 8 = 5 slots: the cheapest type that fits one container is A, which holds two of them.
    expect(creates(grown.decisions)).toHaveLength(3);
    expect(creates(grown.decisions).every((decision) => decision.instanceType === 'A')).toBe(true);
    expect(grown.shutdowns).toEqual([]);
  });
});

describe('Dispatcher planner option', () => {
  it('runs the given planner, carrying out its creates', () => {
    const work = queued(3);
    const created: string[] = [];
    const shutdowns: string[] = [];
    const picture = pool({ coming: [coming('b1', large)], instances: 1 });
    const queue = {
      pending: () => work,
      subscribe: () => () => {},
      lockMany: () => [],
      get: () => undefined,
    } as unknown as ContainerQueue;
    const workerPool = {
      subscribe: () => () => {},
      picture: () => picture,
      maxContainersPerInstance: 1,
      create: (name: string) => {
        created.push(name);
        return true;
      },
      startContainer: () => false,
      kill: () => {},
      shutdownSurplus: (workerId: string) => {
        shutdowns.push(workerId);
        return true;
      },
      hasContainer: () => false,
      containers: () => [],
      isGone: () => false,
    } satisfies WorkerPool;
    const dispatcherWith = (planner?: typeof plan) =>
      new Dispatcher({
        queue,
        pool: workerPool,
        instanceTypes,
        settings: { pollInterval: 1_000, maxConcurrentContainers: null, maxHourlySpend: null, maxAttempts: 3, maxStartsPerPass: 500 },
        maxInstances: 10,
        logger: pino({ level: 'silent' }),
        ...(planner && { planner }),
      });
    dispatcherWith(estimatorPlan).runPass();
    // 3 pending − 1 booting: two creates, and the booting large stays.
    expect(created).toEqual(['small', 'small']);
    expect(shutdowns).toEqual([]);

    created.length = 0;
    dispatcherWith().runPass();
    // plan() puts no small container on the booting large one: three creates; it keeps the large too.
    expect(created).toEqual(['small', 'small', 'small']);
    expect(shutdowns).toEqual([]);
  });
});
