// An in-memory WorkerPool for scheduler tests: no XState, no SSH, no cloud. Workers have a type and
// a state; their free room is what their type holds minus what runs on them. Creates are answered
// at once (or when the test says), boots and container exits happen when the test says, and every
// start and exit goes to the real queue it is given, so the durable queue stays the truth.
import type { InstanceType } from '../../src/cloud/driver.js';
import { Notifier, type Unsubscribe } from '../../src/pool/notifier.js';
import { capacityOf, demandOf, fitsIn, minus, type Resources } from '../../src/pool/resources.js';
import type { Container, ContainerQueue } from '../../src/queue/types.js';
import type { ComingWorker, CreateRefusal, OpenWorker, PoolPicture, WorkerPool } from '../../src/scheduler/worker-pool.js';

export type FakeWorkerState = 'creating' | 'booting' | 'idle' | 'running';

export interface FakeWorker {
  id: string;
  instanceId: string;
  type: InstanceType;
  /** creating → booting (the cloud answered) → up (booted); idle or running follows from `containers`. */
  phase: 'creating' | 'booting' | 'up';
  /** What runs (or is starting) on it: uuid → demand. */
  containers: Map<string, Resources>;
}

export interface FakeWorkerPoolOptions {
  queue: ContainerQueue;
  instanceTypes: Readonly<Record<string, InstanceType>>;
  maxInstances: number;
  maxContainersPerInstance?: number;
  /** Leave creates in 'creating' until created(workerId); default: the cloud answers at once. */
  holdCreates?: boolean;
  /** Leave started containers locked until reportStarted(uuid); default: running at once. */
  holdStarts?: boolean;
}

export class FakeWorkerPool implements WorkerPool {
  readonly maxContainersPerInstance: number;
  /** Instance types of the creates accepted, in order. */
  readonly creates: string[] = [];
  /** Containers started, in order, with the worker each went to. */
  readonly starts: Array<{ uuid: string; workerId: string }> = [];
  readonly kills: string[] = [];
  readonly shutdowns: Array<{ workerId: string; state: 'idle' | 'booting' }> = [];
  /** When set, every create is refused (and the picture says why). */
  refuseCreates: string | null = null;
  /** Types out of capacity: their creates are refused, for the type alone, as the pool's capacity back-off does. */
  readonly noCapacityFor = new Set<string>();
  peakWorkers = 0;
  private readonly workers = new Map<string, FakeWorker>();
  private readonly placed = new Map<string, FakeWorker>();
  private readonly notifier = new Notifier();
  private nextId = 1;

  constructor(private readonly options: FakeWorkerPoolOptions) {
    this.maxContainersPerInstance = options.maxContainersPerInstance ?? 1;
  }

  subscribe(listener: () => void): Unsubscribe {
    return this.notifier.subscribe(listener);
  }

  picture(): PoolPicture {
    const open: OpenWorker[] = [];
    const coming: ComingWorker[] = [];
    let hourlySpend = 0;
    for (const worker of this.workers.values()) {
      hourlySpend += worker.type.price;
      const state = stateOf(worker);
      if (state === 'creating' || state === 'booting') {
        coming.push({ workerId: worker.id, instanceType: worker.type.name, state });
      } else if (worker.containers.size < this.maxContainersPerInstance) {
        const { id: workerId, instanceId, type } = worker;
        open.push({ workerId, instanceId, instanceType: type.name, free: freeOn(worker), containers: worker.containers.size });
      }
    }
    return { open, coming, instances: this.workers.size, hourlySpend, createRefusal: (name) => this.refusal(name) };
  }

  create(instanceType: string): boolean {
    const type = this.options.instanceTypes[instanceType];
    if (!type || this.refusal(instanceType) !== null) return false;
    const n = this.nextId++;
    const worker: FakeWorker = { id: `fake-worker-${n}`, instanceId: `fake-i-${n}`, type, phase: 'creating', containers: new Map() };
    this.workers.set(worker.id, worker);
    this.creates.push(instanceType);
    this.peakWorkers = Math.max(this.peakWorkers, this.workers.size);
    // Like the stub cloud, the create call is answered after the pass, not inside it.
    if (!this.options.holdCreates) queueMicrotask(() => this.created(worker.id));
    this.notifier.notify();
    return true;
  }

