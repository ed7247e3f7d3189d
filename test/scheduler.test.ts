// The scheduler's cases, written once against a small driver and run twice: on the in-memory
// FakeWorkerPool, and on the real Pool over the stub cloud. Both use the real Dispatcher and a
// real SQLite queue on vitest's fake timers; nothing boots and no container ends until the case says.
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../src/clock.js';
import type { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import type { ContainerSpec } from '../src/queue/types.js';
import { Dispatcher } from '../src/scheduler/dispatcher.js';
import type { WorkerPool } from '../src/scheduler/worker-pool.js';
import { DispatchHarness, queuePath, spec } from './support/dispatch-harness.js';
import { FakeWorkerPool } from './support/fake-worker-pool.js';
import { instanceTypeFixture } from './support/fixtures.js';
import { advance, createStub, useFakeClock } from './support/pool-harness.js';

// The large type holds 8 one-vCPU containers at 0.02 each, the small 2 at 0.025: packing picks large.
const types = {
  small: instanceTypeFixture('small', { vcpus: 2, ramMiB: 4096, price: 0.05 }),
  large: instanceTypeFixture('large', { vcpus: 8, ramMiB: 16384, price: 0.16 }),
};

interface DriverOptions {
  maxInstances?: number;
  maxConcurrentContainers?: number | null;
  maxContainersPerInstance?: number;
}

/** What a case may do and see, whichever pool runs under the dispatcher. */
interface SchedulerDriver {
  readonly queue: SqliteQueue;
  readonly pool: WorkerPool;
  readonly dispatcher: Dispatcher;
  submit(overrides?: Partial<ContainerSpec>): string;
  /** Creates of the type fail for want of capacity from now on; the pool backs off that type. */
  noCapacityFor(instanceType: string): void;
  /** Lets fake time pass: passes run and creates are answered; nothing boots, nothing ends. */
  advance(ms: number): Promise<void>;
  /** Every instance created so far passes its boot probe, and passes put it to use. */
  bootAll(): Promise<void>;
  /** The running container exits with the code on its instance, and the queue completes it. */
  finish(uuid: string, exitCode?: number): Promise<void>;
  /** Instance types of the creates the pool accepted, in order. */
  creates(): string[];
  /** create() calls the dispatcher made, accepted or not. */
  createCalls(): number;
  /** Containers started on an instance, in order (a uuid twice: started twice). */
  starts(): string[];
  /** Surplus workers the pass shut down. */
  shutdowns(): number;
  /** The container was killed where it ran and runs no more. */
  killed(uuid: string): boolean;
  liveInstances(): number;
  peakInstances(): number;
  stop(): void;
}

const settings = (options: DriverOptions) => ({
  pollInterval: 1_000,
  maxConcurrentContainers: options.maxConcurrentContainers ?? null,
  maxHourlySpend: null,
  maxAttempts: 3,
  maxStartsPerPass: 500,
});

class FakeDriver implements SchedulerDriver {
  readonly queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3, clock: systemClock });
  readonly pool: FakeWorkerPool;
  readonly dispatcher: Dispatcher;
  private calls = 0;

  constructor(options: DriverOptions) {
    const maxInstances = options.maxInstances ?? 10;
    this.pool = new FakeWorkerPool({ queue: this.queue, instanceTypes: types, maxInstances, maxContainersPerInstance: options.maxContainersPerInstance ?? 1 });
    const create = this.pool.create.bind(this.pool);
    this.pool.create = (type) => {
      this.calls++;
      return create(type);
    };
    this.dispatcher = new Dispatcher({ queue: this.queue, pool: this.pool, instanceTypes: types, settings: settings(options), maxInstances, logger: pino({ level: 'silent' }) });
    this.dispatcher.start();
  }

  submit(overrides: Partial<ContainerSpec> = {}): string {
    return this.queue.submit(spec(overrides)).uuid;
  }

  noCapacityFor(instanceType: string): void {
    this.pool.noCapacityFor.add(instanceType);
  }

  advance(ms: number): Promise<void> {
    return advance(ms);
  }

  async bootAll(): Promise<void> {
    for (const worker of this.pool.list()) if (worker.state === 'creating' || worker.state === 'booting') this.pool.boot(worker.id);
    await advance(1_000);
  }

  async finish(uuid: string, exitCode = 0): Promise<void> {
    this.pool.finish(uuid, exitCode);
    await advance(1_000);
  }

  creates = () => [...this.pool.creates];
  createCalls = () => this.calls;
  starts = () => this.pool.starts.map((start) => start.uuid);
  shutdowns = () => this.pool.shutdowns.length;
  killed = (uuid: string) => this.pool.kills.includes(uuid) && !this.pool.hasContainer(uuid);
  liveInstances = () => this.pool.list().length;
  peakInstances = () => this.pool.peakWorkers;

  stop(): void {
    this.dispatcher.stop();
    this.queue.close();
  }
}

