// One scheduling pass as a pure function: given the pending containers in scheduling order and a
// picture of the pool, decide what to start, create, shut down and fail. No I/O; the dispatcher
// carries the decisions out, in order, and stops creating at the first create the pool refuses.
import type { InstanceType } from '../cloud/driver.js';
import type { Container } from '../queue/types.js';
import { chooseInstanceType } from './instance-type.js';

export interface PoolPicture {
  /** Idle workers that would take a container now, per type. */
  idle: Readonly<Record<string, number>>;
  /** Workers soon free for work without a create (creating, booting, idle, unknown), per type. */
  unallocated: Readonly<Record<string, number>>;
  /** Booting workers per type (unallocated, and cheap to give up before they cost an hour). */
  booting: Readonly<Record<string, number>>;
  /** Every instance the pool knows, whatever its state. */
  instances: number;
  hourlySpend: number;
  /** The pool's quota back-off is on: no create would be tried. */
  atQuota: boolean;
  /** Why a create of the type would be refused now (quota, throttles, create-ops limit...), or null. */
  createRefusal: (instanceType: string) => string | null;
}

export interface Limits {
  maxInstances: number;
  maxConcurrentContainers: number | null;
  maxHourlySpend: number | null;
}

export type Decision =
  | { kind: 'start'; uuid: string; instanceType: string }
  | { kind: 'create'; instanceType: string; forUuid: string }
  | { kind: 'fail'; uuid: string; reason: string };

export interface Plan {
  /** In priority order: a dispatcher that stops at a refused create never lets lower-priority work overtake. */
  decisions: Decision[];
  /**
   * Surplus workers to shut down, one entry each. Booting ones no container needs always go;
   * idle ones only when maxInstances, maxHourlySpend or the quota binds (to make room for
   * waiting work): otherwise timeoutIdle decides, so a burst of work a minute later finds them.
   */
  shutdowns: Array<{ instanceType: string; state: 'booting' | 'idle' }>;
  /** The limit that stopped the pass early, if one did (for logs and metrics). */
  boundBy: string | null;
}

export function plan(pending: readonly Container[], instanceTypes: Readonly<Record<string, InstanceType>>, pool: PoolPicture, limits: Limits): Plan {
  const decisions: Decision[] = [];
  const idle = { ...pool.idle };
  const unallocated = { ...pool.unallocated };
  let instances = pool.instances;
  let spend = pool.hourlySpend;
  let active = pending.filter((container) => container.state === 'running' || container.state === 'locked').length;
  let boundBy: string | null = null;
  let concurrencyBound = false;
  let capacityBound = false;
  // Types still wanted by containers the pass did not get to; their workers are not surplus.
  const wantedLater = new Set<string>();

  for (const container of pending) {
    if (container.state !== 'queued') continue;
    const choice = chooseInstanceType(container.constraints, instanceTypes);
    if (!choice.ok) {
      decisions.push({ kind: 'fail', uuid: container.uuid, reason: choice.reason });
      continue;
    }
    const type = choice.instanceType;
    if (concurrencyBound) {
      wantedLater.add(type.name);
      continue;
    }
    if (limits.maxConcurrentContainers !== null && active >= limits.maxConcurrentContainers) {
      boundBy ??= 'maxConcurrentContainers';
      concurrencyBound = true;
      wantedLater.add(type.name);
      continue;
    }
    if (capacityBound) {
      // Higher-priority work waits for room (maxInstances, spend, quota): nothing lower may take
      // an instance, and idle ones are shut down below to make that room.
      wantedLater.add(type.name);
      continue;
    }
    if ((idle[type.name] ?? 0) > 0) {
      // Once creates are bound only by something that shutting down would not fix (a create in
      // flight, a throttle), this takes nothing from higher-priority work: that work found no
      // idle or coming worker of its own type, so it needs a create, not this worker.
      decisions.push({ kind: 'start', uuid: container.uuid, instanceType: type.name });
      idle[type.name]! -= 1;
      unallocated[type.name]! -= 1;
      active++;
      continue;
    }
    if ((unallocated[type.name] ?? 0) > 0) {
      // A worker of its type is on its way (creating or booting): wait for it, create nothing.
      unallocated[type.name]! -= 1;
      active++;
      continue;
    }
    if (boundBy !== null) {
      // Creates stopped at a higher-priority container: lower-priority work must not get one first.
      wantedLater.add(type.name);
      continue;
    }
    const refusal =
      instances >= limits.maxInstances
        ? 'maxInstances'
        : limits.maxHourlySpend !== null && spend + type.price > limits.maxHourlySpend
          ? 'maxHourlySpend'
          : pool.atQuota
            ? 'at quota'
            : pool.createRefusal(type.name);
    if (refusal !== null) {
      boundBy = refusal;
      // Only these are freed by shutting idle workers down; a create in flight or a throttle is not.
      capacityBound = refusal === 'maxInstances' || refusal === 'maxHourlySpend' || refusal === 'at quota';
      wantedLater.add(type.name);
      continue;
    }
    decisions.push({ kind: 'create', instanceType: type.name, forUuid: container.uuid });
    instances++;
    spend += type.price;
    active++;
  }

  const shutdowns: Plan['shutdowns'] = [];
  for (const [name, count] of Object.entries(unallocated)) {
    if (count <= 0) continue;
    const booting = wantedLater.has(name) ? 0 : Math.min(count, pool.booting[name] ?? 0);
    for (let i = 0; i < booting; i++) shutdowns.push({ instanceType: name, state: 'booting' });
    const idleSurplus = capacityBound ? Math.min(count - booting, idle[name] ?? 0) : 0;
    for (let i = 0; i < idleSurplus; i++) shutdowns.push({ instanceType: name, state: 'idle' });
  }
  return { decisions, shutdowns, boundBy };
}
