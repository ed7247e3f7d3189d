// /metrics after an end-to-end run on loopback: a real daemon (real SSH to sandboxes, real runner
// processes, a real SQLite file, the HTTP API with its token), scraped over HTTP and read with a
// strict parser of the text format. Time inside the daemon is a SimulatedClock the test moves on,
// as in e2e-loopback.test.ts; containers run in real time.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { SimulatedClock } from 'xstate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/cli/client.js';
import { parseConfig } from '../src/config/load.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import { family, histogramOf, parsePromText, valueOf, type MetricFamily } from './support/prom-text.js';
import { shippedConfig } from './support/shipped-config.js';

const timeoutIdle = 60_000;
const submitted = 3;
const dir = mkdtempSync(join(tmpdir(), 'drover-metrics-e2e-'));
const clock = new SimulatedClock();
let daemon: Daemon | undefined;
let api: ApiClient;

// Two sandboxes at most (the shipped config), two containers at once: the third waits its turn.
const config = parseConfig(
  shippedConfig('loopback.yml', { 'http.port': 0, 'pool.timeoutIdle': `${timeoutIdle / 1000}s`, 'scheduler.maxConcurrentContainers': 2 }),
  'config/loopback.yml (test copy)',
  { home: dir },
);
const vcpusOf = (type: string | undefined): number => config.instanceTypes[type ?? '']?.vcpus ?? Number.NaN;
const ramOf = (type: string | undefined): number => config.instanceTypes[type ?? '']?.ramMiB ?? Number.NaN;

function sandboxes(): number {
  return readdirSync(join(dir, 'loopback', 'instances')).filter((name) => name.startsWith('lo-')).length;
}

/** Moves the daemon's clock forward in small steps, giving real I/O a moment between them. */
async function drive(until: () => boolean | Promise<boolean>, limitRealMs: number, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + limitRealMs;
  while (Date.now() < deadline) {
    if (await until()) return true;
    clock.increment(stepMs);
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  return until();
}

async function scrape(): Promise<Map<string, MetricFamily>> {
  return parsePromText(await api.metrics());
}

/** What the booted instances (idle or running) offer, from drover_instances in the same scrape. */
function booted(families: Map<string, MetricFamily>): { vcpus: number; ramMiB: number } {
  let vcpus = 0;
  let ramMiB = 0;
  for (const sample of family(families, 'drover_instances', 'gauge').samples) {
    if (sample.labels.state !== 'idle' && sample.labels.state !== 'running') continue;
    vcpus += sample.value * vcpusOf(sample.labels.instance_type);
    ramMiB += sample.value * ramOf(sample.labels.instance_type);
  }
  return { vcpus, ramMiB };
}

/** A histogram series whose buckets rise with their bounds and end at +Inf with its count. */
function checkedHistogram(families: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}) {
  const histogram = histogramOf(family(families, name, 'histogram'), labels);
  for (const [index, bucket] of histogram.buckets.entries()) {
    expect(bucket.count, `${name} bucket le=${bucket.le}`).toBeGreaterThanOrEqual(histogram.buckets[index - 1]?.count ?? 0);
  }
  expect(histogram.buckets.at(-1)).toEqual({ le: Infinity, count: histogram.count });
  expect(histogram.sum).toBeGreaterThanOrEqual(0);
  return histogram;
}

function containers(families: Map<string, MetricFamily>, state: string): number {
  return family(families, 'drover_containers', 'gauge')
    .samples.filter((sample) => sample.labels.state === state)
    .reduce((sum, sample) => sum + sample.value, 0);
}

beforeAll(async () => {
  clock.set(Date.now());
  daemon = await startDaemon(config, { clock, logger: pino({ level: 'silent' }) });
  api = new ApiClient({ url: daemon.url, token: readFileSync(join(dir, 'token'), 'utf8').trim() });
});

