// `npm run bench`: four scale figures, each measured in a child process of its own (node
// --expose-gc, so heap figures are read after a collection and one benchmark's garbage never lands
// in another's timings), then printed as one table:
//   pass      one scheduling pass, 100,000 queued and 10,000 idle instances (bench/pass.ts, run as is)
//   heap      heap per instance actor with 10,000 alive (bench/scale.ts measureHeap)
//   sync      one steady-state sync of 10,000 listed instances (bench/scale.ts measureSync)
//   simulate  the replay simulator's speed on bench/traces/bursty.csv, 6 simulated hours (measureSimulate)
// Usage: npm run bench -- [--small] [pass] [heap] [sync] [simulate]   (default: all four, full size)
// --small runs each at a tiny size (200 queued, 20 instances, 15 simulated minutes): it shows the
// code runs (test/bench-smoke.test.ts), its figures mean nothing.
import { spawn } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureHeap, measureSimulate, measureSync, type HeapResult, type SimulateResult, type SyncResult } from './scale.js';

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = dirname(benchDir);
const names = ['pass', 'heap', 'sync', 'simulate'] as const;
type Name = (typeof names)[number];
/** A child that runs longer than this is killed and its benchmark reported as failed. */
const childLimitMs = 4 * 60_000;

interface Sizes {
  queued: number;
  instances: number;
  idleAgain: number;
  maxStartsPerPass: number;
  untilHours: number;
}
const full: Sizes = { queued: 100_000, instances: 10_000, idleAgain: 1_000, maxStartsPerPass: 500, untilHours: 6 };
const small: Sizes = { queued: 200, instances: 20, idleAgain: 10, maxStartsPerPass: 10, untilHours: 0.25 };
const simulateConfig = 'config/simulate.yml';
const simulateTrace = 'bench/traces/bursty.csv';

/** bench/pass.ts's JSON line (the parts read here). */
interface PassResult {
  maxStartsPerPass: number;
  fillingPasses: { passes: number; maxMs: number; medianMs: number };
  nothingIdlePass: { medianMs: number; maxMs: number };
}

interface Row {
  benchmark: string;
  figure: string;
  target: string;
  met: string;
}

function childArgs(name: Name, sizes: Sizes): string[] {
  if (name === 'pass') return [join(benchDir, 'pass.ts'), ...[sizes.queued, sizes.instances, sizes.idleAgain, sizes.maxStartsPerPass].map(String)];
  return [fileURLToPath(import.meta.url), '--child', name, String(name === 'simulate' ? sizes.untilHours : sizes.instances)];
}

/** Runs one benchmark in a child process; resolves to the JSON object on its last stdout line. */
function runChild(name: Name, sizes: Sizes): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', ...childArgs(name, sizes)], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), childLimitMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = stdout.trim().split('\n').at(-1) ?? '';
      if (code !== 0) return reject(new Error(`${name}: exited ${signal ?? code}${signal === 'SIGKILL' ? ` (over ${childLimitMs / 60_000} min)` : ''}`));
      try {
        resolve(JSON.parse(last));
      } catch {
        reject(new Error(`${name}: no JSON result on stdout: ${JSON.stringify(last)}`));
      }
    });
  });
}

/** yes: every timing within the target; "median only": the median is, the max is not. */
function metOfTimes(median: number, max: number, limit: number): string {
  if (max <= limit) return 'yes';
  return median <= limit ? 'median only' : 'no';
}

const thousands = (value: number) => value.toLocaleString('en-US');

