// One scheduling pass as a pure function: given the pending containers in scheduling order and a
// picture of the pool, decide what to start where, what to create, shut down and fail. No I/O;
// the dispatcher carries the decisions out, in order, and stops creating at the first create the
// pool refuses for every type. A refusal for one type alone (its capacity back-off) holds back
// only the containers that need that type; one instance a container, they may run on a dearer type
// that fits instead, within maxPriceFactor. With more than one container per instance allowed,
// containers are packed onto workers that have room (partly used first), and a create picks the
// type that holds the waiting group at the least cost per container.
import type { InstanceType } from '../cloud/driver.js';
import { capacityOf, demandOf, fitsIn, minus, type Resources } from '../pool/resources.js';
import type { Constraints, Container } from '../queue/types.js';
import { chooseInstanceType, fallbackTypes, type FallbackTypes, type InstanceTypeChoice } from './instance-type.js';
import type { CreateRefusal, PoolPicture } from './worker-pool.js';

export interface Limits {
  maxInstances: number;
  maxConcurrentContainers: number | null;
  maxHourlySpend: number | null;
  /** Containers one instance may run at once (1: whole instances, no packing). */
  maxContainersPerInstance: number;
  /**
   * Starts one pass hands out (default: no limit). Each costs two actor transitions and a lock,
   * so a pool with 10,000 idle workers would otherwise hold the event loop for seconds; the
   * containers past the limit keep their place on a worker, create nothing, and start next pass.
   */
  maxStartsPerPass?: number;
  /**
   * One instance a container: when its cheapest type is refused for the type alone (a capacity
   * back-off), it may take a worker of, or create, another type that fits, up to this factor times
   * the cheapest type's price (default 1: it waits for its cheapest type).
   */
  maxPriceFactor?: number;
  /**
   * How long a container's preemptible type must have been refused for capacity before it may
   * fall back to on-demand types (default: never). Until then it falls back to preemptible ones only.
   */
  preemptibleFallbackAfterMs?: number;
}

export type Decision =
  | { kind: 'start'; uuid: string; workerId: string; instanceType: string }
  | { kind: 'create'; instanceType: string; forUuid: string }
  | { kind: 'fail'; uuid: string; reason: string };

export interface Shutdown {
  workerId: string;
  instanceType: string;
  state: 'booting' | 'idle';
}

export interface Plan {
  /**
   * In priority order: a dispatcher that stops at a create refused for every type, and skips a type
   * once refused for that type alone, never lets lower-priority work overtake on a shared limit.
   */
  decisions: Decision[];
  /**
   * Surplus workers to shut down: booting or idle ones no container needs, only when maxInstances
   * or maxHourlySpend binds, and only as many as the creates that limit blocked. Otherwise
   * timeoutIdle decides, so work arriving a minute later finds them (booted, not booting anew).
   */
  shutdowns: Shutdown[];
  /**
   * The pool-wide limit that stopped the pass early, if one did (for logs and metrics): from there
   * on no lower-priority container got a create.
   */
  boundBy: string | null;
  /**
   * Types whose creates the pool refused for the type alone (its capacity back-off), in the order
   * met: the containers that need them wait, and lower-priority work of other types goes on.
   */
  blockedTypes: string[];
  /** Containers placed on a worker that takes work now, left for the next pass by maxStartsPerPass. */
  deferredStarts: number;
  /**
   * Why each queued container the pass did not start waits, by uuid: the limit or refusal that held
   * it, or the worker it waits for. For operators (GET /containers); nothing acts on it.
   */
  waits: Map<string, string>;
}

/** Room on a worker as the pass fills it: a worker that takes work now, one on its way, or one this pass creates. */
interface Slot {
  workerId: string | null;
  type: InstanceType;
  /** Takes a start now (idle or running with room); otherwise a container placed here waits for it. */
  open: boolean;
  state: 'idle' | 'running' | 'coming' | 'booting' | 'new';
  free: Resources;
  containers: number;
  placedThisPass: number;
}

/** How far past a container needing a create the pass looks when sizing the instance for a group. */
const groupLookahead = 64;

