// The pool: keeps one worker actor per cloud instance, in a registry of root actors (spawning
// thousands of children of one machine is quadratic), and wires the pool machine and the instance
// machine to the cloud driver, the executors, the clock and the logs.
import { randomUUID } from 'node:crypto';
import { createActor, fromPromise, type Actor } from 'xstate';
import type { Logger } from 'pino';
import { systemClock, withTimeout, type Clock } from '../clock.js';
import { tagKeys, type CloudDriver, type CloudInstance, type InstanceType, type Tags } from '../cloud/driver.js';
import { errorClass, RateLimitError } from '../cloud/errors.js';
import { defaultLaunchConfig, type LaunchConfigSettings } from '../config/launch-configs.js';
import { createRequest, newInstanceSecret } from '../cloud/init-script.js';
import type { PoolSettings } from '../config/schema.js';
import type { Executor, ExecutorTarget } from '../ssh/executor.js';
import { InstanceSecretMismatchError, InstanceSecretMissingError } from '../ssh/instance-secret.js';
import {
  defaultMaxInstanceLifetime,
  defaultTimeoutTERM,
  idleBehaviors,
  instanceMachine,
  type CreateInstanceInput,
  type IdleBehavior,
  type InstanceInput,
  type InstanceRef,
  type Lifecycle,
  type ProbeInput,
  type ProbeResult,
} from '../../machines/instance.js';
import type { StartOutcome } from '../../machines/container.js';
import type { ComingWorker, CreateRefusal, OpenWorker, PoolPicture, WorkerPool } from '../scheduler/worker-pool.js';
import type { Container } from '../queue/types.js';
import { Attempts, type AttemptRecords, type Placement } from './attempts.js';
import { capacityOf, demandOf, fitsIn, minus, noResources, plus, type Resources } from './resources.js';
import { poolMachine, quotaQuietPeriodMs, throttledOperations, type ListingResult, type PoolMachine, type ThrottledOperation } from '../../machines/pool.js';
import { formatDuration } from '../config/duration.js';
import { defaultRateLimitBackoffMs, responseTo } from './cloud-failures.js';
import { defaultIdlePolicy, idlePolicyOf, type IdlePolicy } from './idle-policy.js';
import { Notifier, type Unsubscribe } from './notifier.js';
import { noPoolObserver, type PoolObserver, type ProbeOutcome } from './pool-observer.js';
import {
  defaultBootFailuresToBreak,
  defaultLaunchConfigHealthWindowMs,
  defaultLaunchConfigRetryIntervalMs,
  LaunchConfigs,
} from './launch-configs.js';
import type { LaunchConfigAction, LaunchConfigControl, LaunchConfigStateStore, LaunchConfigView } from './launch-config-view.js';
import { ProbeScheduler } from './probe-scheduler.js';
import { parseRunnerList } from './runner-list.js';
import { listCommand } from '../runner/deploy.js';
import { idleBehaviorOf, lifecycleOf, Worker, type TransitionRecord, type WorkerSnapshot } from './worker.js';
import type { CommandResult, RunOptions } from '../ssh/executor.js';
import { inspectOption, type ActorInspection } from '../inspect/actor-inspection.js';

/**
 * Listings in a row that must miss an instance before the pool forgets it, and then only if the
 * instance has not answered a probe since. Partial listings must not make a live instance vanish
 * from the counts, or the pool would create past maxInstances and rerun its containers (the
 * overprovisioning story in the seeds).
 */
export const forgetAfterMissedListings = 2;

/**
 * Listings in a row, from the first time it is asked about, that must not show an instance this
 * pool never had before it is judged gone (its containers then run elsewhere). With 5% of
 * instances left out of each listing, 5 misses in a row by chance happen once in 3 million.
 */
export const unseenGoneAfterListings = 5;

/** How long (listings) the pool remembers an instance as absent for isGone; a day at the default syncInterval. */
const absentKeptListings = 1_440;

/** Longest a single command on an instance may take before it counts as failed (a hung SSH session). */
export const commandTimeoutMs = 60_000;

/**
 * Starts of one container refused in a row before the container is failed: more than one broken
 * instance can refuse (each is drained after maxStartFailuresPerInstance), so it takes several
 * broken instances in a row to fail a container, and one bad container drains only a few.
 */
export const maxRefusalsPerContainer = 10;

/** How long a start whose answer was lost waits for a runner list to confirm it before it is requeued. */
export const uncertainStartDeadlineMs = 10 * 60_000;
/** How long a signalled container is given before it is signalled again (KILL from then on). */
export const killRetryMs = 30_000;
/** Why an instance that failed the secret check on first contact is shut down. */
export const secretMismatchReason = 'instance secret mismatch: not the VM this pool created';
/** One runner `wait` session blocks at most this long, well inside commandTimeoutMs. */
const watchSeconds = 25;

// A pool without a queue (tests of the pool alone): it knows no container, so it keeps none.
const noRecords: AttemptRecords = {
  get: () => undefined,
  liveOn: () => [],
  lock: () => false,
  unlock: () => {},
  markRunning: () => {},
  recordExit: () => {},
  complete: () => {},
  setLogTail: () => {},
  requeueOrFail: () => 'failed',
  fail: () => {},
};

export interface PoolOptions {
  poolName: string;
  driver: CloudDriver;
  executorFor: (target: ExecutorTarget) => Executor;
  settings: PoolSettings;
  instanceTypes: Readonly<Record<string, InstanceType>>;
  logger: Logger;
  clock?: Clock;
  /** The durable container records (the queue) that starts, exits and requeues are written to. */
  records?: AttemptRecords;
  /** Run images with docker on the instances. */
  docker?: boolean;
  /** Container starts in a row that may fail on one instance for its own reasons before it is drained (default 3). */
  maxStartFailuresPerInstance?: number;
  /** Readies a booted instance before its first runner `list` (e.g. installs the runner). */
  prepareInstance?: (executor: Executor, instance: CloudInstance) => Promise<void>;
  rateLimitBackoffMs?: number;
  /**
   * How new instances let the dispatcher in: the login user and the dispatcher's SSH public key,
   * installed with the instance secret by the init script passed to every create. Absent for
   * clouds whose instances need no installing (stub, loopback).
   */
  launch?: { username: string; sshPublicKey: string };
  /** Where each type is launched from; absent: one config per type with the driver's own settings. */
  launchConfigs?: readonly LaunchConfigSettings[];
  /** Keeps operators' pauses and archives of launch configs across restarts. */
  launchConfigStore?: LaunchConfigStateStore;
  /** Told of boot, shutdown and probe durations, vanished instances and first starts (the daemon's metrics); default nobody. */
  observer?: PoolObserver;
  /** The Stately inspector's choice of actors to watch (`inspect`); absent: no actor is created with an inspector. */
  inspection?: ActorInspection;
}