/** Long enough that nothing boots or ends within a case unless the case says so. */
const untilToldMs = 24 * 3_600_000;

class RealDriver implements SchedulerDriver {
  readonly stub: StubCloud = createStub({ bootDelayMs: { min: untilToldMs, max: untilToldMs }, containerRunMs: untilToldMs });
  readonly harness: DispatchHarness;
  private readonly accepted: string[] = [];
  private readonly kills = new Set<string>();
  private calls = 0;
  private surplus = 0;

  constructor(options: DriverOptions) {
    this.harness = new DispatchHarness(this.stub, {
      instanceTypes: types,
      pool: {
        maxInstances: options.maxInstances ?? 10,
        maxRunningContainersPerInstance: options.maxContainersPerInstance ?? 1,
        // The fake has no create-ops limit; the pool's would only spread creates over passes.
        maxConcurrentInstanceCreateOps: 64,
      },
      scheduler: settings(options),
    });
    const pool = this.harness.pool;
    const [create, kill, shutdownSurplus] = [pool.create.bind(pool), pool.kill.bind(pool), pool.shutdownSurplus.bind(pool)];
    pool.create = (type) => {
      this.calls++;
      const ok = create(type);
      if (ok) this.accepted.push(type);
      return ok;
    };
    pool.kill = (uuid) => {
      this.kills.add(uuid);
      kill(uuid);
    };
    pool.shutdownSurplus = (workerId, state) => {
      const ok = shutdownSurplus(workerId, state);
      if (ok) this.surplus++;
      return ok;
    };
    this.harness.start();
  }

  get queue(): SqliteQueue {
    return this.harness.queue;
  }

  get pool(): WorkerPool {
    return this.harness.pool;
  }

  get dispatcher(): Dispatcher {
    return this.harness.dispatcher;
  }

  submit(overrides: Partial<ContainerSpec> = {}): string {
    return this.queue.submit(spec(overrides)).uuid;
  }

  noCapacityFor(instanceType: string): void {
    this.stub.faults.capacityErrorTypes = [instanceType];
  }

  advance(ms: number): Promise<void> {
    return advance(ms);
  }

  async bootAll(): Promise<void> {
    const now = Date.now();
    for (const { id } of this.stub.liveInstances()) {
      const vm = this.stub.getVm(id)!;
      vm.bootAt = Math.min(vm.bootAt, now);
    }
    const coming = () => {
      const counts = this.harness.pool.countByState();
      return counts.creating + counts.booting + counts.unknown;
    };
    if (!(await this.harness.runUntil(() => coming() === 0, 30_000, 100))) throw new Error('instances did not come up');
    await advance(1_000);
  }

  async finish(uuid: string, exitCode = 0): Promise<void> {
    const instanceId = this.queue.get(uuid)?.instanceId;
    const vm = instanceId ? this.stub.getVm(instanceId) : undefined;
    if (vm?.containers[uuid]?.state !== 'running') throw new Error(`${uuid} is not running on a VM`);
    this.stub.setContainers(vm.id, { ...vm.containers, [uuid]: { state: 'exited', exitCode } });
    if (!(await this.harness.runUntil(() => this.queue.get(uuid)?.state === 'complete', 30_000, 100))) throw new Error(`${uuid} did not complete`);
    await advance(1_000);
  }

