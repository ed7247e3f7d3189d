// The scheduling pass as a pure function: order, placement on open and coming workers, packing,
// the instance type a create picks, limits and surplus.
import { describe, expect, it } from 'vitest';
import type { Constraints } from '../src/queue/types.js';
import { plan, type Limits } from '../src/scheduler/plan.js';
import type { CreateRefusal, PoolPicture } from '../src/scheduler/worker-pool.js';
import { instanceTypeFixture } from './support/fixtures.js';
import { instanceTypes } from './support/pool-harness.js';
import {
  big,
  coming,
  container,
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
  typeA,
  typeB,
} from './support/plan-fixtures.js';

/** The pool refuses creates of the named types alone (their capacity back-off); `asked` counts the questions per type. */
function noCapacityFor(...names: string[]): { createRefusal: (name: string) => CreateRefusal | null; asked: Map<string, number> } {
  const asked = new Map<string, number>();
  const createRefusal = (name: string): CreateRefusal | null => {
    asked.set(name, (asked.get(name) ?? 0) + 1);
    return names.includes(name) ? { reason: `no capacity for ${name}`, scope: 'instanceType' } : null;
  };
  return { createRefusal, asked };
}

describe('scheduling pass (one container per instance)', () => {
  it('starts on idle workers, waits for booting ones, creates only for the rest', () => {
    const work = queued(3);
    const result = plan(work, instanceTypes, pool({ open: [idle('w1', small)], coming: [coming('w2', small)], instances: 2 }), limits);
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: work[0]!.uuid, workerId: 'w1', instanceType: 'small' },
      { kind: 'create', instanceType: 'small', forUuid: work[2]!.uuid },
    ]);
    expect(result.shutdowns).toEqual([]);
    expect(result.boundBy).toBeNull();
  });

  it('maxStartsPerPass: starts that many; the rest keep their idle worker and create nothing', () => {
    const work = queued(5);
    const workers = ['w1', 'w2', 'w3', 'w4', 'w5'].map((id) => idle(id, small));
    const result = plan(work, instanceTypes, pool({ open: workers, instances: 5 }), { ...limits, maxStartsPerPass: 2 });
    expect(result.decisions.map((decision) => decision.kind)).toEqual(['start', 'start']);
    expect(result.decisions.map((decision) => (decision.kind === 'start' ? decision.uuid : null))).toEqual([work[0]!.uuid, work[1]!.uuid]);
    expect(result.deferredStarts).toBe(3);
    expect(result.shutdowns).toEqual([]);
  });

  it('picks the cheapest type that fits and fails what nothing fits', () => {
    const largeOne = container({ constraints: big });
    const huge = container({ constraints: { ...big, vcpus: 64 } });
    const result = plan([largeOne, huge], instanceTypes, pool(), limits);
    expect(result.decisions).toEqual([
      { kind: 'create', instanceType: 'large', forUuid: largeOne.uuid },
      { kind: 'fail', uuid: huge.uuid, reason: 'no instance type has 64 vCPUs (largest: 8)' },
    ]);
    expect(result.shutdowns).toEqual([]);
  });

  it('counts running and locked containers against maxConcurrentContainers and keeps priority order', () => {
    const runningOne = container({ state: 'running', instanceId: 'i-w0', instanceType: 'small' });
    const high = container({ priority: 5 });
    const low = container({ priority: 1 });
    const result = plan([runningOne, high, low], instanceTypes, pool({ open: [idle('w1', small), idle('w2', small)], instances: 3 }), {
      ...limits,
      maxConcurrentContainers: 2,
    });
    // Of equally empty workers, the last listed is taken first.
    expect(result.decisions).toEqual([{ kind: 'start', uuid: high.uuid, workerId: 'w2', instanceType: 'small' }]);
    expect(result.boundBy).toBe('maxConcurrentContainers');
    // Idle workers are left to timeoutIdle when only concurrency binds.
    expect(result.shutdowns).toEqual([]);
  });

  it('counts started and waiting containers against maxConcurrentContainers too', () => {
    const locked = container({ state: 'locked', instanceId: 'i-w0', instanceType: 'small' });
    const work = queued(4);
    // One locked, one started on w1, one waiting for booting w2: the limit of 3 is reached.
    const result = plan([locked, ...work], instanceTypes, pool({ open: [idle('w1', small)], coming: [coming('w2', small)], instances: 3 }), {
      ...limits,
      maxConcurrentContainers: 3,
    });
    expect(result.decisions).toEqual([{ kind: 'start', uuid: work[0]!.uuid, workerId: 'w1', instanceType: 'small' }]);
    expect(result.boundBy).toBe('maxConcurrentContainers');
    expect(result.shutdowns).toEqual([]);
  });

  it('when maxInstances binds, lower-priority work does not overtake and idle surplus makes room', () => {
    const high = container({ constraints: big, priority: 9 });
    const low = container({ priority: 1 });
    const picture = pool({ open: [idle('w1', small)], instances: 1 });
    const result = plan([high, low], instanceTypes, picture, { ...limits, maxInstances: 1 });
    // The idle small worker would let the low-priority container overtake: it is not started, and
    // the worker goes to make room.
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('maxInstances');
    expect(result.shutdowns).toEqual([{ workerId: 'w1', instanceType: 'small', state: 'idle' }]);

    const alone = plan([high], instanceTypes, picture, { ...limits, maxInstances: 1 });
    expect(alone.decisions).toEqual([]);
    expect(alone.boundBy).toBe('maxInstances');
    expect(alone.shutdowns).toEqual([{ workerId: 'w1', instanceType: 'small', state: 'idle' }]);
  });

  it('respects maxHourlySpend, counting instances being created', () => {
    const work = queued(2);
    const result = plan(work, instanceTypes, pool({ instances: 1, hourlySpend: 0.1 }), { ...limits, maxHourlySpend: 0.16 });
    // 0.10 + 0.05 fits; a second small (0.20) would not.
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: work[0]!.uuid }]);
    expect(result.boundBy).toBe('maxHourlySpend');
    expect(result.shutdowns).toEqual([]);
  });

  it('stops at a create the pool refuses (quota, throttle)', () => {
    const result = plan([container()], instanceTypes, pool({ createRefusal: () => poolWide('create calls are rate-limited') }), limits);
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('create calls are rate-limited');
    expect(result.shutdowns).toEqual([]);
  });

  it('keeps booting workers nothing needs, like idle ones: timeoutIdle ends them if no work comes', () => {
    const result = plan(
      [],
      instanceTypes,
      pool({
        open: [idle('w1', small), idle('w2', small)],
        coming: [coming('b1', small), coming('b2', large), coming('c1', small, 'creating'), coming('u1', large, 'unknown')],
        instances: 6,
      }),
      limits,
    );
    expect(result.decisions).toEqual([]);
    // The next arrival finds them booted instead of paying a fresh boot.
    expect(result.shutdowns).toEqual([]);
    expect(result.boundBy).toBeNull();
  });

  it('a create in flight binds creates but frees nothing: idle workers of other types stay, and still take their work', () => {
    const waitingForCreate = container({ constraints: big, priority: 9 });
    const fitsIdle = container({ priority: 1 });
    const refusal = '1 create calls in flight (maxConcurrentInstanceCreateOps)';
    const result = plan(
      [waitingForCreate, fitsIdle],
      instanceTypes,
      pool({ open: [idle('w1', small), idle('w2', small)], instances: 2, createRefusal: () => poolWide(refusal) }),
      limits,
    );
    expect(result.decisions).toEqual([{ kind: 'start', uuid: fitsIdle.uuid, workerId: 'w2', instanceType: 'small' }]);
    expect(result.boundBy).toBe(refusal);
    expect(result.shutdowns).toEqual([]);
  });

  it('at the quota estimate, creates stop but no idle worker is shut down: the estimate is a guess, and a destroyed VM may hold quota a while', () => {
    const quota = { reason: 'at the quota estimate of 1 instances', scope: 'pool' as const };
    const result = plan([container({ constraints: big })], instanceTypes, pool({ open: [idle('w1', small)], instances: 1, createRefusal: () => quota }), limits);
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe(quota.reason);
    expect(result.shutdowns).toEqual([]);
  });

  it('does not put a small container on an idle worker of a larger type (whole instances)', () => {
    const one = container();
    const result = plan([one], instanceTypes, pool({ open: [idle('w1', large)], coming: [coming('b1', large)], instances: 2 }), limits);
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: one.uuid }]);
    // Neither large worker is needed by anything; both are left to timeoutIdle.
    expect(result.shutdowns).toEqual([]);
  });

  it('fails a container whose cheapest fitting type alone costs more than maxHourlySpend, and goes on', () => {
    const tooDear = container({ constraints: big });
    const cheap = container();
    const result = plan([tooDear, cheap], instanceTypes, pool(), { ...limits, maxHourlySpend: 0.1 });
    expect(result.decisions).toEqual([
      { kind: 'fail', uuid: tooDear.uuid, reason: 'the cheapest instance type that fits, large, costs 0.2/h alone, over maxHourlySpend 0.1' },
      { kind: 'create', instanceType: 'small', forUuid: cheap.uuid },
    ]);
    expect(result.boundBy).toBeNull();
  });

  it('shuts down only as many idle workers as the blocked creates need', () => {
    const blocked = container({ constraints: big });
    const result = plan([blocked], instanceTypes, pool({ open: [idle('w1', small), idle('w2', small), idle('w3', small)], instances: 3 }), {
      ...limits,
      maxInstances: 3,
    });
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('maxInstances');
    expect(result.shutdowns).toEqual([{ workerId: 'w1', instanceType: 'small', state: 'idle' }]);
  });

  it('when maxInstances binds, a booting worker no container needs makes room like an idle one', () => {
    const high = container({ constraints: big, priority: 9 });
    const result = plan([high], instanceTypes, pool({ coming: [coming('b1', small)], instances: 1 }), { ...limits, maxInstances: 1 });
    expect(result.boundBy).toBe('maxInstances');
    expect(result.shutdowns).toEqual([{ workerId: 'b1', instanceType: 'small', state: 'booting' }]);
  });

  it('keeps priority order in its decisions', () => {
    const first = container({ priority: 9 });
    const second = container({ constraints: big, priority: 5 });
    const third = container({ priority: 1 });
    const result = plan([first, second, third], instanceTypes, pool({ open: [idle('w1', small)], instances: 1 }), limits);
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: first.uuid, workerId: 'w1', instanceType: 'small' },
      { kind: 'create', instanceType: 'large', forUuid: second.uuid },
      { kind: 'create', instanceType: 'small', forUuid: third.uuid },
    ]);
  });

  it('a higher-priority container blocked by maxInstances stops lower ones from creating or starting', () => {
    const first = container({ priority: 9 });
    const blocked = container({ constraints: big, priority: 5 });
    const lowFitsIdle = container({ priority: 2 });
    const lowNeedsCreate = container({ priority: 1 });
    // At maxInstances: the first container starts on an idle worker, the large one is blocked, and
    // neither lower one starts on the other idle worker or creates; that worker goes to make room.
    const result = plan([first, blocked, lowFitsIdle, lowNeedsCreate], instanceTypes, pool({ open: [idle('w1', small), idle('w2', small)], instances: 2 }), {
      ...limits,
      maxInstances: 2,
    });
    expect(result.decisions).toEqual([{ kind: 'start', uuid: first.uuid, workerId: 'w2', instanceType: 'small' }]);
    expect(result.boundBy).toBe('maxInstances');
    expect(result.shutdowns).toEqual([{ workerId: 'w1', instanceType: 'small', state: 'idle' }]);
  });

  it('a higher-priority container blocked by maxHourlySpend stops a cheaper lower-priority create', () => {
    const high = container({ constraints: big, priority: 9 });
    const low = container({ priority: 1 });
    // A large (0.20) would take spend to 0.35, over 0.30; a small (0.05) would fit, but must not overtake.
    const result = plan([high, low], instanceTypes, pool({ instances: 1, hourlySpend: 0.15 }), { ...limits, maxHourlySpend: 0.3 });
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('maxHourlySpend');
  });

  it('a create refused for its type alone (capacity back-off) holds back that type only: lower-priority work of another type gets a create', () => {
    const high = container({ constraints: big, priority: 9 });
    const low = container({ priority: 1 });
    const result = plan([high, low], instanceTypes, pool(noCapacityFor('large')), limits);
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: low.uuid }]);
    expect(result.boundBy).toBeNull();
    expect(result.blockedTypes).toEqual(['large']);
    expect(result.shutdowns).toEqual([]);
  });

  it('a second container needing a type refused this pass does not ask again and gets no create; its booting worker stays', () => {
    const first = container({ constraints: big, priority: 9 });
    const second = container({ constraints: big, priority: 8 });
    const third = container({ constraints: big, priority: 7 });
    const low = container({ priority: 1 });
    const refusing = noCapacityFor('large');
    // The booting large worker takes the first; the second asks and is refused; the third does not ask.
    const result = plan([first, second, third, low], instanceTypes, pool({ ...refusing, coming: [coming('b1', large)], instances: 1 }), limits);
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'small', forUuid: low.uuid }]);
    expect(refusing.asked.get('large')).toBe(1);
    expect(result.blockedTypes).toEqual(['large']);
    expect(result.shutdowns).toEqual([]);
    expect(result.boundBy).toBeNull();
  });

  it('a create refused pool-wide (throttle) still stops lower-priority creates of other types', () => {
    const high = container({ constraints: big, priority: 9 });
    const low = container({ priority: 1 });
    const asked: string[] = [];
    const createRefusal = (name: string): CreateRefusal | null => {
      asked.push(name);
      return poolWide('create calls are rate-limited');
    };
    const result = plan([high, low], instanceTypes, pool({ createRefusal }), limits);
    expect(result.decisions).toEqual([]);
    expect(result.boundBy).toBe('create calls are rate-limited');
    expect(result.blockedTypes).toEqual([]);
    expect(asked).toEqual(['large']);
  });

  it('a type refused for the type alone does not lift maxInstances: lower-priority work creates only within it', () => {
    const high = container({ constraints: big, priority: 9 });
    const lows = queued(3);
    const result = plan([high, ...lows], instanceTypes, pool({ ...noCapacityFor('large'), instances: 8 }), limits);
    expect(result.decisions).toEqual([
      { kind: 'create', instanceType: 'small', forUuid: lows[0]!.uuid },
      { kind: 'create', instanceType: 'small', forUuid: lows[1]!.uuid },
    ]);
    expect(result.boundBy).toBe('maxInstances');
    expect(result.blockedTypes).toEqual(['large']);
  });
});