/** An instance that vanishes this soon after its boot counts against its launch config. */
export const earlyVanishMs = 10 * 60_000;

export interface InstanceView {
  workerId: string;
  instanceId: string | null;
  instanceType: string;
  providerType: string;
  price: number;
  address: string | null;
  state: Lifecycle;
  idleBehavior: IdleBehavior;
  running: string[];
  appearedAt: number;
  /** This pool created it (rather than finding it in a listing). */
  createdByPool: boolean;
  lastError: string | null;
  history: TransitionRecord[];
}

export interface PoolStatus {
  /** A listing has succeeded since start. */
  loaded: boolean;
  /** Listings have failed often enough in a row that creates are refused. */
  stale: boolean;
  /** Creates are refused because the instances are at the quota estimate. */
  atQuota: boolean;
  /** Why every create is frozen (freezePoolAfterBootFailures) until an operator resumes the pool; null if not. */
  frozen: string | null;
  /** Instances the quota is thought to allow (from quota errors and listings); null before any quota error. */
  quotaEstimate: number | null;
  throttled: ThrottledOperation[];
  /** Capacity scopes backing creates off, as "<instance type> in <zone>" ('*': any). */
  capacityExhausted: string[];
}

export class UnknownInstanceError extends Error {
  constructor(readonly instanceId: string) {
    super(`no instance ${instanceId} in this pool`);
  }
}

const unallocatedStates: ReadonlySet<Lifecycle> = new Set(['creating', 'booting', 'idle', 'unknown']);
const unprobedStates: ReadonlySet<Lifecycle> = new Set(['creating', 'shutdown', 'failed']);

export class Pool implements WorkerPool, LaunchConfigControl {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly workers = new Map<string, Worker>();
  private readonly byInstanceId = new Map<string, Worker>();
  private readonly byCreateToken = new Map<string, Worker>();
  private orphanInstances: CloudInstance[] = [];
  private readonly reportedOrphans = new Set<string>();
  /** Instances already logged as having no secret in their tags, so each is logged once. */
  private readonly reportedMissingSecrets = new Set<string>();
  private readonly launchConfigSet: LaunchConfigs;
  /** Live workers per launch config id (every worker until it is forgotten). */
  private readonly perLaunchConfig = new Map<string, number>();
  private readonly instancesOf = (id: string): number => this.perLaunchConfig.get(id) ?? 0;
  private readonly notifier = new Notifier();
  private readonly workerMachine;
  private readonly poolActor: Actor<PoolMachine>;
  private readonly probes: ProbeScheduler<Worker>;
  private lastPoolStatus = '';
  /**
   * Instances without a worker, by id: the successful listings from which each counts as absent.
   * One asked about (isGone) that the pool never had counts from that ask; one the pool forgot
   * counts as absent long enough already. Entries older than absentKeptListings are dropped.
   */
  private readonly absentSince = new Map<string, number>();
  /** Boots seen and boots failed (timed out, or vanished while booting) since start. */
  private readonly boots = { booted: 0, failed: 0 };
  /** The freeze in force has been logged as an error (once per freeze). */
  private frozenLogged = false;
  private stopped = false;
  private successfulListings = 0;
  private readonly attempts: Attempts;
  readonly maxContainersPerInstance: number;
  private readonly idlePolicy: IdlePolicy;
  /**
   * Idle workers that take work (behaviour run), by instance type: an instance going idle takes its
   * rank for the idle policy from it. A held or drained one waits for nobody's work, so it does not count.
   */
  private readonly idleByType = new Map<string, number>();
  private readonly observer: PoolObserver;

  constructor(private readonly options: PoolOptions) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger;
    this.observer = options.observer ?? noPoolObserver;
    const { settings } = options;
    this.maxContainersPerInstance = settings.maxRunningContainersPerInstance;
    this.idlePolicy = idlePolicyOf(settings.idlePolicy ?? defaultIdlePolicy, settings.timeoutIdle);
    this.attempts = new Attempts({
      records: options.records ?? noRecords,
      clock: this.clock,
      logger: this.logger,
      runnerCommand: settings.runnerCommand,
      docker: options.docker ?? false,
      run: (workerId, command) => this.runOnWorker(workerId, command),
      changed: (workerId) => this.allocationsChanged(workerId),
      startSettled: (workerId, outcome) => this.startSettled(workerId, outcome),
      uncertainDeadlineMs: uncertainStartDeadlineMs,
      killRetryMs,
      watchSeconds,
      watchRetryMs: Math.min(settings.probeInterval, 5_000),
      maxRefusals: maxRefusalsPerContainer,
      logTailBytes: settings.logTailBytes,
      firstStarted: (waitMs) => this.observer.containerStarted(waitMs / 1_000),
      inspection: options.inspection,
    });

    this.launchConfigSet = new LaunchConfigs({
      configs: options.launchConfigs ?? Object.keys(options.instanceTypes).map(defaultLaunchConfig),
      ...(options.launchConfigStore && { store: options.launchConfigStore }),
      clock: this.clock,
      logger: this.logger,
      retryIntervalMs: settings.launchConfigRetryInterval ?? defaultLaunchConfigRetryIntervalMs,
      healthWindowMs: settings.launchConfigHealthWindow ?? defaultLaunchConfigHealthWindowMs,
      bootFailuresToBreak: settings.bootFailuresToBreak ?? defaultBootFailuresToBreak,
      capacityBackoffMs: settings.quotaErrorTTL,
      changed: () => this.notifier.notify(),
      inspection: options.inspection,
    });

    this.workerMachine = instanceMachine.provide({
      delays: {
        timeoutBooting: settings.timeoutBooting,
        timeoutIdle: ({ context }) => this.idlePolicy.timeoutFor(context.instanceType, this.idleRankOf(context.workerId, context.instanceType)),
        timeoutProbe: settings.timeoutProbe,
        timeoutShutdown: settings.timeoutShutdown,
        timeoutTERM: settings.timeoutTERM ?? defaultTimeoutTERM,
      },
      actors: {
        createInstance: fromPromise<CloudInstance, CreateInstanceInput>(({ input }) => this.createInstance(input)),
        probeInstance: fromPromise<ProbeResult, ProbeInput>(({ input }) => this.probeInstance(input)),
        destroyInstance: fromPromise<void, InstanceRef>(({ input }) => this.destroyInstance(input)),
      },
      guards: {
        containersRunning: ({ context }) => this.attempts.ledger.holdingOn(context.workerId) > 0,
      },
      actions: {
        saveIdleBehavior: ({ context }, params: { idleBehavior: IdleBehavior }) => {
          if (context.instance) this.saveIdleBehavior(context.instance.id, params.idleBehavior);
        },
      },
    });

