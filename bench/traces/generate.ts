// Writes the replay traces in bench/traces/ for `drover simulate --trace FILE`: steady.csv,
// bursty.csv and longtail.csv, each over 10,000 containers across 25 simulated hours (t = 0 is
// midnight of the simulated day). Seeded: the same seed gives byte-identical files.
// Usage: npm run traces [-- --seed N] [-- --out DIR]   (default seed 1, default DIR this directory)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../../src/seeded-random.js';
import { isMain } from '../../src/is-main.js';

export const defaultSeed = 1;

/** Every trace's arrivals run over [0, horizon): a little over a day, so each spans ≥ 24 h. */
const horizonS = 25 * 3600;
const minRows = 10_000;
/** The largest instance type a trace's containers must fit. */
const maxVcpus = 16;
const maxRamMiB = 64 * 1024;

export interface GeneratedRow {
  submitS: number;
  durationS: number;
  vcpus: number;
  ramMiB: number;
  priority: number;
}

export interface TraceSummary {
  name: string;
  path: string;
  rows: number;
  /** Hours from the first submission to the last. */
  spanHours: number;
  /** The sum of all durations, in hours. */
  containerHours: number;
  bytes: number;
}

type Random = () => number;

// --- distributions -----------------------------------------------------------------------------

/** A gap of a Poisson process of the given rate (per second). */
function exponential(random: Random, rate: number): number {
  return -Math.log(1 - random()) / rate;
}