  creates = () => [...this.accepted];
  createCalls = () => this.calls;
  starts = () => [...this.harness.starts].flatMap(([uuid, n]) => Array.from({ length: n }, () => uuid));
  shutdowns = () => this.surplus;
  killed = (uuid: string): boolean => {
    const instanceId = this.queue.get(uuid)?.instanceId;
    const onVm = instanceId ? this.stub.getVm(instanceId)?.containers[uuid] : undefined;
    return this.kills.has(uuid) && onVm?.state !== 'running' && !this.harness.pool.hasContainer(uuid);
  };
  liveInstances = () => this.stub.liveCount();
  peakInstances = () => this.stub.peakLiveCount;

  stop(): void {
    this.harness.stop();
  }
}

const drivers = [
  { name: 'in-memory FakeWorkerPool', make: (options: DriverOptions): SchedulerDriver => new FakeDriver(options) },
  { name: 'real Pool on the stub cloud', make: (options: DriverOptions): SchedulerDriver => new RealDriver(options) },
];

const running = (d: SchedulerDriver) => d.queue.list({ states: ['running'] }).map((container) => container.uuid);

/** Finishes whatever runs, one at a time, until nothing does; checks `each` after every step. */
async function drain(d: SchedulerDriver, each: () => void = () => {}): Promise<void> {
  for (let step = 0; step < 100; step++) {
    const [next] = running(d);
    if (next === undefined) return;
    await d.finish(next);
    each();
  }
  throw new Error('containers kept running');
}

beforeEach(useFakeClock);

