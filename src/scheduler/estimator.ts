// A baseline to compare Drover's scheduling pass against: Taskcluster worker-manager's simple
// estimator. It sizes the pool by counts alone:
//
//   new capacity = clamp(pending − (existing − claimed), 0, maxCapacity − existing) − requested
//
// pending: queued containers that may run (not failed, within maxConcurrentContainers);
// existing − claimed: the free capacity of instances that exist and are not stopping (idle, running
// with room, booting, or found in a listing and not yet probed), whatever their type; claimed: running
// and locked containers; requested: instances being created; maxCapacity: maxInstances' worth.
//
// Capacity is counted in container slots, maxContainersPerInstance to an instance (with 1, slots
// are instances): an idle, booting, unknown or creating worker is that many free slots, a running
// one with room that many less its containers, whatever its type's resources would really hold.
// existing is the free slots plus the claimed containers (a worker held or draining, with nothing on
// it, is not counted: it takes no work). With packing a create takes the next
// containers while they fit in the type's resources and its slots (next fit), so the estimator's
// slot count may take more instances than slots / maxContainersPerInstance.
//
// Starts, fails and the waits of containers placed on workers come from plan() unchanged: containers
// go to idle workers first come first served by priority, exactly as Drover's pass. Its creates
// are replaced by the estimator's count, and its shutdowns dropped: the estimator never cancels a
// booting worker, and idle ones go by their own idle timeout (the pool's timeoutIdle).
//
// Which containers the count creates for: those plan() wanted a create for first (they found no
// worker of a type they fit), then the other waiting ones, in priority order; each create is of the
// cheapest type that fits its container (chooseInstanceType; no maxPriceFactor fallback). Creates
// honour maxInstances, maxHourlySpend and the pool's createRefusal as plan() does: a pool-wide
// refusal or a bound limit stops every further create, one for the type alone skips that type.
import type { InstanceType } from '../cloud/driver.js';
import { capacityOf, demandOf, fitsIn, minus, type Resources } from '../pool/resources.js';
import type { Container } from '../queue/types.js';
import { chooseInstanceType } from './instance-type.js';
import { plan, type Decision, type Limits, type Plan } from './plan.js';
import type { CreateRefusal, PoolPicture } from './worker-pool.js';

/** The counts one estimator pass sized the pool by, in container slots (for tests and reports). */
export interface EstimatorCounts {
  /** Queued containers that may run this pass (not failed, within maxConcurrentContainers). */
  pending: number;
  /** Slots on instances that exist and are not stopping: free slots plus claimed containers. */
  existing: number;
  /** Running and locked containers. */
  claimed: number;
  /** Slots on instances being created. */
  requested: number;
  /** maxInstances × maxContainersPerInstance. */
  maxCapacity: number;
  /** The estimator's new capacity: clamp(pending − (existing − claimed), 0, maxCapacity − existing) − requested, at least 0. */
  desired: number;
}

/**
 * The estimator's counts for a pass over `pending` against `pool`, before any create is asked.
 * `runnable`: the queued containers that may run (default: every queued one); plan() fails some.
 */
export function estimatorCounts(pending: readonly Container[], pool: PoolPicture, limits: Limits, runnable?: number): EstimatorCounts {
  const perInstance = Math.max(1, limits.maxContainersPerInstance);
  let claimed = 0;
  let queued = 0;
  for (const container of pending) {
    if (container.state === 'running' || container.state === 'locked') claimed++;
    else if (container.state === 'queued') queued++;
  }
  let free = 0;
  let requested = 0;
  for (const worker of pool.open) free += Math.max(0, perInstance - worker.containers);
  for (const worker of pool.coming) {
    if (worker.state === 'creating') requested += perInstance;
    else free += perInstance;
  }
  const existing = free + claimed;
  const allowed = limits.maxConcurrentContainers === null ? Infinity : Math.max(0, limits.maxConcurrentContainers - claimed);
  const count = Math.min(runnable ?? queued, allowed);
  const maxCapacity = limits.maxInstances * perInstance;
  const desired = Math.max(0, Math.min(Math.max(0, count - free), maxCapacity - existing) - requested);
  return { pending: count, existing, claimed, requested, maxCapacity, desired };
}

