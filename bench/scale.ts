// Three of `npm run bench`'s scale figures (bench/bench.ts runs each in a child process of its
// own, so one's heap and garbage never lands in another's timings): heap per worker actor, one
// steady-state sync, and the replay simulator's speed. The fourth, one scheduling pass, is
// bench/pass.ts, run as it is.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { tagKeys, type CloudDriver, type InstanceType } from '../src/cloud/driver.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { loadConfig } from '../src/config/load.js';
import type { PoolSettings } from '../src/config/schema.js';
import { Pool } from '../src/pool/pool.js';
import { HeapClock } from '../src/sim/heap-clock.js';
import { simulate } from '../src/sim/simulate.js';
import { readTrace } from '../src/sim/trace.js';

const second = 1_000;
const minute = 60 * second;
const hour = 60 * minute;
const poolName = 'bench';
const instanceType: InstanceType = { name: 'small', providerType: 'stub.small', vcpus: 2, ramMiB: 4096, scratchGiB: 10, gpus: 0, price: 0.05, preemptible: false };

// The timeline of an idle pool on a HeapClock (simulated time, moved only by the bench):
//   0        the first listing finds every instance (booted VMs): one worker each, `unknown`
//   10 min   a listing every syncInterval from then on (10, 20, 30, ... min)
//   60 min   the first probe round: every instance answers at once (rate 100,000/s) and goes idle
//   65 min   timeoutBooting: the timers the first listing started, cancelled by then, are
//            dropped from the clock's heap as it moves past them
//   66 min   `ready`: only live timers are left (the syncs, the next probe round at 120 min,
//            each worker's timeoutIdle at 10 h and maxInstanceLifetime at 96 h)
const settings: PoolSettings = {
  syncInterval: 10 * minute,
  probeInterval: hour,
  maxProbesPerSecond: 100_000,
  probeRateCeiling: 100_000,
  timeoutIdle: 10 * hour,
  timeoutBooting: 65 * minute,
  timeoutProbe: 30 * second,
  timeoutShutdown: minute,
  maxInstances: 0,
  maxConcurrentInstanceCreateOps: 1,
  maxRunningContainersPerInstance: 1,
  quotaErrorTTL: minute,
  bootProbeCommand: 'true',
  runnerCommand: 'drover-runner',
};
const readyAt = 66 * minute;

function heapUsed(): number {
  // Twice: the first collection's finalizers can leave garbage for a second.
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().heapUsed;
}

interface IdlePool {
  pool: Pool;
  stub: StubCloud;
  clock: HeapClock;
  /** Wall ms spent inside the stub's list() answering each listing so far. */
  listMs: number[];
}

/** A stub cloud with `count` booted instances of this pool and a Pool over it, not started. */
function idlePool(count: number): IdlePool {
  const clock = new HeapClock();
  const stub = new StubCloud({ clock, bootProbeCommand: 'true', runnerCommand: 'drover-runner' });
  for (let i = 0; i < count; i++) stub.addInstance({ instanceType, tags: { [tagKeys.pool]: poolName, [tagKeys.instanceType]: 'small' }, booted: true });
  const listMs: number[] = [];
  const driver: CloudDriver = {
    create: (request) => stub.create(request),
    list: async (filter) => {
      const started = performance.now();
      const instances = await stub.list(filter);
      listMs.push(performance.now() - started);
      return instances;
    },
    destroy: (id) => stub.destroy(id),
    setTags: (id, tags) => stub.setTags(id, tags),
  };
  const pool = new Pool({
    poolName,
    driver,
    executorFor: (target) => stub.executorFor(target),
    settings: { ...settings, maxInstances: count },
    instanceTypes: { small: instanceType },
    logger: pino({ level: 'silent' }),
    clock,
  });
  return { pool, stub, clock, listMs };
}

/** Starts the pool and moves the clock to `readyAt`, when every instance is idle; throws if one is not. */
async function startIdle({ pool, stub, clock }: IdlePool, count: number): Promise<void> {
  pool.start();
  await clock.advance(0);
  await clock.advance(readyAt);
  const byState = pool.countByState();
  if (byState.idle !== count || pool.instances().length !== count || stub.callCounts.destroy !== 0) {
    throw new Error(`bench: expected ${count} idle instances, got ${JSON.stringify(byState)} (${stub.callCounts.destroy} destroyed)`);
  }
}

export interface HeapResult {
  workers: number;
  /** Whether global.gc() ran before each reading (node --expose-gc); without it the figure is rough. */
  gc: boolean;
  heapBeforeBytes: number;
  heapAfterBytes: number;
  heapKiBPerWorker: number;
}