describe('scheduling pass: why each queued container waits', () => {
  it('names the worker it waits for, the new instance, and leaves started ones out', () => {
    const work = queued(4);
    const result = plan(work, instanceTypes, pool({ open: [idle('w1', small)], coming: [coming('w2', small), coming('w3', small, 'creating')], instances: 3 }), limits);
    expect(result.waits.has(work[0]!.uuid)).toBe(false);
    expect(work.slice(1).map((c) => result.waits.get(c.uuid)).sort()).toEqual([
      'waiting for a new small instance',
      'waiting for the boot of w2',
      'waiting for w3 (not yet booted)',
    ]);
  });

  it('names the limit that holds it: maxInstances, the spend cap, maxConcurrentContainers, a pool-wide refusal', () => {
    const [first, second] = queued(2);
    expect(plan([first!, second!], instanceTypes, pool({ instances: 10 }), limits).waits.get(second!.uuid)).toBe('at maxInstances (10)');
    expect(plan([first!], instanceTypes, pool({ hourlySpend: 0.98 }), { ...limits, maxHourlySpend: 1 }).waits.get(first!.uuid)).toBe('at the spend cap (maxHourlySpend 1/h)');
    const busy = container({ state: 'running' });
    expect(plan([busy, first!], instanceTypes, pool(), { ...limits, maxConcurrentContainers: 1 }).waits.get(first!.uuid)).toBe('at maxConcurrentContainers (1)');
    const refused = plan([first!, second!], instanceTypes, pool({ createRefusal: () => poolWide('create calls are rate-limited') }), limits);
    expect([refused.waits.get(first!.uuid), refused.waits.get(second!.uuid)]).toEqual(['create calls are rate-limited', 'create calls are rate-limited']);
  });

  it("a type refused for the type alone: its containers carry the pool's reason for it (a broken launch config, with its last error)", () => {
    const reason = 'launch config large-1 is broken after 3 boot failures in a row; a trial create in 40s; last error: boot probe did not pass within timeoutBooting';
    const [first, second] = [container({ constraints: big }), container({ constraints: big })];
    const result = plan([first, second], instanceTypes, pool({ createRefusal: (name) => (name === 'large' ? { reason, scope: 'instanceType' } : null) }), limits);
    expect(result.waits.get(first.uuid)).toBe(reason);
    expect(result.waits.get(second.uuid)).toBe(reason);
  });
});