export function plan(pending: readonly Container[], instanceTypes: Readonly<Record<string, InstanceType>>, pool: PoolPicture, limits: Limits): Plan {
  const perInstance = Math.max(1, limits.maxContainersPerInstance);
  const packing = perInstance > 1;
  const choices = new ChoiceCache(instanceTypes, limits.maxPriceFactor ?? 1);
  const preemptibleFallbackAfter = limits.preemptibleFallbackAfterMs ?? Infinity;
  const slots = new SlotIndex(Object.values(instanceTypes), perInstance);
  for (const worker of pool.open) {
    const type = instanceTypes[worker.instanceType];
    if (!type) continue;
    slots.add({ workerId: worker.workerId, type, open: true, state: worker.containers > 0 ? 'running' : 'idle', free: worker.free, containers: worker.containers, placedThisPass: 0 });
  }
  for (const worker of pool.coming) {
    const type = instanceTypes[worker.instanceType];
    if (!type) continue;
    slots.add({ workerId: worker.workerId, type, open: false, state: worker.state === 'booting' ? 'booting' : 'coming', free: capacityOf(type), containers: 0, placedThisPass: 0 });
  }

  const decisions: Decision[] = [];
  const waits = new Map<string, string>();
  // What a pool-wide bound says to the containers it holds back.
  const boundReason = (bound: string): string =>
    bound === 'maxInstances'
      ? `at maxInstances (${limits.maxInstances})`
      : bound === 'maxHourlySpend'
        ? `at the spend cap (maxHourlySpend ${limits.maxHourlySpend ?? '-'}/h)`
        : bound === 'maxConcurrentContainers'
          ? `at maxConcurrentContainers (${limits.maxConcurrentContainers ?? '-'})`
          : bound;
  let instances = pool.instances;
  let spend = pool.hourlySpend;
  let active = 0;
  for (const container of pending) if (container.state === 'running' || container.state === 'locked') active++;
  let boundBy: string | null = null;
  // Asked once a pass: later containers that need a blocked type skip it without asking again.
  const blockedTypes = new Map<string, CreateRefusal>();
  let concurrencyBound = false;
  let capacityBound = false;
  let blockedCreates = 0;
  const maxStarts = limits.maxStartsPerPass ?? Infinity;
  let starts = 0;
  let deferredStarts = 0;
  // Types still wanted by containers the pass did not get to; their booting workers are not surplus.
  const wantedLater = new Set<string>();

  for (let index = 0; index < pending.length; index++) {
    const container = pending[index]!;
    if (container.state !== 'queued') continue;
    const choice = choices.choose(container.constraints);
    if (!choice.ok) {
      decisions.push({ kind: 'fail', uuid: container.uuid, reason: choice.reason });
      continue;
    }
    const type = choice.instanceType;
    if (limits.maxHourlySpend !== null && type.price > limits.maxHourlySpend) {
      decisions.push({
        kind: 'fail',
        uuid: container.uuid,
        reason: `the cheapest instance type that fits, ${type.name}, costs ${type.price}/h alone, over maxHourlySpend ${limits.maxHourlySpend}`,
      });
      continue;
    }
    if (concurrencyBound || (limits.maxConcurrentContainers !== null && active >= limits.maxConcurrentContainers)) {
      boundBy ??= 'maxConcurrentContainers';
      concurrencyBound = true;
      wantedLater.add(type.name);
      waits.set(container.uuid, boundReason('maxConcurrentContainers'));
      continue;
    }
    if (capacityBound) {
      // Higher-priority work waits for room (maxInstances, spend): nothing lower may take
      // an instance, and idle ones are shut down below to make that room.
      wantedLater.add(type.name);
      waits.set(container.uuid, boundReason(boundBy ?? 'maxInstances'));
      continue;
    }
    const demand = demandOf(container.constraints);
    // A worker with room that takes work now starts it; one on its way (creating, booting, or
    // created earlier in this pass) is waited for, and nothing is created.
    const placeOn = (slot: Slot): void => {
      slots.place(slot, demand);
      if (slot.open && slot.workerId !== null) {
        if (starts < maxStarts) decisions.push({ kind: 'start', uuid: container.uuid, workerId: slot.workerId, instanceType: slot.type.name });
        else {
          deferredStarts++;
          waits.set(container.uuid, `starts next pass on ${slot.workerId} (maxStartsPerPass)`);
        }
        starts++;
      } else {
        waits.set(
          container.uuid,
          slot.workerId === null
            ? `waiting for a new ${slot.type.name} instance`
            : slot.state === 'booting'
              ? `waiting for the boot of ${slot.workerId}`
              : `waiting for ${slot.workerId} (not yet booted)`,
        );
      }
      active++;
    };
    const slot = slots.find(demand, container.constraints.preemptible, packing ? null : [type]);
    if (slot) {
      placeOn(slot);
      continue;
    }
    if (boundBy !== null) {
      // Creates stopped at a higher-priority container: lower-priority work must not get one first.
      wantedLater.add(type.name);
      waits.set(container.uuid, boundReason(boundBy));
      continue;
    }
    // A group type the budget cannot take, or one the pool refuses for the type alone, would block
    // this create while another type that fits is still allowed.
    const creatable = (candidate: InstanceType): boolean =>
      !blockedTypes.has(candidate.name) && (limits.maxHourlySpend === null || spend + candidate.price <= limits.maxHourlySpend);
    let createType: InstanceType | null = null;
    let refusal: string | null = null;
    // Settles a create of the candidate: allowed (the type), refused pool-wide (why), or refused for
    // the type alone (null; the type joins blockedTypes).
    const ask = (candidate: InstanceType): InstanceType | string | null => {
      const limit =
        instances >= limits.maxInstances
          ? 'maxInstances'
          : limits.maxHourlySpend !== null && spend + candidate.price > limits.maxHourlySpend
            ? 'maxHourlySpend'
            : null;
      if (limit !== null) return limit;
      const poolRefusal = pool.createRefusal(candidate.name);
      if (poolRefusal === null) return candidate;
      if (poolRefusal.scope === 'pool') return poolRefusal.reason;
      blockedTypes.set(candidate.name, poolRefusal);
      return null;
    };
    // Each round settles the create or blocks one more type, so it ends within the types.
    while (createType === null && refusal === null) {
      const candidate = packing ? (cheapestPerContainer(pending, index, choices, instanceTypes, perInstance, creatable) ?? type) : type;
      // Every type it could be created as is refused for the type alone: it waits, nothing else does.
      if (blockedTypes.has(candidate.name)) break;
      const answer = ask(candidate);
      if (typeof answer === 'string') refusal = answer;
      else if (answer !== null) createType = answer;
    }
    if (createType === null && refusal === null && !packing) {
      // Its cheapest type is refused for the type alone: a dearer one within maxPriceFactor, a
      // worker of one first; on-demand ones for a preemptible type only once it has been refused
      // for preemptibleFallbackAfter. One the budget cannot take is passed over: its own type waits,
      // and that binds nothing else.
      const fallbacks = choices.fallbacks(container.constraints, type);
      const refusedFor = blockedTypes.get(type.name)?.refusedForMs ?? 0;
      const allowed = refusedFor >= preemptibleFallbackAfter ? [...fallbacks.sameKind, ...fallbacks.onDemand] : fallbacks.sameKind;
      const fallbackSlot = allowed.length > 0 ? slots.find(demand, container.constraints.preemptible, allowed) : null;
      if (fallbackSlot) {
        placeOn(fallbackSlot);
        continue;
      }
      for (const candidate of allowed) {
        const answer = creatable(candidate) ? ask(candidate) : null;
        if (answer === null) continue;
        if (typeof answer === 'string') refusal = answer;
        else createType = answer;
        break;
      }
    }
    if (createType === null) {
      wantedLater.add(type.name);
      // Refused pool-wide, or for its own type alone (and every fallback it had).
      waits.set(container.uuid, refusal !== null ? boundReason(refusal) : (blockedTypes.get(type.name)?.reason ?? `no ${type.name} instance can be created now`));
      if (refusal !== null) {
        boundBy = refusal;
        // Only these are freed by shutting idle workers down; a create in flight or a throttle is not.
        capacityBound = refusal === 'maxInstances' || refusal === 'maxHourlySpend';
        if (capacityBound) blockedCreates++;
      }
      continue;
    }
    decisions.push({ kind: 'create', instanceType: createType.name, forUuid: container.uuid });
    waits.set(container.uuid, `waiting for a new ${createType.name} instance`);
    const created: Slot = { workerId: null, type: createType, open: false, state: 'new', free: capacityOf(createType), containers: 0, placedThisPass: 0 };
    slots.add(created);
    slots.place(created, demand);
    instances++;
    spend += createType.price;
    active++;
  }

  const shutdowns: Shutdown[] = [];
  let idleToFree = capacityBound ? blockedCreates : 0;
  for (const slot of slots.all()) {
    if (slot.workerId === null || slot.placedThisPass > 0) continue;
    // A booting worker nothing needs now is kept: the next arrival finds it booted rather than paying
    // a fresh boot, and timeoutIdle ends it if none comes (replays of the bundled traces: creates
    // fell by three quarters, median waits from 32 s to none, at lower cost). It goes only, like an
    // idle one, to make room for a create a limit blocks.
    if (slot.state === 'booting' && !wantedLater.has(slot.type.name) && idleToFree > 0) {
      shutdowns.push({ workerId: slot.workerId, instanceType: slot.type.name, state: 'booting' });
      idleToFree--;
    } else if (slot.state === 'idle' && idleToFree > 0) {
      shutdowns.push({ workerId: slot.workerId, instanceType: slot.type.name, state: 'idle' });
      idleToFree--;
    }
  }
  return { decisions, shutdowns, boundBy, blockedTypes: [...blockedTypes.keys()], deferredStarts, waits };
}