  /** The cloud answered the create: the worker is booting. */
  created(workerId: string): void {
    const worker = this.workers.get(workerId);
    if (worker?.phase !== 'creating') return;
    worker.phase = 'booting';
    this.notifier.notify();
  }

  /** The worker passed its boot probe: it takes work now. */
  boot(workerId: string): void {
    const worker = this.workers.get(workerId);
    if (!worker || worker.phase === 'up') throw new Error(`fake pool: ${workerId} is not coming`);
    worker.phase = 'up';
    this.notifier.notify();
  }

  startContainer(container: Readonly<Container>, workerId: string): boolean {
    const worker = this.workers.get(workerId);
    if (!worker || worker.phase !== 'up' || this.placed.has(container.uuid)) return false;
    const demand = demandOf(container.constraints);
    if (worker.containers.size >= this.maxContainersPerInstance || !fitsIn(demand, freeOn(worker))) return false;
    worker.containers.set(container.uuid, demand);
    this.placed.set(container.uuid, worker);
    this.starts.push({ uuid: container.uuid, workerId });
    if (!this.options.holdStarts) this.reportStarted(container.uuid);
    this.notifier.notify();
    return true;
  }

  /** The start went through: the queue records the container running on the worker's instance. */
  reportStarted(uuid: string): void {
    const worker = this.placed.get(uuid);
    if (!worker) throw new Error(`fake pool: ${uuid} was not started`);
    this.options.queue.markRunning(uuid, worker.instanceId, worker.type.name);
  }

  /** The container exits with the code: recorded, completed, and its room freed. */
  finish(uuid: string, exitCode: number): void {
    if (!this.placed.has(uuid)) throw new Error(`fake pool: ${uuid} is not on a worker`);
    this.options.queue.recordExit(uuid, exitCode);
    this.options.queue.complete(uuid, exitCode, '');
    this.remove(uuid);
  }

  kill(uuid: string): void {
    this.kills.push(uuid);
    this.remove(uuid);
  }

  shutdownSurplus(workerId: string, state: 'idle' | 'booting'): boolean {
    const worker = this.workers.get(workerId);
    if (!worker || stateOf(worker) !== state) return false;
    this.workers.delete(workerId);
    this.shutdowns.push({ workerId, state });
    this.notifier.notify();
    return true;
  }

  hasContainer(uuid: string): boolean {
    return this.placed.has(uuid);
  }

  containers(): Iterable<string> {
    return [...this.placed.keys()];
  }

  /** This pool knows its whole world: an instance it has no worker for is gone. */
  isGone(instanceId: string): boolean {
    return !this.hasInstance(instanceId);
  }

  hasInstance(instanceId: string): boolean {
    return [...this.workers.values()].some((worker) => worker.instanceId === instanceId);
  }

  /** Every worker, in creation order, with its state. */
  list(): Array<FakeWorker & { state: FakeWorkerState }> {
    return [...this.workers.values()].map((worker) => ({ ...worker, state: stateOf(worker) }));
  }

  private refusal(instanceType: string): CreateRefusal | null {
    if (!this.options.instanceTypes[instanceType]) return { reason: `unknown instance type ${instanceType}`, scope: 'instanceType' };
    if (this.refuseCreates !== null) return { reason: this.refuseCreates, scope: 'pool' };
    if (this.workers.size >= this.options.maxInstances) return { reason: `${this.workers.size} instances (maxInstances)`, scope: 'pool' };
    if (this.noCapacityFor.has(instanceType)) return { reason: `no capacity for ${instanceType}`, scope: 'instanceType' };
    return null;
  }

  private remove(uuid: string): void {
    const worker = this.placed.get(uuid);
    if (!worker) return;
    worker.containers.delete(uuid);
    this.placed.delete(uuid);
    this.notifier.notify();
  }
}

function stateOf(worker: FakeWorker): FakeWorkerState {
  if (worker.phase !== 'up') return worker.phase;
  return worker.containers.size > 0 ? 'running' : 'idle';
}

function freeOn(worker: FakeWorker): Resources {
  let free = capacityOf(worker.type);
  for (const demand of worker.containers.values()) free = minus(free, demand);
  return free;
}