describe.each(drivers)('scheduler on the $name', ({ make }) => {
  let d: SchedulerDriver;
  const start = (options: DriverOptions = {}): SchedulerDriver => (d = make(options));

  afterEach(() => {
    d?.stop();
    vi.useRealTimers();
  });

  it('one queued container and a slow boot: exactly one create', async () => {
    start();
    const uuid = d.submit();
    await d.advance(30_000);
    expect(d.creates()).toEqual(['small']);
    expect(d.queue.get(uuid)?.state).toBe('queued');
    expect(d.dispatcher.passes).toBeGreaterThanOrEqual(25);
    await d.bootAll();
    expect(d.queue.get(uuid)).toMatchObject({ state: 'running', attempts: 1 });
    await d.finish(uuid, 0);
    expect(d.queue.get(uuid)).toMatchObject({ state: 'complete', exitCode: 0 });
    expect(d.creates()).toEqual(['small']);
    expect(d.starts()).toEqual([uuid]);
  });

  it('priority: with maxInstances 1, a priority-10 container submitted after five priority-1 ones runs next', async () => {
    start({ maxInstances: 1 });
    const low = Array.from({ length: 5 }, () => d.submit({ priority: 1 }));
    await d.advance(5_000);
    await d.bootAll();
    const [first, ...others] = running(d);
    expect(others).toEqual([]);
    expect(low).toContain(first);
    const high = d.submit({ priority: 10 });
    await d.advance(5_000);
    // Nothing preempted, no second instance: it waits for the one there is.
    expect(d.starts()).toEqual([first]);
    await d.finish(first!);
    expect(running(d)).toEqual([high]);
    await drain(d);
    expect(d.starts()).toHaveLength(6);
    expect(d.starts()[1]).toBe(high);
    expect(d.queue.list({ states: ['complete'] })).toHaveLength(6);
    expect(d.creates()).toEqual(['small']);
    expect(d.peakInstances()).toBe(1);
  });

  it('maxConcurrentContainers 3 with 6 queued: never more than 3 running, all complete', async () => {
    start({ maxInstances: 10, maxConcurrentContainers: 3 });
    for (let i = 0; i < 6; i++) d.submit();
    await d.advance(5_000);
    expect(d.creates()).toHaveLength(3);
    await d.bootAll();
    expect(running(d)).toHaveLength(3);
    let peak = 0;
    await drain(d, () => {
      peak = Math.max(peak, running(d).length + d.queue.list({ states: ['locked'] }).length);
    });
    expect(peak).toBe(3);
    expect(d.queue.list({ states: ['complete'] })).toHaveLength(6);
    expect(new Set(d.starts()).size).toBe(6);
    expect(d.starts()).toHaveLength(6);
    expect(d.creates()).toHaveLength(3);
  });

  it('a cancelled running container is killed, and its instance takes the next one', async () => {
    start();
    const uuid = d.submit();
    await d.advance(2_000);
    await d.bootAll();
    expect(d.queue.get(uuid)?.state).toBe('running');
    d.queue.cancel(uuid);
    await d.advance(5_000);
    expect(d.killed(uuid)).toBe(true);
    expect(d.queue.get(uuid)?.state).toBe('cancelled');
    const next = d.submit();
    await d.advance(3_000);
    expect(d.queue.get(next)?.state).toBe('running');
    expect(d.creates()).toHaveLength(1);
  });

  it('a container no instance type fits fails at once, naming the constraint', async () => {
    start();
    const uuid = d.submit({ constraints: { vcpus: 64, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } });
    await d.advance(200);
    expect(d.queue.get(uuid)?.state).toBe('failed');
    expect(d.queue.get(uuid)?.reason).toMatch(/64 vCPUs/);
    expect(d.createCalls()).toBe(0);
  });

  it('packing 8 per instance: 40 one-vCPU containers on the 8-vCPU type create 5 instances', async () => {
    start({ maxInstances: 10, maxContainersPerInstance: 8 });
    for (let i = 0; i < 40; i++) d.submit();
    await d.advance(5_000);
    expect(d.creates()).toEqual(Array(5).fill('large'));
    await d.bootAll();
    const perInstance = new Map<string, number>();
    for (const container of d.queue.list({ states: ['running'] })) {
      perInstance.set(container.instanceId!, (perInstance.get(container.instanceId!) ?? 0) + 1);
    }
    expect([...perInstance.values()]).toEqual([8, 8, 8, 8, 8]);
    expect(d.creates()).toHaveLength(5);
    expect(d.peakInstances()).toBe(5);
  });

  it('the pass never creates more than maxInstances', async () => {
    start({ maxInstances: 3 });
    for (let i = 0; i < 10; i++) d.submit();
    await d.advance(10_000);
    expect(d.creates()).toHaveLength(3);
    // The plan stops at the limit itself: it does not ask the pool and get refused.
    expect(d.createCalls()).toBe(3);
    await d.bootAll();
    expect(running(d)).toHaveLength(3);
    await drain(d, () => expect(d.liveInstances()).toBeLessThanOrEqual(3));
    expect(d.queue.list({ states: ['complete'] })).toHaveLength(10);
    expect(d.createCalls()).toBe(3);
    expect(d.peakInstances()).toBe(3);
  });

  it('a container cancelled while its instance boots: the booting instance is kept, and the next arrival starts there', async () => {
    start();
    const uuid = d.submit();
    await d.advance(5_000);
    expect(d.creates()).toEqual(['small']);
    d.queue.cancel(uuid);
    await d.advance(5_000);
    expect(d.shutdowns()).toBe(0);
    const next = d.submit();
    await d.advance(5_000);
    expect(d.creates()).toEqual(['small']);
    await d.bootAll();
    expect(d.queue.get(next)?.state).toBe('running');
    expect(d.starts()).toEqual([next]);
  });

  it('one type out of capacity holds back only the work that needs it: a lower-priority container of another type runs', async () => {
    start();
    d.noCapacityFor('large');
    const high = d.submit({ priority: 10, constraints: { vcpus: 8, ramMiB: 8192, scratchGiB: 0, gpus: 0, preemptible: false } });
    // The real pool's back-off (quotaErrorTTL, 60 s) starts with the first large create the cloud refuses.
    await d.advance(5_000);
    const low = d.submit({ priority: 1 });
    // Within that back-off, not only in a gap between two of them.
    await d.advance(30_000);
    expect(d.creates().filter((type) => type !== 'large')).toEqual(['small']);
    await d.advance(5 * 60_000);
    // The real pool tries large again each time its back-off ends (and the cloud refuses); the fake refuses it outright.
    expect(d.creates().filter((type) => type !== 'large')).toEqual(['small']);
    await d.bootAll();
    expect(d.queue.get(low)?.state).toBe('running');
    await d.finish(low);
    expect(d.queue.get(low)?.state).toBe('complete');
    expect(d.queue.get(high)?.state).toBe('queued');
    expect(d.starts()).toEqual([low]);
  });
});
