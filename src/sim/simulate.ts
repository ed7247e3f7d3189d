// The replay simulator: a trace of container submissions through Drover's real pool, scheduler,
// instance and container machines and queue (SQLite in memory), against the stub cloud on a
// virtual clock, as fast as the CPU allows. What it measures is what a pool is for: what the
// instances cost and how long containers waited.
import { pino } from 'pino';
import type { CloudDriver, CloudInstance } from '../cloud/driver.js';
import { errorClass } from '../cloud/errors.js';
import { rateLimited } from '../cloud/rate-limited.js';
import { StubCloud } from '../cloud/stub/stub-cloud.js';
import { stubRunMsEnv } from '../cloud/stub/stub-cloud.js';
import type { Config } from '../config/schema.js';
import { Pool } from '../pool/pool.js';
import { defaultIdlePolicy, type IdlePolicyName } from '../pool/idle-policy.js';
import { inMemoryQueuePath, SqliteQueue } from '../queue/sqlite-queue.js';
import type { Container } from '../queue/types.js';
import { Dispatcher } from '../scheduler/dispatcher.js';
import { plan } from '../scheduler/plan.js';
import { chooseInstanceType } from '../scheduler/instance-type.js';
import type { Executor } from '../ssh/executor.js';
import type { ChartPoint } from './chart.js';
import { HeapClock } from './heap-clock.js';
import type { TraceRow } from './trace.js';

export interface SimulationOptions {
  /** Instance types, pool, scheduler and the stub's faults (cloud.stub) come from it, whatever its driver. */
  config: Config;
  trace: readonly TraceRow[];
  /** Seeds the stub's random faults and boot delays; default the config's cloud.stub.seed. */
  seed?: number;
  /** Stop at this much simulated time (ms) even if work remains; default: run until everything ended. */
  untilMs?: number | null;
  /** How often (simulated ms) the chart is sampled; default 1 min. */
  sampleEveryMs?: number;
  /** Called about every `progressEveryMs` of wall time with how far the replay is. */
  onProgress?: (progress: SimulationProgress) => void;
  progressEveryMs?: number;
  /**
   * Stop the pool and scheduler this often (simulated ms) and start new ones over the same cloud
   * and queue, as a daemon restart does; default never.
   */
  restartEveryMs?: number | null;
  /** Which scheduling pass decides creates and idling: Drover's plan, or a baseline (see --policy). */
  planner?: Planner;
}

/** A scheduling pass: `plan` or a baseline with its signature. */
export type Planner = typeof plan;

export interface SimulationProgress {
  simulatedMs: number;
  submitted: number;
  ended: number;
  total: number;
  instances: number;
}

/** What a replay measured. The keys are part of the simulator's contract (summary.json). */
export interface SimulationSummary {
  /** `lost`: submitted but gone from the queue; `ranTwice`: ran on two instances at once, or again after it completed. Both must be 0. */
  containers: { submitted: number; completed: number; failed: number; lost: number; ranTwice: number };
  /** Dollars of instance time, the least the work could cost, and their ratio. */
  cost: { dollars: number; lowerBoundDollars: number; ratio: number | null };
  /**
   * Submit → start, seconds, over the containers that started (a container requeued after its
   * instance was lost counts to its last start; one still queued at --until is left out).
   */
  waitSeconds: { p50: number; p95: number; p99: number; max: number };
  instances: { created: number; maxAtOnce: number; bootFailures: number };
  cloudCalls: Record<string, number>;
  cloudErrors: Record<string, number>;
  simulatedSeconds: number;
  wallSeconds: number;
  speedup: number;
  peakHeapBytes: number;
  /** How the run ended: every container ended and the pool emptied, or --until. */
  ended: 'drained' | 'until';
  /** The pool's idle policy in the replay (pool.idlePolicy). */
  idlePolicy: IdlePolicyName;
  /** Daemon restarts made (restartEveryMs). */
  restarts: number;
  /**
   * The invariants, checked at every event that could break them: instances never above
   * maxInstances (after every instant of the clock), spend never above maxHourlySpend (at every
   * create), no container on two instances at once or started after it completed (at every start),
   * none lost (at the end). The first violations, with when they happened.
   */
  invariants: { checks: number; violations: string[] };
  /** Faults the stub cloud injected, by kind. */
  faults: Record<string, number>;
}