/**
 * Heap per worker actor: heap used with `count` idle workers alive (after gc) minus heap used
 * before the pool started (after gc, with the stub's VMs and the Pool object already made, so
 * only what the pool holds per instance counts), over `count`.
 */
export async function measureHeap(count: number): Promise<HeapResult> {
  const idle = idlePool(count);
  try {
    const before = heapUsed();
    await startIdle(idle, count);
    const after = heapUsed();
    return {
      workers: count,
      gc: typeof globalThis.gc === 'function',
      heapBeforeBytes: before,
      heapAfterBytes: after,
      heapKiBPerWorker: round((after - before) / count / 1024, 2),
    };
  } finally {
    idle.pool.stop();
  }
}

export interface SyncResult {
  instances: number;
  syncs: number;
  medianMs: number;
  maxMs: number;
  /** Of each sync, the wall ms inside the stub's list() (making the 10,000 listed copies). */
  stubListMedianMs: number;
  /** Timers that fired in each timed window: the sync's own, and nothing else due. */
  timersFired: number[];
}

/**
 * One steady-state sync: a listing of `count` instances the pool already knows (all idle), and the
 * reconcile that follows it (each worker told it was listed, the missing ones counted, the pool's
 * picture and notifications). Pool has no public way to run one sync, so this times the pool
 * machine's own: with the clock at 30 s before a sync is due (every 10 simulated minutes) and
 * nothing else due within a minute of it, the wall time of advancing the HeapClock by that minute
 * is the sync: the listing timer fires, the stub answers, the reconcile runs, and the clock lets
 * every promise chain run to the end before it returns. Each window is checked to hold exactly one
 * listing; the timers fired in it are reported. A gc runs before each window (when exposed), so
 * garbage left by the setup is not collected inside one.
 */
export async function measureSync(count: number, syncs = 5): Promise<SyncResult> {
  const idle = idlePool(count);
  const { pool, stub, clock, listMs } = idle;
  try {
    await startIdle(idle, count);
    const times: number[] = [];
    const stubTimes: number[] = [];
    const timersFired: number[] = [];
    // The syncs at 70, 80, 90, 100 and 110 min: the next probe round is at 120 min.
    for (let k = 0; k < syncs; k++) {
      const dueAt = 70 * minute + k * settings.syncInterval;
      if (dueAt % settings.probeInterval === 0) throw new Error('bench: a timed sync would share its instant with a probe round');
      await clock.advance(dueAt - 30 * second - clock.now());
      heapUsed();
      const lists = stub.callCounts.list;
      const fired = clock.fired;
      const started = performance.now();
      await clock.advance(minute);
      times.push(performance.now() - started);
      if (stub.callCounts.list !== lists + 1) throw new Error(`bench: ${stub.callCounts.list - lists} listings in the window at ${dueAt} ms, expected 1`);
      stubTimes.push(listMs.at(-1) ?? Number.NaN);
      timersFired.push(clock.fired - fired);
    }
    if (pool.countByState().idle !== count) throw new Error(`bench: instances left idle during the syncs: ${JSON.stringify(pool.countByState())}`);
    return {
      instances: count,
      syncs,
      medianMs: round(median(times), 1),
      maxMs: round(Math.max(...times), 1),
      stubListMedianMs: round(median(stubTimes), 1),
      timersFired,
    };
  } finally {
    pool.stop();
  }
}

export interface SimulateResult {
  trace: string;
  config: string;
  untilHours: number;
  submitted: number;
  completed: number;
  simulatedSeconds: number;
  wallSeconds: number;
  speedup: number;
}

/** `simulate()` with a config over a trace, up to `untilHours` of simulated time: simulated seconds per wall second. */
export async function measureSimulate(options: { config: string; trace: string; untilHours: number }): Promise<SimulateResult> {
  // State paths in the config are only resolved, never used (the simulator's queue is in memory);
  // a throwaway home keeps them off the user's.
  const home = mkdtempSync(join(tmpdir(), 'drover-bench-sim-'));
  try {
    const config = loadConfig(resolve(options.config), { home });
    const trace = readTrace(resolve(options.trace));
    const { summary } = await simulate({ config, trace, untilMs: options.untilHours * hour });
    return {
      trace: options.trace,
      config: options.config,
      untilHours: options.untilHours,
      submitted: summary.containers.submitted,
      completed: summary.containers.completed,
      simulatedSeconds: summary.simulatedSeconds,
      wallSeconds: summary.wallSeconds,
      speedup: summary.speedup,
    };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