/** A pass sized by Taskcluster's simple estimator instead of plan()'s per-container matching; same signature and result as plan(). */
export function estimatorPlan(pending: readonly Container[], instanceTypes: Readonly<Record<string, InstanceType>>, pool: PoolPicture, limits: Limits): Plan {
  const perInstance = Math.max(1, limits.maxContainersPerInstance);
  const base = plan(pending, instanceTypes, pool, limits);

  const failed = new Set<string>();
  const started = new Set<string>();
  const plannedCreates = new Set<string>();
  for (const decision of base.decisions) {
    if (decision.kind === 'fail') failed.add(decision.uuid);
    else if (decision.kind === 'start') started.add(decision.uuid);
    else plannedCreates.add(decision.forUuid);
  }
  // Queued containers that may run, in priority order: failed ones are not pending.
  const runnable = pending.filter((container) => container.state === 'queued' && !failed.has(container.uuid));
  const counts = estimatorCounts(pending, pool, limits, runnable.length);
  // Those past maxConcurrentContainers (the last ones; plan() holds them too) are not pending either.
  const waiting = runnable.slice(0, counts.pending).filter((container) => !started.has(container.uuid));
  // The containers beyond the free and requested capacity: plan()'s create ones first.
  const candidates = [...waiting.filter((container) => plannedCreates.has(container.uuid)), ...waiting.filter((container) => !plannedCreates.has(container.uuid))];
  const free = counts.existing - counts.claimed;
  const beyond = Math.min(candidates.length, Math.max(0, counts.pending - free - counts.requested));
  const toCreate = Math.min(beyond, counts.desired);

  const waits = new Map(base.waits);
  const creates: Decision[] = [];
  // Types refused for the type alone: plan()'s (they shaped its starts), then the ones met here.
  const blockedTypes = new Set<string>(base.blockedTypes);
  // Asked once a pass per type, like plan().
  const refusals = new Map<string, CreateRefusal | null>();
  let boundBy: string | null = null;
  let instances = pool.instances;
  let spend = pool.hourlySpend;
  // The instance the last create made, while it has slots and room left (next fit).
  let group: { type: InstanceType; free: Resources; containers: number } | null = null;
  // Why a container the estimator does not create for waits. plan()'s own reason stands (the worker
  // it waits for, or the limit that held it) unless plan() created for it: that create is gone.
  const hold = (container: Container, reason: string): void => {
    if (plannedCreates.has(container.uuid) || !waits.has(container.uuid)) waits.set(container.uuid, reason);
  };
  const boundReason = (bound: string): string =>
    bound === 'maxInstances' ? `at maxInstances (${limits.maxInstances})` : bound === 'maxHourlySpend' ? `at the spend cap (maxHourlySpend ${limits.maxHourlySpend ?? '-'}/h)` : bound;

  for (let index = 0; index < toCreate; index++) {
    const container = candidates[index]!;
    if (boundBy !== null) {
      hold(container, boundReason(boundBy));
      continue;
    }
    const demand = demandOf(container.constraints);
    const joinable = group !== null && group.containers < perInstance && fitsIn(demand, group.free) && (!group.type.preemptible || container.constraints.preemptible);
    if (group !== null && joinable) {
      group.free = minus(group.free, demand);
      group.containers++;
      waits.set(container.uuid, `waiting for a new ${group.type.name} instance`);
      continue;
    }
    const choice = chooseInstanceType(container.constraints, instanceTypes);
    if (!choice.ok) continue; // plan() failed it; not reached
    const type = choice.instanceType;
    const limit =
      instances >= limits.maxInstances ? 'maxInstances' : limits.maxHourlySpend !== null && spend + type.price > limits.maxHourlySpend ? 'maxHourlySpend' : null;
    if (limit !== null) {
      boundBy = limit;
      hold(container, boundReason(limit));
      continue;
    }
    if (!refusals.has(type.name)) refusals.set(type.name, pool.createRefusal(type.name));
    const refusal = refusals.get(type.name) ?? null;
    if (refusal !== null && refusal.scope === 'pool') {
      boundBy = refusal.reason;
      hold(container, refusal.reason);
      continue;
    }
    if (refusal !== null) {
      blockedTypes.add(type.name);
      hold(container, refusal.reason);
      group = null;
      continue;
    }
    creates.push({ kind: 'create', instanceType: type.name, forUuid: container.uuid });
    waits.set(container.uuid, `waiting for a new ${type.name} instance`);
    group = { type, free: minus(capacityOf(type), demand), containers: 1 };
    instances++;
    spend += type.price;
  }
  // Beyond the free capacity but past maxCapacity − existing: the estimator's maxInstances holds them.
  for (let index = toCreate; index < beyond; index++) hold(candidates[index]!, boundReason('maxInstances'));
  if (toCreate < beyond) boundBy ??= 'maxInstances';
  // Counted against free or requested capacity, though plan() may have found none of a type they fit.
  for (let index = beyond; index < candidates.length; index++) {
    hold(candidates[index]!, `counted against the pool's free or requested capacity (estimator: ${free} free, ${counts.requested} being created)`);
  }

  // Priority order, as plan() gives it: each decision at its container's place in the queue.
  const position = new Map<string, number>();
  pending.forEach((container, index) => position.set(container.uuid, index));
  const keyOf = (decision: Decision): number => position.get(decision.kind === 'create' ? decision.forUuid : decision.uuid) ?? Infinity;
  const decisions = [...base.decisions.filter((decision) => decision.kind !== 'create'), ...creates]
    .map((decision, order) => ({ decision, order, key: keyOf(decision) }))
    .sort((a, b) => a.key - b.key || a.order - b.order)
    .map(({ decision }) => decision);

  return {
    decisions,
    shutdowns: [],
    boundBy: boundBy ?? base.boundBy,
    blockedTypes: [...blockedTypes],
    deferredStarts: base.deferredStarts,
    waits,
  };
}
