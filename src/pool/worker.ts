// Drover's handle on one instance: its actor, its SSH executor and what the pool remembers about
// it between listings (when it was last confirmed, and its recent transitions).
import type { Actor, SnapshotFrom } from 'xstate';
import type { InstanceType } from '../cloud/driver.js';
import type { Executor } from '../ssh/executor.js';
import { idleBehaviors, lifecycles, type IdleBehavior, type InstanceMachine, type Lifecycle } from '../../machines/instance.js';

export type WorkerSnapshot = SnapshotFrom<InstanceMachine>;

export interface TransitionRecord {
  at: number;
  from: Lifecycle | null;
  to: Lifecycle;
  reason: string;
}

/** Transitions kept per instance: enough to explain its last few minutes to an operator. */
export const historyLength = 20;

export class Worker {
  executor: Executor | null = null;
  /** Clock ms of the last fact the pool learned about the instance (created, listed). */
  updatedAt: number;
  readonly appearedAt: number;
  /** Successive listings, each begun after updatedAt, that did not show the instance. */
  missedListings = 0;
  /** When the first of those listings began. */
  missingSince = 0;
  lifecycle: Lifecycle | null = null;
  idleBehavior: IdleBehavior | null = null;
  /** Idle with behaviour run: waiting for work, counted by the pool's idle policy. */
  waitingForWork = false;
  readonly history: TransitionRecord[] = [];
  /** Clock ms of the last time the instance answered over its executor at all. */
  lastContactAt = 0;
  /** Clock ms it was first seen booted (by this daemon); null before. */
  bootedAt: number | null = null;
  /** Clock ms it entered shutdown; null before. */
  shutdownAt: number | null = null;

  constructor(
    readonly id: string,
    readonly instanceType: InstanceType,
    readonly actor: Actor<InstanceMachine>,
    now: number,
    /** The launch config it was created from (its tag, for one found in a listing); null if unknown. */
    readonly launchConfigId: string | null,
  ) {
    this.updatedAt = now;
    this.appearedAt = now;
  }

  get snapshot(): WorkerSnapshot {
    return this.actor.getSnapshot();
  }

  record(transition: TransitionRecord): void {
    this.history.push(transition);
    if (this.history.length > historyLength) this.history.shift();
  }
}

export function lifecycleOf(snapshot: WorkerSnapshot): Lifecycle {
  // Every lifecycle state carries its name as a tag; arriving (transient) is never observed.
  return lifecycles.find((lifecycle) => snapshot.hasTag(lifecycle)) ?? 'failed';
}

/** The behaviour the instance acts on: `drain` once its lifetime drains it, though its tag may still say run. */
export function idleBehaviorOf(snapshot: WorkerSnapshot): IdleBehavior | null {
  if (snapshot.hasTag('lifetime:draining')) return 'drain';
  return idleBehaviors.find((behavior) => snapshot.hasTag(`behavior:${behavior}`)) ?? null;
}