    this.poolActor = createActor(
      poolMachine.provide({
        delays: {
          syncInterval: settings.syncInterval,
          quotaQuietPeriod: ({ context }) => quotaQuietPeriodMs(settings.quotaErrorTTL, context.quota?.doublings ?? 0),
        },
        actors: { syncInstances: fromPromise<ListingResult>(() => this.syncInstances()) },
        actions: { notifyChanged: () => this.notifier.notify() },
      }),
      { clock: this.clock, input: { freezeAfterBootFailures: settings.freezePoolAfterBootFailures ?? null }, ...inspectOption(options.inspection?.observerFor({ kind: 'pool' })) },
    );

    this.probes = new ProbeScheduler<Worker>({
      clock: this.clock,
      probeIntervalMs: settings.probeInterval,
      maxProbesPerSecond: settings.maxProbesPerSecond,
      probeRateCeiling: settings.probeRateCeiling,
      targets: () => [...this.workers.values()].filter((worker) => !unprobedStates.has(worker.lifecycle ?? 'failed')),
      probe: (worker) => {
        if (this.workers.get(worker.id) === worker) worker.actor.send({ type: 'PROBE_DUE' });
      },
    });
  }

  start(): void {
    this.poolActor.subscribe(() => this.observePool());
    this.poolActor.start();
    this.probes.start();
  }

  stop(): void {
    this.stopped = true;
    this.probes.stop();
    this.poolActor.stop();
    // What runs goes on running: a restarted dispatcher adopts it from the queue and the runners.
    this.attempts.stop();
    for (const worker of [...this.workers.values()]) this.forget(worker);
    this.launchConfigSet.stop();
  }

  subscribe(subscriber: () => void): Unsubscribe {
    return this.notifier.subscribe(subscriber);
  }

  /** Starts creating an instance of the type; false (and nothing done) if something forbids it now. */
  create(instanceTypeName: string): boolean {
    const refusal = this.scopedCreateRefusal(instanceTypeName);
    if (refusal !== null) {
      this.logger.debug({ instanceType: instanceTypeName, refusal: refusal.reason, scope: refusal.scope }, 'create refused');
      return false;
    }
    const launchConfig = this.launchConfigSet.pick(instanceTypeName, this.instancesOf);
    // The refusal above asked the same configs: one of them takes it.
    if (launchConfig === null) return false;
    const createToken = randomUUID();
    const workerId = `create-${createToken}`;
    this.launchConfigSet.send(launchConfig.id, { type: 'CREATE_STARTED', at: this.clock.now(), workerId });
    this.spawn({ workerId, instanceType: instanceTypeName, idleBehavior: 'run', createToken }, launchConfig.id);
    return true;
  }

  /** Why a create of this type would be refused now, or null if it would go ahead. */
  createRefusal(instanceTypeName: string): string | null {
    return this.scopedCreateRefusal(instanceTypeName)?.reason ?? null;
  }

  /**
   * Why a create of this type would be refused now, and whether the refusal holds for this type
   * alone (its capacity back-off; '*' backs off every type, so the whole pool) or for every create.
   * Pool-wide refusals are checked first: they say more.
   */
  scopedCreateRefusal(instanceTypeName: string): CreateRefusal | null {
    if (!this.options.instanceTypes[instanceTypeName]) return { reason: `unknown instance type ${instanceTypeName}`, scope: 'instanceType' };
    const pool = this.poolActor.getSnapshot();
    const poolWide = (reason: string): CreateRefusal => ({ reason, scope: 'pool' });
    if (pool.matches({ listing: 'unloaded' })) return poolWide('no cloud listing has succeeded yet');
    if (pool.matches({ listing: 'stale' })) return poolWide('cloud listings are failing; the instance count cannot be trusted');
    if (pool.context.frozenBecause !== null) return poolWide(`creates frozen after ${pool.context.frozenBecause}; resume with POST /pool/resume`);
    const atQuota = this.quotaRefusal();
    if (atQuota !== null) return poolWide(atQuota);
    if (pool.matches({ throttle: { create: 'throttled' } })) return poolWide('create calls are rate-limited');
    const { maxConcurrentInstanceCreateOps, maxInstances } = this.options.settings;
    let creating = 0;
    for (const worker of this.workers.values()) if (worker.lifecycle === 'creating') creating++;
    if (creating >= maxConcurrentInstanceCreateOps) return poolWide(`${creating} create calls in flight (maxConcurrentInstanceCreateOps)`);
    if (this.workers.size >= maxInstances) return poolWide(`${this.workers.size} instances (maxInstances)`);
    const account = this.launchConfigSet.accountRefusal();
    if (account !== null) return poolWide(account);
    const refusal = this.launchConfigSet.typeRefusal(instanceTypeName, this.instancesOf);
    return refusal === null ? null : { ...refusal, scope: 'instanceType' };
  }

  /**
   * Workers of each type that will be free for new work soon without a new create: creating,
   * booting, idle and unknown, with idle behaviour run and nothing running or starting.
   */
  unallocated(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const worker of this.workers.values()) {
      if (!unallocatedStates.has(worker.lifecycle ?? 'failed') || worker.idleBehavior !== 'run') continue;
      if (this.attempts.ledger.countOn(worker.id) > 0) continue;
      counts[worker.instanceType.name] = (counts[worker.instanceType.name] ?? 0) + 1;
    }
    return counts;
  }

  countByState(): Record<Lifecycle, number> {
    const counts: Record<Lifecycle, number> = { creating: 0, unknown: 0, booting: 0, idle: 0, running: 0, shutdown: 0, failed: 0 };
    for (const worker of this.workers.values()) if (worker.lifecycle) counts[worker.lifecycle]++;
    return counts;
  }

  /** Instances the pool knows, of any state: instances().length without building the views. */
  instanceCount(): number {
    return this.workers.size;
  }

  instances(): InstanceView[] {
    return [...this.workers.values()].map((worker) => this.view(worker)).sort((a, b) => a.workerId.localeCompare(b.workerId));
  }

  instance(id: string): InstanceView | undefined {
    const worker = this.find(id);
    return worker ? this.view(worker) : undefined;
  }

  /** Instances that carry this pool's tag but a type this config does not know: listed, never counted or used. */
  orphans(): CloudInstance[] {
    return [...this.orphanInstances];
  }

  status(): PoolStatus {
    const pool = this.poolActor.getSnapshot();
    return {
      loaded: !pool.matches({ listing: 'unloaded' }),
      stale: pool.matches({ listing: 'stale' }),
      atQuota: this.quotaRefusal() !== null,
      quotaEstimate: pool.context.quota?.instances ?? null,
      throttled: throttledOperations.filter((operation) =>
        pool.matches({ throttle: { [operation]: 'throttled' } }),
      ),
      frozen: pool.context.frozenBecause,
      capacityExhausted: this.launchConfigSet.capacityBackingOff(),
    };
  }

  launchConfigs(): LaunchConfigView[] {
    return this.launchConfigSet.views(this.instancesOf);
  }

  /** Pauses, resumes or archives a launch config; archiving drains its instances. */
  changeLaunchConfig(id: string, action: LaunchConfigAction): LaunchConfigView {
    if (this.launchConfigSet.change(id, action)) {
      for (const worker of this.workers.values()) {
        if (worker.launchConfigId === id) worker.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'drain' });
      }
    }
    const view = this.launchConfigs().find((config) => config.id === id);
    if (!view) throw new Error(`launch config ${id} vanished while it was changed`);
    return view;
  }

  resumeCreates(): boolean {
    const event = { type: 'RESUME_CREATES' } as const;
    if (!this.poolActor.getSnapshot().can(event)) return false;
    this.poolActor.send(event);
    this.logger.info({}, 'creates resumed by operator');
    return true;
  }

  /** Boots seen and failed since start (metrics, the simulator). */
  bootOutcomes(): { booted: number; failed: number } {
    return { ...this.boots };
  }

  /**
   * What the booted instances (idle or running) offer together, and how much of it their
   * containers hold, from the ledger's running sums (metrics).
   */
  bootedResources(): { capacity: Resources; used: Resources } {
    let capacity = noResources;
    let used = noResources;
    for (const worker of this.workers.values()) {
      if (worker.lifecycle !== 'idle' && worker.lifecycle !== 'running') continue;
      capacity = plus(capacity, capacityOf(worker.instanceType));
      used = plus(used, this.attempts.ledger.usedOn(worker.id));
    }
    return { capacity, used };
  }

  createsFrozen(): string | null {
    return this.poolActor.getSnapshot().context.frozenBecause;
  }

  /** Sets how the instance behaves when idle (and saves it in the instance's tags). */
  setIdleBehavior(id: string, idleBehavior: IdleBehavior): void {
    if (!idleBehaviors.includes(idleBehavior)) throw new Error(`idle behaviour must be one of ${idleBehaviors.join(', ')}, got ${String(idleBehavior)}`);
    const worker = this.find(id);
    if (!worker) throw new UnknownInstanceError(id);
    worker.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior });
  }

  /** Shuts that instance down whatever it is doing (the operator's kill). */
  shutdown(target: { instanceId: string }): boolean {
    const worker = this.find(target.instanceId);
    if (!worker) throw new UnknownInstanceError(target.instanceId);
    worker.actor.send({ type: 'SHUTDOWN_REQUESTED', reason: 'shutdown requested by operator' });
    return lifecycleOf(worker.snapshot) === 'shutdown' || worker.snapshot.context.pendingShutdown !== null;
  }

  shutdownSurplus(workerId: string, state: 'idle' | 'booting'): boolean {
    const worker = this.workers.get(workerId);
    if (!worker || worker.lifecycle !== state || worker.idleBehavior === 'hold' || this.attempts.ledger.countOn(workerId) > 0) return false;
    worker.actor.send({ type: 'SHUTDOWN_REQUESTED', reason: `surplus ${state} ${worker.instanceType.name}` });
    return lifecycleOf(worker.snapshot) === 'shutdown';
  }

  picture(): PoolPicture {
    const open: OpenWorker[] = [];
    const coming: ComingWorker[] = [];
    const { ledger } = this.attempts;
    for (const worker of this.workers.values()) {
      if (worker.idleBehavior !== 'run') continue;
      const lifecycle = worker.lifecycle;
      if (lifecycle === 'idle' || lifecycle === 'running') {
        const containers = ledger.holdingOn(worker.id);
        const instanceId = worker.snapshot.context.instance?.id;
        if (containers >= this.maxContainersPerInstance || !instanceId) continue;
        open.push({ workerId: worker.id, instanceId, instanceType: worker.instanceType.name, free: this.freeOn(worker), containers });
      } else if ((lifecycle === 'creating' || lifecycle === 'booting' || lifecycle === 'unknown') && ledger.countOn(worker.id) === 0) {
        coming.push({ workerId: worker.id, instanceType: worker.instanceType.name, state: lifecycle });
      }
    }
    return {
      open,
      coming,
      instances: this.workers.size,
      hourlySpend: this.hourlySpend(),
      // The quota estimate bounds creates through createRefusal alone, pool-wide. It is a guess
      // from the last quota error, and a destroyed instance may hold quota until the cloud has
      // terminated it, so idle instances are not shut down to make room under it.
      createRefusal: (name) => this.scopedCreateRefusal(name),
    };
  }

  /**
   * Starts the container on the worker if it takes it: behaviour run, idle or running with room
   * for the container's resources. A worker whose idle timeout fired first turns it away, so a
   * false here always means nothing was started.
   */
  startContainer(container: Readonly<Container>, workerId: string): boolean {
    const worker = this.workers.get(workerId);
    const instance = worker?.snapshot.context.instance;
    if (!worker || !instance || this.attempts.has(container.uuid)) return false;
    const { ledger } = this.attempts;
    if (ledger.holdingOn(workerId) >= this.maxContainersPerInstance) return false;
    if (!fitsIn(demandOf(container.constraints), this.freeOn(worker))) return false;
    const assigned = { type: 'CONTAINER_ASSIGNED', containerUuid: container.uuid } as const;
    if (!worker.actor.getSnapshot().can(assigned)) return false;
    // Assigned first: an idle worker turns running on this event, so the ledger change that
    // follows is no news to its machine (see allocationsChanged) and costs no second transition.
    worker.actor.send(assigned);
    this.attempts.start(container, this.placement(worker, instance.id));
    return true;
  }

  kill(uuid: string): void {
    this.attempts.cancel(uuid);
  }

  hasContainer(uuid: string): boolean {
    return this.attempts.has(uuid);
  }

  containers(): Iterable<string> {
    return this.attempts.uuids();
  }

  /** Hourly price of every instance the pool knows, creating ones included. */
  hourlySpend(): number {
    let spend = 0;
    for (const worker of this.workers.values()) if (worker.lifecycle !== 'failed') spend += worker.instanceType.price;
    return spend;
  }

  /**
   * Whether the instance is known to be gone: the pool has no worker for it, and has listed the
   * cloud `unseenGoneAfterListings` times since it was first asked about it without seeing it. A
   * pool that has just started and not yet seen an instance cannot tell; and partial listings can
   * leave a live instance out of a few in a row, so one the pool never saw needs more listings to
   * be judged gone than one it saw and lost (forgetAfterMissedListings, with its probes silent).
   */
  isGone(instanceId: string): boolean {
    if (this.byInstanceId.has(instanceId)) {
      this.absentSince.delete(instanceId);
      return false;
    }
    const since = this.absentSince.get(instanceId);
    if (since === undefined) {
      this.absentSince.set(instanceId, this.successfulListings);
      return false;
    }
    return this.successfulListings - since >= unseenGoneAfterListings;
  }

  /** Runs a command on the instance through its executor (kill, logs, cleanup). */
  async runOn(instanceId: string, command: string, options?: RunOptions): Promise<CommandResult> {
    const worker = this.byInstanceId.get(instanceId);
    if (!worker) throw new UnknownInstanceError(instanceId);
    return this.runOnWorker(worker.id, command, options);
  }

  private async run(executor: Executor, instanceId: string, command: string, options?: RunOptions): Promise<CommandResult> {
    try {
      return await withTimeout(this.clock, commandTimeoutMs, `${command.split(' ')[0] ?? ''} on ${instanceId}`, executor.run(command, options));
    } catch (error) {
      if (error instanceof InstanceSecretMismatchError) this.secretMismatched(error);
      if (error instanceof InstanceSecretMissingError) this.secretMissing(error);
      throw error;
    }
  }

  /**
   * An instance with no secret in its tags on a cloud that gives every instance one: its probes
   * fail, so it is shut down at timeoutBooting like any that never answers. Logged once.
   */
  private secretMissing(error: InstanceSecretMissingError): void {
    if (this.reportedMissingSecrets.has(error.instanceId)) return;
    this.reportedMissingSecrets.add(error.instanceId);
    const worker = this.byInstanceId.get(error.instanceId);
    this.logger.warn(
      { workerId: worker?.id ?? null, instanceId: error.instanceId, instanceType: worker?.instanceType.name ?? null, errorClass: errorClass(error) },
      'no instance secret in its tags: not pinning its host key; it is shut down if it does not boot within timeoutBooting',
    );
  }

  /** Shuts down an instance that is not the one this pool created; logged once, as the shutdown happens. */
  private secretMismatched(error: InstanceSecretMismatchError): void {
    const worker = this.byInstanceId.get(error.instanceId);
    if (!worker || worker.lifecycle === 'shutdown' || worker.lifecycle === 'failed') return;
    this.logger.error(
      { workerId: worker.id, instanceId: error.instanceId, instanceType: worker.instanceType.name, errorClass: errorClass(error), error: error.message },
      `${secretMismatchReason}; shutting it down`,
    );
    worker.actor.send({ type: 'SHUTDOWN_REQUESTED', reason: secretMismatchReason });
  }

  /** What the worker's type offers less what its containers hold. */
  private freeOn(worker: Worker): Resources {
    return minus(capacityOf(worker.instanceType), this.attempts.ledger.usedOn(worker.id));
  }

  private placement(worker: Worker, instanceId: string): Placement {
    return { workerId: worker.id, instanceId, instanceType: worker.instanceType.name };
  }

  private async runOnWorker(workerId: string, command: string, options?: RunOptions): Promise<CommandResult> {
    const instance = this.workers.get(workerId)?.snapshot.context.instance;
    if (!instance) throw new UnknownInstanceError(workerId);
    return this.run(this.executorOf({ workerId, instance }), instance.id, command, options);
  }

  private allocationsChanged(workerId: string): void {
    const worker = this.workers.get(workerId);
    // Asked first: most changes (a start on a running worker, one of several exits) move nothing,
    // and can() is far cheaper than the transition it would otherwise cost per container.
    const changed = { type: 'ALLOCATIONS_CHANGED' } as const;
    if (worker?.actor.getSnapshot().can(changed)) worker.actor.send(changed);
    this.notifier.notify();
  }

  /**
   * Tells the instance how a start there went; its machine drains it after too many failures in a
   * row for its own reasons (refused by its runner, or unanswered: an unanswered start is requeued
   * once a list shows it absent, and the same instance would otherwise take it, and hang, again).
   */
  private startSettled(workerId: string, outcome: StartOutcome): void {
    const worker = this.workers.get(workerId);
    if (!worker) return;
    const before = idleBehaviorOf(worker.snapshot);
    const settled = outcome.kind === 'started' ? 'started' : outcome.kind === 'refused' && outcome.fault === 'container' ? 'containerFault' : 'instanceFault';
    worker.actor.send({ type: 'START_SETTLED', outcome: settled });
    if (before === 'drain' || idleBehaviorOf(worker.snapshot) !== 'drain') return;
    const { failedStarts } = worker.snapshot.context;
    this.logger.error(
      { workerId, instanceId: worker.snapshot.context.instance?.id ?? null, instanceType: worker.instanceType.name, failedStarts, lastReason: outcome.kind === 'started' ? null : outcome.reason },
      `instance taken out of service: ${failedStarts} container starts in a row refused or unanswered; draining it`,
    );
  }

  private find(id: string): Worker | undefined {
    return this.byInstanceId.get(id) ?? this.workers.get(id);
  }

  private view(worker: Worker): InstanceView {
    const { context } = worker.snapshot;
    return {
      workerId: worker.id,
      instanceId: context.instance?.id ?? null,
      instanceType: worker.instanceType.name,
      providerType: worker.instanceType.providerType,
      price: worker.instanceType.price,
      address: context.instance?.address ?? null,
      state: worker.lifecycle ?? 'failed',
      idleBehavior: worker.idleBehavior ?? 'run',
      running: this.attempts.ledger.on(worker.id).map((allocation) => allocation.uuid),
      appearedAt: worker.appearedAt,
      createdByPool: context.createToken !== null,
      lastError: context.lastError,
      history: [...worker.history],
    };
  }

  private spawn(input: InstanceInput, launchConfigId: string | null): Worker {
    const instanceType = this.options.instanceTypes[input.instanceType];
    if (!instanceType) throw new Error(`spawn: unknown instance type ${input.instanceType}`);
    const { maxInstanceLifetime = defaultMaxInstanceLifetime } = this.options.settings;
    const inspect = this.options.inspection?.observerFor({
      kind: 'instance',
      workerId: input.workerId,
      instanceId: () => this.workers.get(input.workerId)?.snapshot.context.instance?.id ?? null,
    });
    const actor = createActor(this.workerMachine, {
      clock: this.clock,
      input: { ...input, maxFailedStarts: this.options.maxStartFailuresPerInstance, maxInstanceLifetime },
      ...inspectOption(inspect),
    });
    const worker = new Worker(input.workerId, instanceType, actor, this.clock.now(), launchConfigId);
    this.workers.set(worker.id, worker);
    if (launchConfigId !== null) this.perLaunchConfig.set(launchConfigId, this.instancesOf(launchConfigId) + 1);
    if (input.createToken) this.byCreateToken.set(input.createToken, worker);
    if (input.instance) this.byInstanceId.set(input.instance.id, worker);
    actor.subscribe((snapshot) => this.observeWorker(worker, snapshot));
    actor.start();
    this.notifier.notify();
    return worker;
  }

  private forget(worker: Worker): void {
    if (this.workers.get(worker.id) !== worker) return;
    this.workers.delete(worker.id);
    this.waitingForWork(worker, false, null);
    const { launchConfigId } = worker;
    if (launchConfigId !== null) this.perLaunchConfig.set(launchConfigId, this.instancesOf(launchConfigId) - 1);
    if (!this.stopped) {
      this.attempts.instanceGone(worker.id, `instance ${worker.snapshot.context.instance?.id ?? worker.id} disappeared`);
      this.vanished(worker);
      this.reportGone(worker);
    }
    const { instance, createToken } = worker.snapshot.context;
    if (instance && this.byInstanceId.get(instance.id) === worker) {
      this.byInstanceId.delete(instance.id);
      // Forgotten after listings missed it and its probes went silent (or destroyed): gone.
      if (!this.stopped) this.absentSince.set(instance.id, this.successfulListings - unseenGoneAfterListings);
    }
    if (createToken) this.byCreateToken.delete(createToken);
    worker.actor.stop();
    worker.executor?.close();
    this.notifier.notify();
  }

  private observeWorker(worker: Worker, snapshot: WorkerSnapshot): void {
    const { context } = snapshot;
    if (context.instance && !this.byInstanceId.has(context.instance.id)) this.byInstanceId.set(context.instance.id, worker);

    const lifecycle = lifecycleOf(snapshot);
    const idleBehavior = idleBehaviorOf(snapshot);
    if (lifecycle !== worker.lifecycle) {
      const from = worker.lifecycle;
      // The create call returning is news about the instance as good as a listing.
      if (from === 'creating') worker.updatedAt = this.clock.now();
      worker.lifecycle = lifecycle;
      if (lifecycle === 'shutdown') worker.shutdownAt = this.clock.now();
      worker.record({ at: this.clock.now(), from, to: lifecycle, reason: context.reason });
      this.bootOutcome(worker, from, lifecycle, snapshot);
      // An instance the cloud made is a create the idle policy counts against the ones it let go (a
      // create that failed made nothing, and its retry would count twice); timed from the ask.
      if (from === 'creating' && lifecycle === 'booting') this.idlePolicy.created(worker.instanceType.name, worker.appearedAt);
      this.logger.info(
        {
          workerId: worker.id,
          instanceId: context.instance?.id ?? null,
          instanceType: worker.instanceType.name,
          from,
          to: lifecycle,
          reason: context.reason,
        },
        'instance state changed',
      );
      this.notifier.notify();
      // Stopping an actor from inside its own notification is not safe; do it just after.
      if (lifecycle === 'failed') queueMicrotask(() => this.forget(worker));
    }
    if (idleBehavior !== null && idleBehavior !== worker.idleBehavior) {
      if (worker.idleBehavior !== null) {
        this.logger.info(
          { workerId: worker.id, instanceId: context.instance?.id ?? null, instanceType: worker.instanceType.name, from: worker.idleBehavior, to: idleBehavior },
          'idle behaviour changed',
        );
      }
      worker.idleBehavior = idleBehavior;
      this.notifier.notify();
    }
    this.waitingForWork(worker, lifecycle === 'idle' && idleBehavior === 'run', lifecycle);
  }

  /** An idle rank for the worker: how many other instances of its type are idle and take work. */
  private idleRankOf(workerId: string, instanceType: string): number {
    const idle = this.idleByType.get(instanceType) ?? 0;
    // Counted already if its idle timer restarts while it waits for work.
    return this.workers.get(workerId)?.waitingForWork === true ? idle - 1 : idle;
  }

  /**
   * Keeps the idle counts and tells the idle policy when a wait for work begins or ends: idle with
   * behaviour run. It ends when work comes (to running), when the operator holds or drains it (still
   * idle), or when it is shut down or forgotten (to: null).
   */
  private waitingForWork(worker: Worker, waiting: boolean, to: Lifecycle | null): void {
    if (waiting === worker.waitingForWork) return;
    worker.waitingForWork = waiting;
    const type = worker.instanceType.name;
    const at = this.clock.now();
    if (!waiting) {
      this.idleByType.set(type, (this.idleByType.get(type) ?? 1) - 1);
      // Still idle: held or drained by the operator, which says nothing about the work to come.
      this.idlePolicy.leftIdle(worker.id, at, to === 'running' ? 'reused' : to === 'idle' ? 'withdrawn' : 'gone');
      return;
    }
    const rank = this.idleByType.get(type) ?? 0;
    this.idleByType.set(type, rank + 1);
    this.idlePolicy.wentIdle(worker.id, type, rank, at);
  }

  /** Tells the worker's launch config (and the pool's freeze count) how its boot went, from its lifecycle change. */
  private bootOutcome(worker: Worker, from: Lifecycle | null, to: Lifecycle, snapshot: WorkerSnapshot): void {
    const at = this.clock.now();
    const workerId = worker.id;
    const config = worker.launchConfigId;
    // Only a boot this pool saw: an instance found at start-up that answers booted may have booted days ago.
    if (from === 'booting' && (to === 'idle' || to === 'running')) {
      worker.bootedAt = at;
      this.boots.booted++;
      // Timed from the create only: a boot found by a listing began before this pool knew of it.
      if (snapshot.context.createToken !== null) {
        this.idlePolicy.booted(worker.instanceType.name, at - worker.appearedAt);
        this.observer.booted((at - worker.appearedAt) / 1_000);
      }
      if (config !== null) this.launchConfigSet.send(config, { type: 'BOOTED', at, workerId });
    } else if (to === 'shutdown' && snapshot.context.bootTimedOut) {
      this.bootFailed(worker, snapshot.context.reason);
    } else if (to === 'shutdown' && (from === 'booting' || from === 'creating') && config !== null) {
      // Killed or shut down as surplus before any verdict on its boot: a trial it was is still to come.
      this.launchConfigSet.send(config, { type: 'INSTANCE_ENDED', workerId });
    }
  }

  private bootFailed(worker: Worker, message: string): void {
    const at = this.clock.now();
    this.boots.failed++;
    if (worker.launchConfigId !== null) this.launchConfigSet.send(worker.launchConfigId, { type: 'BOOT_FAILED', at, workerId: worker.id, message });
    this.poolActor.send({ type: 'BOOT_FAILED', at });
  }

  /** A worker forgotten while the pool runs: vanished while booting fails its boot; soon after its boot, counts against its config. */
  private vanished(worker: Worker): void {
    const { launchConfigId } = worker;
    const at = this.clock.now();
    if (worker.lifecycle === 'booting') {
      this.bootFailed(worker, 'vanished from the cloud while booting');
    } else if ((worker.lifecycle === 'idle' || worker.lifecycle === 'running') && worker.bootedAt !== null && at - worker.bootedAt < earlyVanishMs && launchConfigId !== null) {
      this.launchConfigSet.send(launchConfigId, { type: 'VANISHED_EARLY', at, workerId: worker.id, message: `vanished ${roughly(at - worker.bootedAt)} after it booted` });
    }
  }

  /**
   * A forgotten worker, to the observer: one shut down went as asked; one whose create failed never
   * existed; any other vanished from the cloud without a shutdown.
   */
  private reportGone(worker: Worker): void {
    const { lifecycle } = worker;
    if (lifecycle === 'shutdown') {
      if (worker.shutdownAt !== null) this.observer.shutdownTook((this.clock.now() - worker.shutdownAt) / 1_000);
    } else if (lifecycle !== null && lifecycle !== 'failed') {
      this.observer.disappeared(lifecycle);
    }
  }

  // The sync loop changes the pool machine's state every interval; only what creates depend on is news.
  private observePool(): void {
    const { loaded, stale, quotaEstimate, throttled, frozen } = this.status();
    const summary = JSON.stringify({ loaded, stale, quotaEstimate, throttled, frozen });
    if (summary === this.lastPoolStatus) return;
    this.lastPoolStatus = summary;
    if (frozen !== null && !this.frozenLogged) this.logger.error({ frozen }, 'every create frozen until an operator resumes the pool (drover pool resume)');
    this.frozenLogged = frozen !== null;
    this.logger.info({ loaded, stale, quotaEstimate, throttled, frozen }, 'pool state changed');
    this.notifier.notify();
  }

  /**
   * Why the quota estimate refuses a create now, or null: the instances the pool knows (creates in
   * flight included) are at the estimate.
   */
  private quotaRefusal(): string | null {
    const pool = this.poolActor.getSnapshot();
    const quota = pool.context.quota;
    if (quota === null || this.workers.size < quota.instances) return null;
    const now = this.clock.now();
    const reason = `at the quota estimate of ${quota.instances} instances (quota error ${roughly(now - quota.lastErrorAt)} ago)`;
    if (!pool.matches({ quota: { estimated: 'holding' } })) return reason;
    return `${reason}; one more allowed in ${roughly(quota.quietSince + quotaQuietPeriodMs(this.options.settings.quotaErrorTTL, quota.doublings) - now)}`;
  }

  private throttled(operation: ThrottledOperation): boolean {
    return this.poolActor.getSnapshot().matches({ throttle: { [operation]: 'throttled' } });
  }

  /** Logs a failed cloud call once, with its class, and applies what its class means for the pool. */
  private cloudCallFailed(operation: ThrottledOperation, error: unknown, fields: Record<string, unknown> = {}, launchConfigId?: string): void {
    const now = this.clock.now();
    const response = responseTo(error, now, this.options.rateLimitBackoffMs ?? defaultRateLimitBackoffMs);
    this.logger.warn(
      { ...fields, operation, errorClass: errorClass(error), error: error instanceof Error ? error.message : String(error) },
      'cloud call failed',
    );
    switch (response.kind) {
      case 'quota':
        this.poolActor.send({ type: 'QUOTA_EXCEEDED', instances: this.instancesExisting(), at: now });
        break;
      case 'rateLimit':
        this.poolActor.send({ type: 'RATE_LIMITED', operation, delayMs: response.delayMs });
        break;
      case 'capacity': {
        const config = launchConfigId === undefined ? null : (this.launchConfigSet.get(launchConfigId) ?? null);
        this.launchConfigSet.capacityError({ ...response, message: error instanceof Error ? error.message : String(error) }, config);
        break;
      }
      case 'other':
        break;
    }
    this.notifier.notify();
  }

  /** Instances that exist in the cloud as far as the pool knows: creates in flight are not counted. */
  private instancesExisting(): number {
    let existing = 0;
    for (const worker of this.workers.values()) if (worker.lifecycle !== 'creating' && worker.lifecycle !== 'failed') existing++;
    return existing;
  }

  private async syncInstances(): Promise<ListingResult> {
    if (this.throttled('list')) throw new RateLimitError('listing skipped: list calls are rate-limited');
    const threshold = this.clock.now();
    let instances: CloudInstance[];
    try {
      instances = await this.options.driver.list({ [tagKeys.pool]: this.options.poolName });
    } catch (error) {
      this.cloudCallFailed('list', error);
      throw error;
    }
    return { instances: this.reconcile(threshold, instances), at: this.clock.now() };
  }

  /** Brings the registry in line with a listing that began at `threshold`; returns the instances it counted. */
  private reconcile(threshold: number, instances: CloudInstance[]): number {
    // A listing that returns after stop() must not bring workers back to life.
    if (this.stopped) return 0;
    this.successfulListings++;
    for (const [id, since] of this.absentSince) if (this.successfulListings - since > absentKeptListings) this.absentSince.delete(id);
    const now = this.clock.now();
    const { maxInstanceLifetime = defaultMaxInstanceLifetime } = this.options.settings;
    const seen = new Set<Worker>();
    const orphans: CloudInstance[] = [];
    for (const instance of instances) {
      const typeName = instance.tags[tagKeys.instanceType] ?? '';
      if (!this.options.instanceTypes[typeName]) {
        orphans.push(instance);
        if (!this.reportedOrphans.has(instance.id)) {
          this.reportedOrphans.add(instance.id);
          this.logger.error(
            { instanceId: instance.id, instanceTypeTag: typeName || null, providerType: instance.providerType },
            'orphan instance: it has this pool\'s tag but an instance type this config does not define; it is not counted or used. Destroy it or add its type to the config',
          );
        }
        continue;
      }
      let worker = this.byInstanceId.get(instance.id) ?? this.byCreateToken.get(instance.tags[tagKeys.createToken] ?? '');
      if (worker) {
        worker.updatedAt = now;
        worker.missedListings = 0;
        this.byInstanceId.set(instance.id, worker);
        if (worker.executor && instance.address) worker.executor.setTarget(this.executorTarget(instance));
        worker.actor.send({ type: 'INSTANCE_LISTED', instance });
        if (maxInstanceLifetime !== null && now - worker.appearedAt >= maxInstanceLifetime) worker.actor.send({ type: 'LIFETIME_REACHED' });
      } else {
        const launchConfigId = instance.tags[tagKeys.launchConfig] ?? null;
        // A config gone from the file (or archived) drains what it made.
        const archived = launchConfigId !== null && this.launchConfigSet.found(launchConfigId, typeName);
        worker = this.spawn(
          { workerId: instance.id, instanceType: typeName, idleBehavior: archived ? 'drain' : restoredIdleBehavior(instance.tags), instance },
          launchConfigId,
        );
        if (archived && instance.tags[tagKeys.idleBehavior] !== 'drain') this.saveIdleBehavior(instance.id, 'drain');
      }
      seen.add(worker);
    }
    this.orphanInstances = orphans;

    for (const worker of [...this.workers.values()]) {
      if (seen.has(worker) || worker.lifecycle === 'creating' || worker.updatedAt > threshold) continue;
      if (worker.missedListings++ === 0) worker.missingSince = threshold;
      const silent = worker.lastContactAt <= worker.missingSince;
      // It answered since it went missing: start counting again from this listing, so one late
      // answer cannot keep a vanished instance forever.
      if (!silent) {
        worker.missedListings = 1;
        worker.missingSince = threshold;
      }
      if (worker.lifecycle === 'shutdown' || (worker.missedListings >= forgetAfterMissedListings && silent)) {
        this.logger.info(
          { workerId: worker.id, instanceId: worker.snapshot.context.instance?.id ?? null, instanceType: worker.instanceType.name, state: worker.lifecycle },
          'instance gone from the cloud',
        );
        this.forget(worker);
      }
    }
    return seen.size;
  }

  private async createInstance(input: CreateInstanceInput): Promise<CloudInstance> {
    const instanceType = this.options.instanceTypes[input.instanceType];
    if (!instanceType) throw new Error(`unknown instance type ${input.instanceType}`);
    // Checked on first SSH contact: only the VM this create made holds it.
    const secret = newInstanceSecret();
    const launchConfigId = this.workers.get(input.workerId)?.launchConfigId ?? null;
    const launchConfig = launchConfigId === null ? undefined : this.launchConfigSet.get(launchConfigId);
    const tags: Tags = {
      ...(launchConfig && { [tagKeys.launchConfig]: launchConfig.id }),
      [tagKeys.pool]: this.options.poolName,
      [tagKeys.instanceType]: instanceType.name,
      [tagKeys.idleBehavior]: 'run',
      [tagKeys.createToken]: input.createToken,
      [tagKeys.secret]: secret,
    };
    try {
      const instance = await this.options.driver.create(createRequest(instanceType, tags, this.options.launch, secret, launchConfig));
      // Held or drained while the create was in flight: the tag must say so for a restart.
      const behavior = this.workers.get(input.workerId)?.idleBehavior;
      if (behavior && behavior !== 'run') this.saveIdleBehavior(instance.id, behavior);
      return instance;
    } catch (error) {
      this.cloudCallFailed('create', error, { workerId: input.workerId, instanceType: instanceType.name, launchConfig: launchConfigId }, launchConfigId ?? undefined);
      if (launchConfigId !== null) this.createFailed(input.workerId, launchConfigId, error);
      throw error;
    }
  }

  /**
   * A failed create counts against its config; one of no capacity, quota or rate class (a bad image
   * id, a deleted subnet, the API down) fails every create alike, so it also counts towards the breaker.
   */
  private createFailed(workerId: string, launchConfigId: string, error: unknown): void {
    const at = this.clock.now();
    const message = error instanceof Error ? error.message : String(error);
    const breaksImage = responseTo(error, at).kind === 'other';
    // Counted by the config's breaker only, not the pool's freeze: an API outage fails creates of
    // every config alike, and should back them off, not stop the pool until an operator comes.
    this.launchConfigSet.send(launchConfigId, { type: 'CREATE_FAILED', at, workerId, message, breaksImage });
  }

  private async destroyInstance(input: InstanceRef): Promise<void> {
    if (this.throttled('destroy')) throw new RateLimitError('destroy deferred: destroy calls are rate-limited');
    try {
      await this.options.driver.destroy(input.instance.id);
    } catch (error) {
      this.cloudCallFailed('destroy', error, { workerId: input.workerId, instanceId: input.instance.id });
      throw error;
    }
  }

  private saveIdleBehavior(instanceId: string, idleBehavior: IdleBehavior): void {
    if (this.throttled('setTags')) {
      this.logger.warn({ instanceId, idleBehavior }, 'idle behaviour not saved in tags: setTags calls are rate-limited; a restart now would forget it');
      return;
    }
    this.options.driver.setTags(instanceId, { [tagKeys.idleBehavior]: idleBehavior }).catch((error: unknown) => {
      this.cloudCallFailed('setTags', error, { instanceId });
    });
  }

  private executorOf(input: InstanceRef): Executor {
    const worker = this.workers.get(input.workerId);
    if (!worker) throw new Error(`worker ${input.workerId} is gone`);
    if (!input.instance.address) throw new Error(`instance ${input.instance.id} has no address yet`);
    worker.executor ??= this.options.executorFor(this.executorTarget(input.instance));
    return worker.executor;
  }

  private executorTarget(instance: CloudInstance): ExecutorTarget {
    const secret = instance.tags[tagKeys.secret];
    // Every instance a VM cloud (launch set) makes has a secret, so one without is never trusted.
    // Stub and loopback instances keep trust on first use.
    const requireSecret = this.options.launch !== undefined;
    const target: ExecutorTarget = { id: instance.id, address: instance.address ?? '', port: instance.port ?? 22, requireSecret };
    return secret === undefined ? target : { ...target, secret };
  }

  /** probeOnce, timed for the observer by outcome. */
  private async probeInstance(input: ProbeInput): Promise<ProbeResult> {
    const began = this.clock.now();
    let outcome: ProbeOutcome = 'error';
    try {
      const result = await this.probeOnce(input);
      outcome = result.booted ? 'ok' : 'not_booted';
      return result;
    } finally {
      this.observer.probed((this.clock.now() - began) / 1_000, outcome);
    }
  }

  /** The boot probe until the instance has booted, then the runner's list of containers. */
  private async probeOnce(input: ProbeInput): Promise<ProbeResult> {
    const executor = this.executorOf(input);
    const { bootProbeCommand, runnerCommand } = this.options.settings;
    const worker = this.workers.get(input.workerId);
    if (!input.booted) {
      const boot = await this.run(executor, input.instance.id, bootProbeCommand);
      if (worker) worker.lastContactAt = this.clock.now();
      if (boot.exitCode !== 0) return { booted: false };
      await this.options.prepareInstance?.(executor, input.instance);
    }
    const listedAt = this.clock.now();
    const list = await this.run(executor, input.instance.id, listCommand(runnerCommand));
    if (list.exitCode !== 0) throw new Error(`${runnerCommand} list exited with ${list.exitCode}: ${list.stderr.trim()}`);
    const listing = parseRunnerList(list.stdout);
    // The worker may have been forgotten (or the pool stopped) while the list ran.
    if (worker && this.workers.get(worker.id) === worker && !this.stopped) {
      worker.lastContactAt = this.clock.now();
      // Into the ledger before the probe settles, so the machine reads the containers it found.
      this.attempts.listed(this.placement(worker, input.instance.id), listing, listedAt);
    }
    return { booted: true };
  }
}

/** A duration to the next whole second, for reasons an operator reads ("3m20s"). */
function roughly(ms: number): string {
  return formatDuration(Math.max(0, Math.ceil(ms / 1_000) * 1_000));
}

function restoredIdleBehavior(tags: Tags): IdleBehavior {
  const tag = tags[tagKeys.idleBehavior];
  return idleBehaviors.find((behavior) => behavior === tag) ?? 'run';
}