/**
 * The type to create for the container at `index`: of the affordable types it fits, the one whose
 * instance holds it and the queued containers right after it (first fit, in order) at the least
 * price per container; the cheaper type on a tie. Null if no type it fits is affordable.
 */
function cheapestPerContainer(
  pending: readonly Container[],
  index: number,
  choices: ChoiceCache,
  instanceTypes: Readonly<Record<string, InstanceType>>,
  perInstance: number,
  affordable: (type: InstanceType) => boolean,
): InstanceType | null {
  const first = pending[index]!;
  let best: { type: InstanceType; perContainer: number } | null = null;
  for (const type of Object.values(instanceTypes)) {
    if ((type.preemptible && !first.constraints.preemptible) || !affordable(type)) continue;
    let free = capacityOf(type);
    const firstDemand = demandOf(first.constraints);
    if (!fitsIn(firstDemand, free)) continue;
    free = minus(free, firstDemand);
    let held = 1;
    for (let next = index + 1; next < pending.length && next <= index + groupLookahead && held < perInstance; next++) {
      const other = pending[next]!;
      if (other.state !== 'queued' || (type.preemptible && !other.constraints.preemptible) || !choices.choose(other.constraints).ok) continue;
      const demand = demandOf(other.constraints);
      if (!fitsIn(demand, free)) continue;
      free = minus(free, demand);
      held++;
    }
    const perContainer = type.price / held;
    if (best === null || perContainer < best.perContainer || (perContainer === best.perContainer && type.price < best.type.price)) {
      best = { type, perContainer };
    }
  }
  return best?.type ?? null;
}

