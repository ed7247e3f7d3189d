// A seeded mixed workload for the dispatcher: containers of 1–8 vCPUs with RAM in proportion and
// run times drawn from a range, the same for the same seed. On the stub cloud each container's run
// time travels in its STUB_RUN_MS env var (the stub's start honours it).
// Usage: npx tsx bench/workload.ts [count] [seed]   (prints a summary as JSON)
import { stubRunMsEnv } from '../src/cloud/stub/stub-cloud.js';
import { mulberry32 } from '../src/seeded-random.js';
import type { ContainerSpec } from '../src/queue/types.js';
import { isMain } from '../src/is-main.js';

export interface WorkloadOptions {
  /** Containers to generate; default 500. */
  count?: number;
  /** Default 1. */
  seed?: number;
  /** Inclusive range of vCPUs per container; default 1..8. */
  vcpus?: { min: number; max: number };
  /** RAM per vCPU in MiB; default 1536 (so a container fits a type of as many vCPUs at 2 GiB each). */
  ramMiBPerVcpu?: number;
  /** Inclusive range of run times in ms, drawn uniformly; default 20 s..120 s. */
  runMs?: { min: number; max: number };
}

export interface WorkloadItem {
  vcpus: number;
  ramMiB: number;
  runMs: number;
}

/** An integer drawn uniformly from [min, max]. */
function between(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

export function generateWorkload(options: WorkloadOptions = {}): WorkloadItem[] {
  const { count = 500, seed = 1, vcpus = { min: 1, max: 8 }, ramMiBPerVcpu = 1536, runMs = { min: 20_000, max: 120_000 } } = options;
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`workload count must be a non-negative integer, got ${count}`);
  if (vcpus.min < 1 || vcpus.max < vcpus.min) throw new Error(`bad vCPU range ${vcpus.min}..${vcpus.max}`);
  if (runMs.min < 0 || runMs.max < runMs.min) throw new Error(`bad run time range ${runMs.min}..${runMs.max}`);
  const random = mulberry32(seed);
  return Array.from({ length: count }, () => {
    const cpus = between(random, vcpus.min, vcpus.max);
    return { vcpus: cpus, ramMiB: cpus * ramMiBPerVcpu, runMs: between(random, runMs.min, runMs.max) };
  });
}

/** The container spec to submit for an item; its run time goes to the stub in STUB_RUN_MS. */
export function workloadSpec(item: WorkloadItem, overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    image: null,
    command: ['true'],
    env: { [stubRunMsEnv]: String(item.runMs) },
    constraints: { vcpus: item.vcpus, ramMiB: item.ramMiB, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
    ...overrides,
  };
}

/** Totals of a workload: containers, vCPU-seconds of work, and how many of each vCPU count. */
export function summarize(items: readonly WorkloadItem[]): { count: number; vcpuSeconds: number; byVcpus: Record<number, number> } {
  const byVcpus: Record<number, number> = {};
  let vcpuSeconds = 0;
  for (const item of items) {
    byVcpus[item.vcpus] = (byVcpus[item.vcpus] ?? 0) + 1;
    vcpuSeconds += (item.vcpus * item.runMs) / 1000;
  }
  return { count: items.length, vcpuSeconds, byVcpus };
}

if (isMain(import.meta.url)) {
  const count = Number(process.argv[2] ?? 500);
  const seed = Number(process.argv[3] ?? 1);
  console.log(JSON.stringify(summarize(generateWorkload({ count, seed }))));
}