function row(name: Name, sizes: Sizes, result: unknown): Row {
  switch (name) {
    case 'pass': {
      const pass = result as PassResult;
      return {
        benchmark: `one scheduling pass, ${thousands(sizes.queued)} queued, ${thousands(sizes.instances)} idle instances (bench/pass.ts)`,
        figure:
          `median ${pass.fillingPasses.medianMs} ms, max ${pass.fillingPasses.maxMs} ms over the ${pass.fillingPasses.passes} passes that fill them ` +
          `(maxStartsPerPass ${pass.maxStartsPerPass}); ${pass.nothingIdlePass.medianMs} ms with nothing idle`,
        target: '≤ 250 ms',
        met: metOfTimes(pass.fillingPasses.medianMs, pass.fillingPasses.maxMs, 250),
      };
    }
    case 'heap': {
      const heap = result as HeapResult;
      return {
        benchmark: `heap per instance actor, ${thousands(heap.workers)} idle workers alive`,
        figure: `${heap.heapKiBPerWorker} KiB${heap.gc ? '' : ' (no gc: rough)'}`,
        target: '≤ 30 KiB',
        met: heap.heapKiBPerWorker <= 30 ? 'yes' : 'no',
      };
    }
    case 'sync': {
      const sync = result as SyncResult;
      return {
        benchmark: `one sync (listing + reconcile) of ${thousands(sync.instances)} known instances`,
        figure: `median ${sync.medianMs} ms, max ${sync.maxMs} ms of ${sync.syncs}`,
        target: '≤ 500 ms',
        met: metOfTimes(sync.medianMs, sync.maxMs, 500),
      };
    }
    case 'simulate': {
      const sim = result as SimulateResult;
      return {
        benchmark: `simulate() speed, ${sim.trace}, first ${sim.untilHours} simulated h (untilMs)`,
        figure: `${thousands(Math.round(sim.speedup))}× real time (${thousands(sim.simulatedSeconds)} s in ${sim.wallSeconds} s)`,
        target: '≥ 5,000×',
        met: sim.speedup >= 5_000 ? 'yes' : 'no',
      };
    }
  }
}

function table(rows: Row[]): string {
  const header: Row = { benchmark: 'benchmark', figure: 'figure', target: 'target', met: 'met?' };
  const lines = [header, ...rows].map((r) => `| ${r.benchmark} | ${r.figure} | ${r.target} | ${r.met} |`);
  lines.splice(1, 0, '|---|---|---|---|');
  return lines.join('\n');
}

async function child(name: string, size: number): Promise<void> {
  let result: unknown;
  if (name === 'heap') result = await measureHeap(size);
  else if (name === 'sync') result = await measureSync(size);
  else if (name === 'simulate') result = await measureSimulate({ config: simulateConfig, trace: simulateTrace, untilHours: size });
  else throw new Error(`bench: no benchmark ${name}`);
  console.log(JSON.stringify(result));
}

async function main(args: string[]): Promise<number> {
  if (args[0] === '--child') {
    await child(args[1] ?? '', Number(args[2]));
    return 0;
  }
  const sizes = args.includes('--small') ? small : full;
  const unknown = args.filter((arg) => arg !== '--small' && !(names as readonly string[]).includes(arg));
  if (unknown.length > 0) {
    console.error(`usage: npm run bench -- [--small] [${names.join('] [')}]   (unknown: ${unknown.join(' ')})`);
    return 2;
  }
  const chosen = names.filter((name) => args.includes(name));
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}`;
  const loadBefore = loadavg()[0] ?? 0;
  const started = performance.now();
  const rows: Row[] = [];
  const details: Record<string, unknown> = {};
  let failed = 0;
  for (const name of chosen.length > 0 ? chosen : names) {
    console.error(`bench: ${name}...`);
    try {
      const result = await runChild(name, sizes);
      details[name] = result;
      rows.push(row(name, sizes, result));
    } catch (error) {
      failed++;
      rows.push({ benchmark: name, figure: `failed: ${(error as Error).message}`, target: '', met: 'no' });
    }
  }
  console.log(table(rows));
  console.log(
    `\n${machine}; load average (1 min) ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? 0).toFixed(2)} after; ` +
      `${((performance.now() - started) / 1_000).toFixed(0)} s in all${sizes === small ? '; --small: sizes too small for the figures to mean anything' : ''}`,
  );
  console.log(JSON.stringify(details));
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