describe('scheduling pass (type fallback when the cheapest type is out of capacity)', () => {
  // One vCPU fits all: cheap 0.10, dearer 0.14 (within 1.5×), dearest 0.20 (beyond it).
  const cheap = instanceTypeFixture('cheap', { price: 0.1 });
  const dearer = instanceTypeFixture('dearer', { price: 0.14 });
  const dearest = instanceTypeFixture('dearest', { price: 0.2 });
  const priced = { cheap, dearer, dearest };
  const fallback: Limits = { ...limits, maxPriceFactor: 1.5 };

  it('creates the next type up within maxPriceFactor, and nothing beyond it', () => {
    const one = container();
    expect(plan([one], priced, pool(noCapacityFor('cheap')), fallback).decisions).toEqual([{ kind: 'create', instanceType: 'dearer', forUuid: one.uuid }]);
    const beyond = plan([one], priced, pool(noCapacityFor('cheap', 'dearer')), fallback);
    expect(beyond.decisions).toEqual([]);
    expect(beyond.blockedTypes).toEqual(['cheap', 'dearer']);
    expect(beyond.boundBy).toBeNull();
    // Without the factor (default 1) it waits for its own type.
    expect(plan([one], priced, pool(noCapacityFor('cheap')), limits).decisions).toEqual([]);
  });

  it('only when its own type is refused: otherwise the cheapest is created', () => {
    const one = container();
    expect(plan([one], priced, pool(), fallback).decisions).toEqual([{ kind: 'create', instanceType: 'cheap', forUuid: one.uuid }]);
  });

  it('takes an idle worker of a fallback type before creating one, and waits for a coming one', () => {
    const [first, second, third] = queued(3);
    const result = plan([first!, second!, third!], priced, pool({ ...noCapacityFor('cheap'), open: [idle('w1', dearer)], coming: [coming('b1', dearer)], instances: 2 }), fallback);
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: first!.uuid, workerId: 'w1', instanceType: 'dearer' },
      { kind: 'create', instanceType: 'dearer', forUuid: third!.uuid },
    ]);
    expect(result.shutdowns).toEqual([]);
  });

  it('passes over a fallback the budget cannot take, binding nothing: lower-priority work still creates', () => {
    // The high one needs 1 GiB (not on other); dearer would take spend to 1.04, over 1.02.
    const high = container({ priority: 9, constraints: { vcpus: 1, ramMiB: 1024, scratchGiB: 0, gpus: 0, preemptible: false } });
    const low = container({ priority: 1 });
    const types = { ...priced, other: instanceTypeFixture('other', { price: 0.05, vcpus: 1, ramMiB: 512 }) };
    const result = plan([high, low], types, pool({ ...noCapacityFor('cheap'), hourlySpend: 0.9 }), { ...fallback, maxHourlySpend: 1.02 });
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'other', forUuid: low.uuid }]);
    expect(result.boundBy).toBeNull();
  });

  describe('preemptible', () => {
    const spot = instanceTypeFixture('spot', { price: 0.03, preemptible: true });
    const spotDearer = instanceTypeFixture('spotDearer', { price: 0.04, preemptible: true });
    const onDemand = instanceTypeFixture('onDemand', { price: 0.1 });
    const kinds = { spot, spotDearer, onDemand };
    const preemptible: Constraints = { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: true };
    const settings: Limits = { ...fallback, preemptibleFallbackAfterMs: 10 * 60_000 };
    function refusedFor(ms: number, ...names: string[]): Pick<PoolPicture, 'createRefusal'> {
      return { createRefusal: (name) => (names.includes(name) ? { reason: `no capacity for ${name}`, scope: 'instanceType', refusedForMs: ms } : null) };
    }

    it('prefers a preemptible fallback at once', () => {
      const one = container({ constraints: preemptible });
      expect(plan([one], kinds, pool(refusedFor(0, 'spot')), settings).decisions).toEqual([{ kind: 'create', instanceType: 'spotDearer', forUuid: one.uuid }]);
    });

    it('falls back to on-demand only after preemptibleFallbackAfter of capacity refusals for its preemptible type', () => {
      const one = container({ constraints: preemptible });
      expect(plan([one], kinds, pool(refusedFor(9 * 60_000, 'spot', 'spotDearer')), settings).decisions).toEqual([]);
      expect(plan([one], kinds, pool({ ...refusedFor(9 * 60_000, 'spot'), open: [idle('w1', onDemand)], instances: 1 }), settings).decisions).toEqual([
        { kind: 'create', instanceType: 'spotDearer', forUuid: one.uuid },
      ]);
      expect(plan([one], kinds, pool(refusedFor(10 * 60_000, 'spot', 'spotDearer')), settings).decisions).toEqual([
        { kind: 'create', instanceType: 'onDemand', forUuid: one.uuid },
      ]);
      // Without the setting it never does.
      expect(plan([one], kinds, pool(refusedFor(60 * 60_000, 'spot', 'spotDearer')), fallback).decisions).toEqual([]);
    });

    it('a container that does not allow preemptible types never falls back onto one', () => {
      const one = container();
      const types = { onDemand, spotDearer: { ...spotDearer, price: 0.12 } };
      expect(plan([one], types, pool(refusedFor(60 * 60_000, 'onDemand')), settings).decisions).toEqual([]);
    });
  });
});