function standardNormal(random: Random): number {
  // Box–Muller; 1 - random() is in (0, 1], so the log is finite.
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Log-normal with the given median, redrawn until it lands in [min, max]. */
function logNormalWithin(random: Random, median: number, sigma: number, min: number, max: number): number {
  for (;;) {
    const value = median * Math.exp(sigma * standardNormal(random));
    if (value >= min && value <= max) return value;
  }
}

/** Pareto(scale, shape) truncated to [scale, max], by inverting its distribution function. */
function truncatedPareto(random: Random, scale: number, shape: number, max: number): number {
  const tail = (scale / max) ** shape;
  return scale / (1 - random() * (1 - tail)) ** (1 / shape);
}

function uniform(random: Random, min: number, max: number): number {
  return min + random() * (max - min);
}

/** An integer drawn uniformly from [min, max]. */
function between(random: Random, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

/** Picks a value by weight. */
function pick<T>(random: Random, choices: readonly (readonly [T, number])[]): T {
  const total = choices.reduce((sum, [, weight]) => sum + weight, 0);
  let r = random() * total;
  for (const [value, weight] of choices) {
    r -= weight;
    if (r < 0) return value;
  }
  return choices[choices.length - 1]![0];
}

/** Poisson arrival times over [from, to) at a rate (per second) that may vary with time: thinning. */
function poissonArrivals(random: Random, from: number, to: number, peakRate: number, rateAt: (t: number) => number = () => peakRate): number[] {
  const times: number[] = [];
  for (let t = from + exponential(random, peakRate); t < to; t += exponential(random, peakRate)) {
    if (random() * peakRate < rateAt(t)) times.push(t);
  }
  return times;
}

/** 08:00–18:00 of the simulated day (t = 0 is midnight). */
function workingHours(t: number): boolean {
  const hourOfDay = (t / 3600) % 24;
  return hourOfDay >= 8 && hourOfDay < 18;
}

// --- the traces --------------------------------------------------------------------------------

/** Steady: a constant ~11k/day Poisson rate, log-normal run times (median 5 min, at most 2 h), mostly small. */
function steady(random: Random): GeneratedRow[] {
  return poissonArrivals(random, 0, horizonS, 11_000 / 86_400).map((submitS) => {
    const durationS = logNormalWithin(random, 300, 1.0, 1, 2 * 3600);
    const vcpus = pick(random, [
      [1, 80],
      [2, 14],
      [4, 6],
    ] as const);
    const ramMiB = vcpus === 1 ? pick(random, [
      [1024, 55],
      [2048, 45],
    ] as const) : vcpus * pick(random, [
      [1024, 30],
      [2048, 50],
      [4096, 20],
    ] as const);
    const priority = pick(random, [
      [0, 85],
      [1, 10],
      [-1, 5],
    ] as const);
    return { submitS, durationS, vcpus, ramMiB, priority };
  });
}

/**
 * Bursty, like CI: a base Poisson load (twice as dense in working hours) plus bursts of 100–800
 * short containers (30 s–10 min) landing within one to two minutes. A burst comes every 30–60 min
 * in working hours (200–800 containers) and every 60–120 min outside them (100–300).
 */
function bursty(random: Random): GeneratedRow[] {
  const rows: GeneratedRow[] = [];
  const baseDay = 0.05;
  const baseNight = 0.025;
  for (const submitS of poissonArrivals(random, 0, horizonS, baseDay, (t) => (workingHours(t) ? baseDay : baseNight))) {
    const vcpus = pick(random, [
      [1, 60],
      [2, 30],
      [4, 10],
    ] as const);
    rows.push({
      submitS,
      durationS: logNormalWithin(random, 600, 1.0, 10, 3 * 3600),
      vcpus,
      ramMiB: vcpus * pick(random, [
        [1024, 40],
        [2048, 60],
      ] as const),
      priority: 1,
    });
  }
  let burstAt = uniform(random, 5 * 60, 30 * 60);
  while (burstAt < horizonS) {
    const busy = workingHours(burstAt);
    const size = busy ? between(random, 200, 800) : between(random, 100, 300);
    const window = uniform(random, 60, 120);
    for (let i = 0; i < size; i++) {
      const submitS = burstAt + random() * window;
      if (submitS >= horizonS) continue;
      const vcpus = pick(random, [
        [1, 70],
        [2, 27],
        [4, 3],
      ] as const);
      rows.push({
        submitS,
        durationS: logNormalWithin(random, 120, 0.8, 30, 600),
        vcpus,
        ramMiB: vcpus * pick(random, [
          [1024, 30],
          [2048, 70],
        ] as const),
        priority: 0,
      });
    }
    burstAt += busy ? uniform(random, 30 * 60, 60 * 60) : uniform(random, 60 * 60, 120 * 60);
  }
  return rows;
}

/**
 * Long tail: Poisson arrivals at ~11k/day, Pareto run times (from 15 s, shape 1.1, at most 12 h):
 * nine in ten end within 2 minutes, a few dozen run for hours. Long runners get a lower priority.
 */
function longtail(random: Random): GeneratedRow[] {
  return poissonArrivals(random, 0, horizonS, 11_000 / 86_400).map((submitS) => {
    const durationS = truncatedPareto(random, 15, 1.1, 12 * 3600);
    const vcpus = pick(random, [
      [1, 80],
      [2, 14],
      [4, 5],
      [8, 1],
    ] as const);
    const ramMiB = vcpus * pick(random, [
      [1024, 35],
      [2048, 45],
      [4096, 20],
    ] as const);
    return { submitS, durationS, vcpus, ramMiB, priority: durationS > 3600 ? -1 : 0 };
  });
}

const traces: readonly { name: string; salt: number; build: (random: Random) => GeneratedRow[] }[] = [
  { name: 'steady', salt: 0x5eed0001, build: steady },
  { name: 'bursty', salt: 0x5eed0002, build: bursty },
  { name: 'longtail', salt: 0x5eed0003, build: longtail },
];

export const traceNames: readonly string[] = traces.map((trace) => trace.name);

/** A number with at most 3 decimals and no trailing zeros. */
function formatNumber(value: number): string {
  const rounded = Math.round(value * 1000) / 1000;
  return String(rounded === 0 ? 0 : rounded);
}

/** The CSV text of rows: rounded to milliseconds, then sorted by submit time (stable). */
export function toCsv(rows: readonly GeneratedRow[]): string {
  const rounded = rows
    .map((row) => ({ ...row, submitS: Math.round(row.submitS * 1000) / 1000, durationS: Math.max(0, Math.round(row.durationS * 1000) / 1000) }))
    .sort((a, b) => a.submitS - b.submitS);
  const lines = ['submit_s,duration_s,vcpus,ram_mib,priority'];
  for (const row of rounded) {
    lines.push(`${formatNumber(row.submitS)},${formatNumber(row.durationS)},${row.vcpus},${row.ramMiB},${row.priority}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Builds one trace's rows (unsorted, unrounded) from the seed. */
export function buildTrace(name: string, seed: number = defaultSeed): GeneratedRow[] {
  const trace = traces.find((candidate) => candidate.name === name);
  if (!trace) throw new Error(`no trace named ${name} (known: ${traceNames.join(', ')})`);
  const rows = trace.build(mulberry32((seed ^ trace.salt) >>> 0));
  for (const row of rows) {
    if (row.vcpus > maxVcpus || row.ramMiB > maxRamMiB) throw new Error(`${name}: a container of ${row.vcpus} vCPUs / ${row.ramMiB} MiB fits no type`);
  }
  return rows;
}

/** Writes every trace into dir (created if missing) and returns a summary of each. */
export function generateTraces(dir: string, seed: number = defaultSeed): TraceSummary[] {
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
  mkdirSync(dir, { recursive: true });
  return traceNames.map((name) => {
    const rows = buildTrace(name, seed);
    const csv = toCsv(rows);
    const first = rows.reduce((min, row) => Math.min(min, row.submitS), Infinity);
    const last = rows.reduce((max, row) => Math.max(max, row.submitS), -Infinity);
    const spanHours = rows.length === 0 ? 0 : (last - first) / 3600;
    if (rows.length < minRows || spanHours < 24) {
      throw new Error(`${name}: seed ${seed} gives ${rows.length} rows over ${spanHours.toFixed(2)} h; a trace needs ≥ ${minRows} over ≥ 24 h (try another seed)`);
    }
    const path = join(dir, `${name}.csv`);
    writeFileSync(path, csv);
    return {
      name,
      path,
      rows: rows.length,
      spanHours,
      containerHours: rows.reduce((sum, row) => sum + row.durationS, 0) / 3600,
      bytes: Buffer.byteLength(csv),
    };
  });
}

export function formatSummary(summary: TraceSummary): string {
  return `${summary.name}: ${summary.rows} rows, span ${summary.spanHours.toFixed(2)} h, ${summary.containerHours.toFixed(1)} container-hours, ${(summary.bytes / 1024).toFixed(0)} KiB -> ${shortPath(summary.path)}`;
}

/** The path relative to the working directory when it lies under it. */
function shortPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === '' || rel.startsWith('..') || isAbsolute(rel) ? path : rel;
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  let seed = defaultSeed;
  let out = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const value = args[i + 1];
    if (arg === '--seed' && value !== undefined) {
      seed = Number(value);
      i++;
    } else if (arg === '--out' && value !== undefined) {
      out = value;
      i++;
    } else {
      console.error(`usage: tsx bench/traces/generate.ts [--seed N] [--out DIR]   (unexpected ${JSON.stringify(arg)})`);
      process.exit(2);
    }
  }
  for (const summary of generateTraces(out, seed)) console.log(formatSummary(summary));
}