afterAll(async () => {
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('/metrics after an end-to-end run on loopback', () => {
  it('needs the token', async () => {
    expect((await fetch(`${daemon!.url}/metrics`)).status).toBe(401);
  });

  it('reports every family with sane values while containers run, once they are done, and once the sandboxes are gone', async () => {
    const uuids: string[] = [];
    for (let n = 1; n <= submitted; n++) {
      uuids.push((await api.submit({ command: ['sh', '-c', 'sleep 1; echo done-$N'], env: { N: String(n) } })).uuid);
    }

    // While two run and one waits.
    let during: Map<string, MetricFamily> | undefined;
    expect(
      await drive(async () => {
        const families = await scrape();
        if (containers(families, 'running') + containers(families, 'locked') < 2 || containers(families, 'queued') < 1) return false;
        during = families;
        return true;
      }, 20_000),
    ).toBe(true);
    const runningNow = during!;
    const vcpus = family(runningNow, 'drover_vcpus', 'gauge');
    const inUse = valueOf(vcpus, { in_use: 'true' });
    expect(inUse).toBeGreaterThan(0);
    // Each holds 1 vCPU (the API's default constraints) from its start until its exit.
    expect(inUse).toBeLessThanOrEqual(containers(runningNow, 'running') + containers(runningNow, 'locked'));
    expect(inUse + valueOf(vcpus, { in_use: 'false' })).toBe(booted(runningNow).vcpus);
    const memory = family(runningNow, 'drover_memory_bytes', 'gauge');
    expect(valueOf(memory, { in_use: 'true' })).toBeGreaterThan(0);
    expect(valueOf(memory, { in_use: 'true' }) + valueOf(memory, { in_use: 'false' })).toBe(booted(runningNow).ramMiB * 1024 * 1024);
    expect(valueOf(family(runningNow, 'drover_containers', 'gauge'), { state: 'queued', instance_type: 'local' })).toBe(1);
    expect(valueOf(family(runningNow, 'drover_longest_wait_seconds', 'gauge'))).toBeGreaterThan(0);

    expect(await drive(async () => (await api.list({ state: 'complete' })).filter((c) => uuids.includes(c.uuid)).length === submitted, 20_000)).toBe(true);
    const done = await scrape();

    // Containers: every submitted one completed, each waited once, none waits now.
    for (const state of ['queued', 'locked', 'running']) expect(containers(done, state), state).toBe(0);
    const waits = checkedHistogram(done, 'drover_container_queue_wait_seconds');
    expect(waits.count).toBe(submitted);
    expect(valueOf(family(done, 'drover_longest_wait_seconds', 'gauge'))).toBe(0);
    expect(valueOf(family(done, 'drover_max_concurrent_containers', 'gauge'))).toBe(2);

    // Boots: every sandbox this daemon created booted, and each was timed.
    const outcomes = family(done, 'drover_boot_outcomes_total', 'counter');
    const boots = valueOf(outcomes, { outcome: 'booted' });
    expect(boots).toBeGreaterThan(0);
    expect(boots).toBeLessThanOrEqual(config.pool.maxInstances);
    expect(valueOf(outcomes, { outcome: 'failed' })).toBe(0);
    expect(checkedHistogram(done, 'drover_boot_seconds').count).toBe(boots);

    // Nothing runs: every booted vCPU and byte is free.
    const idle = booted(done);
    expect(idle.vcpus).toBeGreaterThan(0);
    expect(valueOf(family(done, 'drover_vcpus', 'gauge'), { in_use: 'true' })).toBe(0);
    expect(valueOf(family(done, 'drover_vcpus', 'gauge'), { in_use: 'false' })).toBe(idle.vcpus);
    expect(valueOf(family(done, 'drover_memory_bytes', 'gauge'), { in_use: 'false' })).toBe(idle.ramMiB * 1024 * 1024);

    // The scheduler and the probes.
    const passes = checkedHistogram(done, 'drover_scheduler_pass_seconds');
    expect(passes.count).toBeGreaterThan(0);
    expect(passes.sum).toBeGreaterThan(0);
    expect(checkedHistogram(done, 'drover_probe_seconds', { outcome: 'ok' }).count).toBeGreaterThan(0);
    checkedHistogram(done, 'drover_probe_seconds', { outcome: 'not_booted' });
    expect(checkedHistogram(done, 'drover_probe_seconds', { outcome: 'error' }).count).toBe(0);

    // Node's default metrics, and the cloud calls the run made.
    expect(valueOf(family(done, 'process_cpu_seconds_total', 'counter'))).toBeGreaterThan(0);
    expect(family(done, 'nodejs_heap_size_used_bytes', 'gauge').samples.length).toBe(1);
    expect(valueOf(family(done, 'drover_cloud_operations_total', 'counter'), { operation: 'create', error: 'false' })).toBe(boots);

    // Idle past timeoutIdle: every sandbox is shut down and gone, none of them vanished on its own.
    clock.increment(timeoutIdle);
    expect(await drive(() => sandboxes() === 0 && daemon!.pool.instances().length === 0, 20_000, 10)).toBe(true);
    const gone = await scrape();
    const shutdowns = checkedHistogram(gone, 'drover_shutdown_seconds');
    expect(shutdowns.count).toBe(boots);
    const disappeared = family(gone, 'drover_instances_disappeared_total', 'counter');
    for (const state of ['unknown', 'booting', 'idle', 'running']) expect(valueOf(disappeared, { state }), state).toBe(0);
    expect(valueOf(family(gone, 'drover_vcpus', 'gauge'), { in_use: 'false' })).toBe(0);
    expect(checkedHistogram(gone, 'drover_container_queue_wait_seconds').count).toBe(submitted);
  });
});
