// How long one scheduling pass takes (Dispatcher.runPass(): queue read, reconcile, pool picture,
// plan, and carrying the plan out: the locks in one transaction, the starts handed to the pool)
// with Q containers queued and N booted, idle instances. Times the passes that fill the N idle
// instances (at most maxStartsPerPass starts each), passes with nothing idle, and the passes after
// K containers finished (K workers idle again).
// Usage: npm run bench:pass -- [queued] [instances] [idleAgain] [maxStartsPerPass]   (default 100000 10000 1000 500)
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { SimulatedClock } from 'xstate';
import type { Clock } from '../src/clock.js';
import { tagKeys, type InstanceType } from '../src/cloud/driver.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import type { PoolSettings, SchedulerSettings } from '../src/config/schema.js';
import { Pool } from '../src/pool/pool.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import type { ContainerSpec } from '../src/queue/types.js';
import { Dispatcher } from '../src/scheduler/dispatcher.js';

const queued = Number(process.argv[2] ?? 100_000);
const instances = Number(process.argv[3] ?? 10_000);
const idleAgain = Math.min(Number(process.argv[4] ?? 1_000), instances);
const maxStartsPerPass = Number(process.argv[5] ?? 500);
// Later timings repeat, and the median is reported: one pass can land on a garbage collection.
// The first pass happens once per run; run the bench a few times to see its spread.
const rounds = 9;
const hour = 3_600_000;
const poolName = 'bench';

const instanceType: InstanceType = { name: 'small', providerType: 'stub.small', vcpus: 2, ramMiB: 4096, scratchGiB: 10, gpus: 0, price: 0.05, preemptible: false };
const instanceTypes = { small: instanceType };