/** Type choice per distinct set of constraints: a queue of 100,000 usually holds a handful. */
class ChoiceCache {
  private readonly cache = new Map<string, InstanceTypeChoice>();
  // Neighbours in the queue mostly ask alike: comparing with the last constraints spares the key
  // (a string built per container, per pass: half of a 100,000-container pass's planning time).
  private last: Constraints | null = null;
  private lastChoice: InstanceTypeChoice | null = null;

  private readonly fallbackCache = new Map<string, FallbackTypes>();

  constructor(
    private readonly instanceTypes: Readonly<Record<string, InstanceType>>,
    private readonly maxPriceFactor: number,
  ) {}

  /** The dearer types a container may take when `cheapest`, its choice, is refused (asked only then). */
  fallbacks(constraints: Constraints, cheapest: InstanceType): FallbackTypes {
    const key = keyOf(constraints);
    let fallbacks = this.fallbackCache.get(key);
    if (!fallbacks) {
      fallbacks = fallbackTypes(constraints, this.instanceTypes, cheapest, this.maxPriceFactor);
      this.fallbackCache.set(key, fallbacks);
    }
    return fallbacks;
  }

  choose(constraints: Constraints): InstanceTypeChoice {
    const last = this.last;
    if (this.lastChoice !== null && last !== null && sameConstraints(last, constraints)) return this.lastChoice;
    const key = keyOf(constraints);
    let choice = this.cache.get(key);
    if (!choice) {
      choice = chooseInstanceType(constraints, this.instanceTypes);
      this.cache.set(key, choice);
    }
    this.last = constraints;
    this.lastChoice = choice;
    return choice;
  }
}