export interface SimulationResult {
  summary: SimulationSummary;
  chart: ChartPoint[];
}

/** One instance's bill: from its create's answer to its destroy (or its vanishing, seen at the next sample). */
interface Bill {
  price: number;
  from: number;
  to: number | null;
}

const startCommand = / start '?([A-Za-z0-9._-]+)'?/;
/** Violations kept in the summary: the first ones say what went wrong; the count is in checks. */
const maxViolationsKept = 20;

export async function simulate(options: SimulationOptions): Promise<SimulationResult> {
  const { config, trace } = options;
  const wallStart = performance.now();
  const clock = new HeapClock();
  const stub = new StubCloud({
    clock,
    faults: { ...config.cloud.stub, seed: options.seed ?? config.cloud.stub.seed },
    bootProbeCommand: config.pool.bootProbeCommand,
    runnerCommand: config.pool.runnerCommand,
  });
  const logger = pino({ level: 'silent' });

  const bills = new Map<string, Bill>();
  const cloudErrors: Record<string, number> = {};
  let created = 0;
  let maxAtOnce = 0;
  const invariants = { checks: 0, violations: [] as string[] };
  const violated = (what: string): void => {
    if (invariants.violations.length < maxViolationsKept) invariants.violations.push(`${(clock.now() / 1_000).toFixed(3)} s: ${what}`);
  };
  const { maxInstances } = config.pool;
  const { maxHourlySpend } = config.scheduler;
  const priceOf = new Map(Object.values(config.instanceTypes).map((type) => [type.providerType, type.price]));
  // Instances and spend only grow at a create: checked there, against what the cloud holds.
  const checkCreate = (): void => {
    invariants.checks++;
    const live = stub.liveInstances();
    if (live.length > maxInstances) violated(`${live.length} instances, above maxInstances ${maxInstances}`);
    if (maxHourlySpend === null) return;
    invariants.checks++;
    const spend = live.reduce((sum, instance) => sum + (priceOf.get(instance.providerType) ?? 0), 0);
    if (spend > maxHourlySpend + 1e-9) violated(`spend ${spend.toFixed(4)}/h, above maxHourlySpend ${maxHourlySpend}`);
  };
  const counted = async <T>(call: Promise<T>): Promise<T> => {
    try {
      return await call;
    } catch (error) {
      const name = errorClass(error);
      cloudErrors[name] = (cloudErrors[name] ?? 0) + 1;
      throw error;
    }
  };
  // Counted, then held to cloud.maxCloudOpsPerSecond as the daemon holds its driver (cloudFromConfig).
  const countedDriver: CloudDriver = {
    create: async (request) => {
      const instance: CloudInstance = await counted(stub.create(request));
      created++;
      bills.set(instance.id, { price: request.instanceType.price, from: clock.now(), to: null });
      maxAtOnce = Math.max(maxAtOnce, stub.liveCount());
      checkCreate();
      return instance;
    },
    list: (filter) => counted(stub.list(filter)),
    destroy: async (id) => {
      await counted(stub.destroy(id));
      const bill = bills.get(id);
      if (bill && bill.to === null) bill.to = clock.now();
    },
    setTags: (id, tags) => counted(stub.setTags(id, tags)),
  };
  const driver = rateLimited(countedDriver, { maxOpsPerSecond: config.cloud.maxCloudOpsPerSecond, clock });

  // Where each container was started, to catch one running on two instances at once or started
  // again after it completed: neither may ever happen, whatever the faults.
  const startedOn = new Map<string, Set<string>>();
  const ranTwice = new Set<string>();
  const counting = (executor: Executor, instanceId: string): Executor => ({
    run: async (command, runOptions) => {
      const uuid = startCommand.exec(command)?.[1];
      const completedBefore = uuid !== undefined && queue.get(uuid)?.state === 'complete';
      const result = await executor.run(command, runOptions);
      if (uuid === undefined || result.exitCode !== 0) return result;
      const on = startedOn.get(uuid) ?? new Set<string>();
      const elsewhere = [...on].some((id) => id !== instanceId && stub.getVm(id)?.containers[uuid]?.state === 'running');
      invariants.checks++;
      if (elsewhere) violated(`container ${uuid} started on ${instanceId} while running on another instance`);
      if (completedBefore) violated(`container ${uuid} started on ${instanceId} after it completed`);
      if (elsewhere || completedBefore) ranTwice.add(uuid);
      on.add(instanceId);
      startedOn.set(uuid, on);
      return result;
    },
    setTarget: (target) => executor.setTarget(target),
    close: () => executor.close(),
  });

  const queue = new SqliteQueue({ path: inMemoryQueuePath, maxAttempts: config.scheduler.maxAttempts, clock, logTailBytes: config.pool.logTailBytes });
  // The daemon's part: what a restart stops and builds again over the same cloud and queue.
  const startDaemon = (): { pool: Pool; dispatcher: Dispatcher } => {
    const pool = new Pool({
      poolName: config.poolName,
      driver,
      executorFor: (target) => counting(stub.executorFor(target), target.id),
      settings: config.pool,
      instanceTypes: config.instanceTypes,
      logger,
      clock,
      records: queue,
      docker: false,
      launchConfigs: config.launchConfigs,
      launchConfigStore: queue,
    });
    const dispatcher = new Dispatcher({
      queue,
      pool,
      instanceTypes: config.instanceTypes,
      settings: config.scheduler,
      maxInstances,
      logger,
      clock,
      planner: options.planner ?? plan,
    });
    pool.start();
    dispatcher.start();
    return { pool, dispatcher };
  };
  const boots = { booted: 0, failed: 0 };
  const stopDaemon = ({ pool, dispatcher }: { pool: Pool; dispatcher: Dispatcher }): void => {
    dispatcher.stop();
    const outcomes = pool.bootOutcomes();
    boots.booted += outcomes.booted;
    boots.failed += outcomes.failed;
    pool.stop();
  };

  // Submissions: the rows due now, then a timer for the next. Times are whole ms (rounded up), as
  // the clock's are: a fraction would make a timer fire before its row is due, again and again.
  const dueAt = (row: TraceRow) => Math.ceil(row.submitS * 1_000);
  let next = 0;
  const submitDue = (): void => {
    const now = clock.now();
    while (next < trace.length && dueAt(trace[next]!) <= now) {
      const row = trace[next++]!;
      queue.submit({
        image: null,
        command: ['true'],
        env: { [stubRunMsEnv]: String(Math.round(row.durationS * 1_000)) },
        priority: row.priority,
        constraints: { vcpus: row.vcpus, ramMiB: row.ramMiB, scratchGiB: 0, gpus: 0, preemptible: false },
      });
    }
    if (next < trace.length) clock.setTimeout(submitDue, dueAt(trace[next]!) - now);
  };

  let daemon = startDaemon();
  let restarts = 0;
  if (options.restartEveryMs != null) {
    const every = options.restartEveryMs;
    const restart = (): void => {
      stopDaemon(daemon);
      daemon = startDaemon();
      restarts++;
      clock.setTimeout(restart, every);
    };
    clock.setTimeout(restart, every);
  }
  clock.setTimeout(submitDue, trace[0] === undefined ? 0 : dueAt(trace[0]));

  const chart: ChartPoint[] = [];
  const sampleEveryMs = options.sampleEveryMs ?? 60_000;
  const progressEveryMs = options.progressEveryMs ?? 250;
  let peakHeapBytes = 0;
  let lastProgress = performance.now();
  let ended: SimulationSummary['ended'] = 'drained';
  const checkInstances = (): void => {
    invariants.checks++;
    const live = stub.liveCount();
    if (live > maxInstances) violated(`${live} instances, above maxInstances ${maxInstances}`);
  };
  for (;;) {
    await clock.advance(sampleEveryMs, checkInstances);
    const now = clock.now();
    const byState = daemon.pool.countByState();
    const pending = queue.pending();
    let queued = 0;
    for (const container of pending) if (container.state === 'queued') queued++;
    chart.push({ t: now / 1_000, instances: { ...byState }, queued });
    // Vanished VMs stop costing when the cloud forgets them.
    const live = new Set(stub.liveInstances().map((instance) => instance.id));
    for (const [id, bill] of bills) if (bill.to === null && !live.has(id)) bill.to = now;
    maxAtOnce = Math.max(maxAtOnce, live.size);
    peakHeapBytes = Math.max(peakHeapBytes, process.memoryUsage().heapUsed);
    const instances = Object.values(byState).reduce((sum, count) => sum + count, 0);
    if (options.onProgress && performance.now() - lastProgress >= progressEveryMs) {
      lastProgress = performance.now();
      options.onProgress({ simulatedMs: now, submitted: next, ended: next - pending.length, total: trace.length, instances });
    }
    if (next >= trace.length && pending.length === 0 && instances === 0) break;
    if (options.untilMs != null && now >= options.untilMs) {
      ended = 'until';
      break;
    }
  }

  const containers = queue.list();
  stopDaemon(daemon);
  queue.close();
  // Every container ends complete, or failed with its reason; only --until leaves some waiting.
  invariants.checks++;
  if (containers.length !== next) violated(`${next - containers.length} submitted containers gone from the queue`);
  for (const container of containers) {
    if (container.state === 'failed' && !container.reason) violated(`container ${container.uuid} failed without a reason`);
    if (ended === 'drained' && container.state !== 'complete' && container.state !== 'failed') violated(`container ${container.uuid} left ${container.state}`);
  }
  const end = clock.now();
  const wallSeconds = (performance.now() - wallStart) / 1_000;
  const simulatedSeconds = end / 1_000;

  let dollars = 0;
  for (const bill of bills.values()) dollars += (bill.price * ((bill.to ?? end) - bill.from)) / 3_600_000;
  const lowerBoundDollars = lowerBound(containers, config);
  const waits = containers.filter((c) => c.startedAt !== null).map((c) => (c.startedAt! - c.submittedAt) / 1_000);
  const count = (state: Container['state']) => containers.filter((c) => c.state === state).length;
  const summary: SimulationSummary = {
    containers: {
      submitted: next,
      completed: count('complete'),
      failed: count('failed'),
      // Submitted but neither ended nor still waiting or running: must be 0.
      lost: next - containers.length,
      ranTwice: ranTwice.size,
    },
    cost: { dollars: round(dollars, 4), lowerBoundDollars: round(lowerBoundDollars, 4), ratio: lowerBoundDollars > 0 ? round(dollars / lowerBoundDollars, 4) : null },
    waitSeconds: percentiles(waits),
    instances: { created, maxAtOnce, bootFailures: boots.failed },
    cloudCalls: { ...stub.callCounts },
    cloudErrors,
    simulatedSeconds: round(simulatedSeconds, 3),
    wallSeconds: round(wallSeconds, 3),
    speedup: round(simulatedSeconds / Math.max(wallSeconds, 1e-9), 1),
    peakHeapBytes,
    ended,
    idlePolicy: config.pool.idlePolicy ?? defaultIdlePolicy,
    restarts,
    invariants,
    faults: { ...stub.faultCounts },
  };
  return { summary, chart };
}

