// All the scheduler sees of the pool (what Arvados' scheduler sees of its worker pool): a picture
// to plan against, and the few commands a pass gives. The pool owns every start and reports how it
// went through its notifications and the queue; the scheduler never waits on one.
import type { Unsubscribe } from '../pool/notifier.js';
import type { Resources } from '../pool/resources.js';
import type { Container } from '../queue/types.js';

/** A worker that takes a container now: idle, or running with room (when packing). */
export interface OpenWorker {
  workerId: string;
  instanceId: string;
  instanceType: string;
  free: Resources;
  /** Containers on it now (0: idle). */
  containers: number;
}

/** A worker on its way, with nothing on it: creating, booting, or found in a listing and not yet probed. */
export interface ComingWorker {
  workerId: string;
  instanceType: string;
  state: 'creating' | 'booting' | 'unknown';
}

export interface PoolPicture {
  open: readonly OpenWorker[];
  coming: readonly ComingWorker[];
  /** Every instance the pool knows, whatever its state. */
  instances: number;
  hourlySpend: number;
  /** Why a create of the type would be refused now, and how far the refusal reaches; null if it would go ahead. */
  createRefusal: (instanceType: string) => CreateRefusal | null;
}

/**
 * A create the pool would refuse. `instanceType`: this type alone (every launch config of it
 * refuses: paused, archived, broken, capacity back-off in its zone, its maxInstances; or a type the
 * pool does not know); creates of other types go on. `pool`: every create (no listing yet, stale
 * listings, creates frozen, quota, create throttle, create calls in flight, maxInstances, no
 * capacity anywhere in the account).
 */
export interface CreateRefusal {
  reason: string;
  scope: 'instanceType' | 'pool';
  /**
   * For a capacity back-off: how long creates of the type have been refused for capacity, from the
   * first error of the shortage (errors within one back-off of the last one's end continue it).
   * The plan lets a preemptible container fall back to on-demand types after a while of this.
   */
  refusedForMs?: number;
}

export interface WorkerPool {
  /** Called (coalesced) whenever something a pass depends on changed. */
  subscribe(listener: () => void): Unsubscribe;
  picture(): PoolPicture;
  /** Containers one instance may run at once. */
  readonly maxContainersPerInstance: number;
  /** Starts creating an instance of the type; false (and nothing done) if something forbids it now. */
  create(instanceType: string): boolean;
  /**
   * Starts a locked container on the worker, in the background; false (nothing done) if the
   * worker no longer takes it. The outcome reaches the queue and a notification, never the caller.
   */
  startContainer(container: Readonly<Container>, workerId: string): boolean;
  /** Stops the container wherever this process runs it (TERM, then KILL). */
  kill(uuid: string): void;
  /** Shuts down a worker that is still idle or booting and not held; false if it no longer is. */
  shutdownSurplus(workerId: string, state: 'idle' | 'booting'): boolean;
  /** Whether this process is acting on the container (starting, running, finishing or killing it). */
  hasContainer(uuid: string): boolean;
  /** Containers this process is acting on. */
  containers(): Iterable<string>;
  /** The pool has listed the cloud often enough to know the instance is gone. */
  isGone(instanceId: string): boolean;
}
