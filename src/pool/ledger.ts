// The one record of what runs where: each container this process acts on, the instance it is on,
// and what it takes of that instance. Free room per instance is derived from it, kept as running
// sums so a pass over thousands of instances reads it without adding anything up.
import type { Actor } from 'xstate';
import type { ContainerMachine } from '../../machines/container.js';
import { minus, noResources, plus, type Resources } from './resources.js';

export interface Allocation {
  readonly uuid: string;
  readonly workerId: string;
  readonly instanceId: string;
  readonly instanceType: string;
  readonly demand: Resources;
  readonly actor: Actor<ContainerMachine>;
  /** Whether it still holds the instance's resources (it has not exited yet). */
  holds: boolean;
}

interface WorkerShare {
  uuids: Set<string>;
  /** Allocations that hold resources, and what they hold together. */
  holding: number;
  used: Resources;
}

export class AllocationLedger {
  private readonly byUuid = new Map<string, Allocation>();
  private readonly byWorker = new Map<string, WorkerShare>();

  get size(): number {
    return this.byUuid.size;
  }

  get(uuid: string): Allocation | undefined {
    return this.byUuid.get(uuid);
  }

  all(): IterableIterator<Allocation> {
    return this.byUuid.values();
  }

  /** Every allocation on the worker, holding or not. */
  on(workerId: string): Allocation[] {
    const share = this.byWorker.get(workerId);
    if (!share) return [];
    return [...share.uuids].map((uuid) => this.byUuid.get(uuid)).filter((a): a is Allocation => a !== undefined);
  }

  /** Allocations on the worker, holding or not (without building the list). */
  countOn(workerId: string): number {
    return this.byWorker.get(workerId)?.uuids.size ?? 0;
  }

  /** Containers holding the worker's resources (starting, unconfirmed, running or being killed). */
  holdingOn(workerId: string): number {
    return this.byWorker.get(workerId)?.holding ?? 0;
  }

  usedOn(workerId: string): Resources {
    return this.byWorker.get(workerId)?.used ?? noResources;
  }

  add(allocation: Allocation): void {
    if (this.byUuid.has(allocation.uuid)) throw new Error(`container ${allocation.uuid} is already allocated`);
    this.byUuid.set(allocation.uuid, allocation);
    let share = this.byWorker.get(allocation.workerId);
    if (!share) {
      share = { uuids: new Set(), holding: 0, used: noResources };
      this.byWorker.set(allocation.workerId, share);
    }
    share.uuids.add(allocation.uuid);
    if (allocation.holds) this.hold(share, allocation.demand, 1);
  }

  /** The container exited: its resources are free though it is still being finished. Returns whether anything changed. */
  release(uuid: string): boolean {
    const allocation = this.byUuid.get(uuid);
    if (!allocation?.holds) return false;
    allocation.holds = false;
    const share = this.byWorker.get(allocation.workerId);
    if (share) this.hold(share, allocation.demand, -1);
    return true;
  }

  remove(uuid: string): Allocation | undefined {
    const allocation = this.byUuid.get(uuid);
    if (!allocation) return undefined;
    this.release(uuid);
    this.byUuid.delete(uuid);
    const share = this.byWorker.get(allocation.workerId);
    if (share) {
      share.uuids.delete(uuid);
      if (share.uuids.size === 0) this.byWorker.delete(allocation.workerId);
    }
    return allocation;
  }

  private hold(share: WorkerShare, demand: Resources, sign: 1 | -1): void {
    share.holding += sign;
    share.used = sign === 1 ? plus(share.used, demand) : minus(share.used, demand);
  }
}