describe('scheduling pass (packing)', () => {
  it('creates five 8-vCPU instances for forty one-vCPU containers when that is cheaper per container', () => {
    const work = queued(40);
    const result = plan(work, packingTypes, pool(), packing);
    expect(result.decisions).toEqual([0, 8, 16, 24, 32].map((at) => ({ kind: 'create', instanceType: 'B', forUuid: work[at]!.uuid })));
    expect(result.shutdowns).toEqual([]);
    expect(result.boundBy).toBeNull();
  });

  it('takes the cheaper type when two hold a group at the same price per container', () => {
    // small: 0.05 for 2 (0.025 each); large: 0.20 for 8 (0.025 each).
    const work = queued(8);
    const result = plan(work, instanceTypes, pool(), packing);
    expect(result.decisions).toEqual([0, 2, 4, 6].map((at) => ({ kind: 'create', instanceType: 'small', forUuid: work[at]!.uuid })));
  });

  it('group choice: eight one-vCPU containers get one B, a single one gets an A', () => {
    const eight = queued(8);
    expect(plan(eight, packingTypes, pool(), packing).decisions).toEqual([{ kind: 'create', instanceType: 'B', forUuid: eight[0]!.uuid }]);
    const one = queued(1);
    expect(plan(one, packingTypes, pool(), packing).decisions).toEqual([{ kind: 'create', instanceType: 'A', forUuid: one[0]!.uuid }]);
  });

  it('fills a partly used worker before an idle one, and before any create', () => {
    const work = queued(6);
    const result = plan(
      work,
      packingTypes,
      pool({ open: [idle('idle-b', typeB), running('part-b', typeB, 3, { vcpus: 5, ramMiB: 12288, scratchGiB: 20, gpus: 0 })], instances: 2 }),
      packing,
    );
    expect(result.decisions).toEqual([
      ...work.slice(0, 5).map((c) => ({ kind: 'start', uuid: c.uuid, workerId: 'part-b', instanceType: 'B' })),
      { kind: 'start', uuid: work[5]!.uuid, workerId: 'idle-b', instanceType: 'B' },
    ]);
    expect(result.shutdowns).toEqual([]);
  });

  it('fills a partly used worker of a dearer type before an idle one of a cheaper type', () => {
    const one = container();
    const result = plan(
      [one],
      packingTypes,
      pool({ open: [idle('idle-a', typeA), running('part-b', typeB, 1, { vcpus: 7, ramMiB: 15360, scratchGiB: 20, gpus: 0 })], instances: 2 }),
      packing,
    );
    expect(result.decisions).toEqual([{ kind: 'start', uuid: one.uuid, workerId: 'part-b', instanceType: 'B' }]);
  });

  it("a worker's free RAM limits what fits even when vCPUs are free", () => {
    const work = queued(3, { vcpus: 1, ramMiB: 512, scratchGiB: 0, gpus: 0, preemptible: false });
    const result = plan(work, packingTypes, pool({ open: [running('w1', typeB, 1, { vcpus: 7, ramMiB: 1024, scratchGiB: 20, gpus: 0 })], instances: 1 }), packing);
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: work[0]!.uuid, workerId: 'w1', instanceType: 'B' },
      { kind: 'start', uuid: work[1]!.uuid, workerId: 'w1', instanceType: 'B' },
      { kind: 'create', instanceType: 'A', forUuid: work[2]!.uuid },
    ]);
  });

  it("a worker's free GPUs limit what fits even when vCPUs are free", () => {
    const gpuType = instanceTypeFixture('G', { vcpus: 8, ramMiB: 32768, gpus: 1, price: 1 });
    const types = { A: typeA, G: gpuType };
    const gpuWork = queued(2, { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 1, preemptible: false });
    const result = plan(
      gpuWork,
      types,
      pool({ open: [running('g-used', gpuType, 1, { vcpus: 7, ramMiB: 30720, scratchGiB: 20, gpus: 0 }), idle('g-idle', gpuType)], instances: 2 }),
      packing,
    );
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: gpuWork[0]!.uuid, workerId: 'g-idle', instanceType: 'G' },
      { kind: 'create', instanceType: 'G', forUuid: gpuWork[1]!.uuid },
    ]);
  });

  it('coming workers absorb waiting containers up to their capacity, and the rest create', () => {
    const work = queued(12);
    const result = plan(work, packingTypes, pool({ coming: [coming('b1', typeB), coming('c1', typeA, 'creating')], instances: 2 }), packing);
    // A (2) and B (8) take ten; the last two share one new A (0.05 each, against 0.15 on a B).
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'A', forUuid: work[10]!.uuid }]);
    // The booting worker is needed: it is not shut down.
    expect(result.shutdowns).toEqual([]);
    expect(result.boundBy).toBeNull();
  });

  it('real open workers take work before coming ones', () => {
    const work = queued(3);
    const result = plan(work, packingTypes, pool({ open: [idle('w1', typeA)], coming: [coming('b1', typeB)], instances: 2 }), packing);
    expect(result.decisions).toEqual([
      { kind: 'start', uuid: work[0]!.uuid, workerId: 'w1', instanceType: 'A' },
      { kind: 'start', uuid: work[1]!.uuid, workerId: 'w1', instanceType: 'A' },
    ]);
    expect(result.shutdowns).toEqual([]);
  });

  it('a group type refused for the type alone: the group is created as the next cheapest per container, asking once', () => {
    // B would hold all eight; refused, each A holds two.
    const work = queued(8);
    const refusing = noCapacityFor('B');
    const result = plan(work, packingTypes, pool(refusing), packing);
    expect(result.decisions).toEqual([0, 2, 4, 6].map((at) => ({ kind: 'create', instanceType: 'A', forUuid: work[at]!.uuid })));
    expect(refusing.asked.get('B')).toBe(1);
    expect(result.blockedTypes).toEqual(['B']);
    expect(result.boundBy).toBeNull();
  });

  it('a container only a refused type fits waits; a smaller one below it is still packed and created', () => {
    const wide = container({ constraints: { vcpus: 4, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false }, priority: 9 });
    const narrow = container({ priority: 1 });
    const result = plan([wide, narrow], packingTypes, pool(noCapacityFor('B')), packing);
    expect(result.decisions).toEqual([{ kind: 'create', instanceType: 'A', forUuid: narrow.uuid }]);
    expect(result.blockedTypes).toEqual(['B']);
    expect(result.boundBy).toBeNull();
  });

  it('a group create stays within maxHourlySpend: a cheaper type that fits the budget is created instead', () => {
    // B (0.30) never fits under 0.25; A (0.10) does, twice.
    const work = queued(8);
    const result = plan(work, packingTypes, pool(), { ...packing, maxHourlySpend: 0.25 });
    expect(result.decisions).toEqual([
      { kind: 'create', instanceType: 'A', forUuid: work[0]!.uuid },
      { kind: 'create', instanceType: 'A', forUuid: work[2]!.uuid },
    ]);
    expect(result.boundBy).toBe('maxHourlySpend');
  });
});