function spec(i: number): ContainerSpec {
  return {
    image: null,
    command: ['sh', '-c', `run-step --shard ${i}`],
    env: { SHARD: String(i) },
    constraints: { vcpus: 1, ramMiB: 1024, scratchGiB: 1, gpus: 0, preemptible: false },
    // A few priority levels, as a real queue has.
    priority: i % 5,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

const round1 = (value: number) => Number(value.toFixed(1));

/** Lets promise chains and I/O callbacks run until `done` holds (bounded, so a bug cannot hang the bench). */
async function until(what: string, done: () => boolean, limit = 100_000): Promise<void> {
  for (let turn = 0; !done(); turn++) {
    if (turn >= limit) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

// Simulated time: probes, timeouts and runner waits move only when the bench moves the clock, so
// nothing but the pass runs while it is timed, and the instances stay idle however long it takes.
const simulated = new SimulatedClock();
const clock: Clock = {
  now: () => simulated.now(),
  setTimeout: (fn, ms) => simulated.setTimeout(fn, ms),
  clearTimeout: (id) => simulated.clearTimeout(id as number),
};

const dir = mkdtempSync(join(tmpdir(), 'drover-bench-pass-'));
const queue = new SqliteQueue({ path: join(dir, 'queue.sqlite'), maxAttempts: 3 });
// Containers run until the bench ends them.
const stub = new StubCloud({ clock, faults: { containerRunMs: 100 * hour }, bootProbeCommand: 'true', runnerCommand: 'drover-runner' });
const settings: PoolSettings = {
  syncInterval: hour,
  // One probe round, at the start: the bench moves the clock past it and no further.
  probeInterval: 1_000,
  maxProbesPerSecond: 100_000,
  probeRateCeiling: 100_000,
  timeoutIdle: hour,
  timeoutBooting: hour,
  timeoutProbe: hour,
  timeoutShutdown: hour,
  maxInstances: instances,
  maxConcurrentInstanceCreateOps: 1,
  maxRunningContainersPerInstance: 1,
  quotaErrorTTL: hour,
  bootProbeCommand: 'true',
  runnerCommand: 'drover-runner',
};
const scheduler: SchedulerSettings = { pollInterval: hour, maxConcurrentContainers: null, maxHourlySpend: null, maxAttempts: 3, maxStartsPerPass };
const logger = pino({ level: 'silent' });
const pool = new Pool({ poolName, driver: stub, executorFor: (target) => stub.executorFor(target), settings, instanceTypes, logger, clock, records: queue });
// Not started: the bench runs the passes itself, so no pass runs but the ones it times.
const dispatcher = new Dispatcher({ queue, pool, instanceTypes, settings: scheduler, maxInstances: settings.maxInstances, logger, clock });

try {
  let started = performance.now();
  queue.submitMany(Array.from({ length: queued }, (_, i) => spec(i)));
  const submitMs = performance.now() - started;

  for (let i = 0; i < instances; i++) {
    stub.addInstance({ instanceType, tags: { [tagKeys.pool]: poolName, [tagKeys.instanceType]: 'small' } });
  }
  started = performance.now();
  pool.start();
  await until('the first listing', () => pool.countByState().unknown === instances);
  // The probe round: every instance answers its boot probe and runner list, and goes idle.
  simulated.increment(settings.probeInterval);
  for (let step = 0; pool.countByState().idle < instances; step++) {
    if (step >= 1_000) throw new Error(`bench: only ${pool.countByState().idle} of ${instances} instances went idle`);
    simulated.increment(1);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const idleMs = performance.now() - started;

  /**
   * One timed pass (the first one reads the queue right after the bulk submit, so it merges all
   * of it into the scheduling order); then waits until every start it made runs on its instance.
   */
  const timedPass = async (): Promise<{ ms: number; starts: number }> => {
    const passStarted = performance.now();
    const plan = dispatcher.runPass();
    const ms = performance.now() - passStarted;
    const starts = plan.decisions.flatMap((decision) => (decision.kind === 'start' ? [decision.uuid] : []));
    await until('the starts to run', () => starts.every((uuid) => queue.get(uuid)?.state === 'running'));
    return { ms, starts: starts.length };
  };

  // Filling every idle instance: as many passes as maxStartsPerPass needs.
  const filling: number[] = [];
  let startedSoFar = 0;
  while (startedSoFar < Math.min(queued, instances)) {
    const pass = await timedPass();
    if (pass.starts === 0) throw new Error(`bench: a pass started nothing with ${startedSoFar} of ${instances} instances busy`);
    startedSoFar += pass.starts;
    filling.push(pass.ms);
  }

  const busy: number[] = [];
  for (let round = 0; round < rounds; round++) busy.push((await timedPass()).ms);

  // K containers exit: their instances go idle and the next passes fill them.
  const again: number[] = [];
  let againStarts = 0;
  for (let round = 0; round < rounds; round++) {
    const ending = queue
      .pending()
      .filter((container) => container.state === 'running')
      .slice(0, idleAgain);
    for (const container of ending) stub.setContainers(container.instanceId!, { [container.uuid]: { state: 'exited', exitCode: 0 } });
    await until('the exits to be collected', () => pool.countByState().idle === idleAgain && ending.every((container) => !pool.hasContainer(container.uuid)));
    const expected = Math.min(ending.length, queued - startedSoFar);
    let starts = 0;
    while (starts < expected) {
      const pass = await timedPass();
      if (pass.starts === 0) throw new Error(`bench: ${starts} starts, expected ${expected}`);
      starts += pass.starts;
      again.push(pass.ms);
    }
    startedSoFar += starts;
    againStarts = starts;
  }

  console.log(
    JSON.stringify({
      // The load average says whether other work shared the machine while the bench ran.
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, loadAverage1m: round1(loadavg()[0] ?? 0) },
      queued,
      instances,
      submitManyMs: round1(submitMs),
      listProbeAndIdleMs: round1(idleMs),
      maxStartsPerPass,
      fillingPasses: { passes: filling.length, maxMs: round1(Math.max(...filling)), medianMs: round1(median(filling)), totalMs: round1(filling.reduce((a, b) => a + b, 0)) },
      nothingIdlePass: { medianMs: round1(median(busy)), maxMs: round1(Math.max(...busy)), rounds },
      [`${idleAgain}IdleAgainPasses`]: { medianMs: round1(median(again)), maxMs: round1(Math.max(...again)), startsPerRound: againStarts, passes: again.length },
    }),
  );
} finally {
  pool.stop();
  queue.close();
  rmSync(dir, { recursive: true, force: true });
}