function keyOf(constraints: Constraints): string {
  return `${constraints.vcpus}/${constraints.ramMiB}/${constraints.scratchGiB}/${constraints.gpus}/${constraints.preemptible}`;
}

function sameConstraints(a: Constraints, b: Constraints): boolean {
  return a === b || (a.vcpus === b.vcpus && a.ramMiB === b.ramMiB && a.scratchGiB === b.scratchGiB && a.gpus === b.gpus && a.preemptible === b.preemptible);
}

/**
 * Slots with room, by type: those that take work now before those on their way, and within each,
 * partly used (of any type) before empty (so instances fill before new ones are touched). A slot
 * that is full leaves the index, so a pass over many workers does not rescan them.
 */
class SlotIndex {
  private readonly everySlot: Slot[] = [];
  // Cheapest type first, so a container that fits several takes room on the cheapest.
  private readonly types: InstanceType[];
  private readonly byType = new Map<string, { partly: Set<Slot>; empty: Slot[] }[]>();

  constructor(
    types: InstanceType[],
    private readonly perInstance: number,
  ) {
    this.types = [...types].sort((a, b) => a.price - b.price || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const type of this.types) this.byType.set(type.name, [{ partly: new Set(), empty: [] }, { partly: new Set(), empty: [] }]);
  }

  add(slot: Slot): void {
    this.everySlot.push(slot);
    if (!this.hasRoom(slot)) return;
    const tier = this.tierOf(slot);
    if (slot.containers > 0) tier.partly.add(slot);
    else tier.empty.push(slot);
  }

  all(): readonly Slot[] {
    return this.everySlot;
  }

  /** A slot with room for `demand`: of `onlyTypes` (in that order) without packing, else of any type that fits. */
  find(demand: Resources, preemptibleAllowed: boolean, onlyTypes: readonly InstanceType[] | null): Slot | null {
    const types = onlyTypes ?? this.types;
    for (const open of [true, false]) {
      const tiers: { partly: Set<Slot>; empty: Slot[] }[] = [];
      for (const type of types) {
        if (type.preemptible && !preemptibleAllowed) continue;
        const tier = this.byType.get(type.name)?.[open ? 0 : 1];
        if (tier) tiers.push(tier);
      }
      // A partly used worker of a dearer type before an empty one of a cheaper type: the empty one
      // can then time out idle, the partly used one is paid for either way.
      for (const tier of tiers) for (const slot of tier.partly) if (fitsIn(demand, slot.free)) return slot;
      for (const tier of tiers) {
        const empty = tier.empty.at(-1);
        if (empty && fitsIn(demand, empty.free)) return empty;
      }
    }
    return null;
  }

  place(slot: Slot, demand: Resources): void {
    const tier = this.tierOf(slot);
    if (slot.containers === 0) {
      const at = tier.empty.lastIndexOf(slot);
      if (at >= 0) tier.empty.splice(at, 1);
    }
    slot.free = minus(slot.free, demand);
    slot.containers++;
    slot.placedThisPass++;
    if (this.hasRoom(slot)) tier.partly.add(slot);
    else tier.partly.delete(slot);
  }

  private hasRoom(slot: Slot): boolean {
    return slot.containers < this.perInstance && slot.free.vcpus > 0 && slot.free.ramMiB > 0;
  }

  private tierOf(slot: Slot): { partly: Set<Slot>; empty: Slot[] } {
    return this.byType.get(slot.type.name)![slot.open ? 0 : 1]!;
  }
}