/**
 * Each completed container's run time × the price of the cheapest type that fits it: no boot, no
 * idle. With packing, a container pays only its share of that type (the larger of its vCPU and RAM
 * shares, and at least 1 / maxRunningContainersPerInstance), so the bound stays below any real cost.
 */
function lowerBound(containers: readonly Container[], config: Config): number {
  let dollars = 0;
  const perInstance = config.pool.maxRunningContainersPerInstance;
  for (const container of containers) {
    if (container.state !== 'complete' || container.startedAt === null || container.finishedAt === null) continue;
    const runMs = Number(container.env[stubRunMsEnv] ?? 0);
    const choice = chooseInstanceType(container.constraints, config.instanceTypes);
    if (!choice.ok) continue;
    const type = choice.instanceType;
    const share = perInstance <= 1 ? 1 : Math.max(container.constraints.vcpus / type.vcpus, container.constraints.ramMiB / type.ramMiB, 1 / perInstance);
    dollars += (type.price * runMs * Math.min(1, share)) / 3_600_000;
  }
  return dollars;
}

/** Nearest-rank percentiles, seconds to the millisecond; zeros when nothing started. */
function percentiles(values: number[]): SimulationSummary['waitSeconds'] {
  if (values.length === 0) return { p50: 0, p95: 0, p99: 0, max: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
  return { p50: round(rank(0.5), 3), p95: round(rank(0.95), 3), p99: round(rank(0.99), 3), max: round(sorted.at(-1)!, 3) };
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
