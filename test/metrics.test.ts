// The Prometheus metrics: gauges and counts read from the pool and the queue at scrape time, and
// the durations and losses the pool and the dispatcher report through their observers.
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../src/clock.js';
import { DroverMetrics, registerDroverMetrics } from '../src/daemon/metrics.js';
import type { Pool } from '../src/pool/pool.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { DispatchHarness, queuePath, spec } from './support/dispatch-harness.js';
import { advance, createStub, instanceTypes, PoolHarness, poolTags, useFakeClock } from './support/pool-harness.js';
import { family, histogramOf, parsePromText, PromTextError, valueOf, type MetricFamily } from './support/prom-text.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

function register(registry: Registry, pool: Pool, queue: SqliteQueue, maxConcurrentContainers: number | null = null): void {
  registerDroverMetrics(registry, { pool, queue, instanceTypes, maxConcurrentContainers, clock: systemClock });
}

async function scrape(registry: Registry): Promise<Map<string, MetricFamily>> {
  return parsePromText(await registry.metrics());
}

/** vCPUs of the booted (idle or running) instances, from drover_instances in the same scrape. */
function bootedVcpus(families: Map<string, MetricFamily>): number {
  let vcpus = 0;
  for (const sample of family(families, 'drover_instances', 'gauge').samples) {
    if (sample.labels.state !== 'idle' && sample.labels.state !== 'running') continue;
    vcpus += sample.value * (instanceTypes[sample.labels.instance_type ?? '']?.vcpus ?? Number.NaN);
  }
  return vcpus;
}

describe('metrics', () => {
  it('reports instances by state and behaviour, price, orphans, waiting containers by type and free vCPUs', async () => {
    const stub = createStub();
    stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    stub.addInstance({ instanceType: instanceTypes.large!, tags: poolTags('large', { 'drover-idle-behavior': 'hold' }) });
    stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('retired') });
    const h = new PoolHarness(stub, { probeInterval: 1_000, timeoutIdle: 3_600_000 });
    const queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3 });
    const registry = new Registry();
    register(registry, h.pool, queue);
    await h.start();
    await advance(2_000);
    queue.submit(spec());
    queue.submit(spec());
    queue.submit(spec({ constraints: { vcpus: 4, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } }));
    queue.submit(spec({ constraints: { vcpus: 64, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } }));
    await advance(3_000);

    const text = await registry.metrics();
    expect(text).toContain('drover_instances{state="idle",idle_behavior="run",instance_type="small"} 1');
    expect(text).toContain('drover_instances{state="idle",idle_behavior="hold",instance_type="large"} 1');
    expect(text).toContain('drover_instances_hourly_price 0.25');
    expect(text).toContain('drover_orphan_instances 1');
    // Queued: the cheapest type that fits; none for one no type fits.
    expect(text).toContain('drover_containers{state="queued",instance_type="small"} 2');
    expect(text).toContain('drover_containers{state="queued",instance_type="large"} 1');
    expect(text).toContain('drover_containers{state="queued",instance_type="none"} 1');
    expect(text).toContain('drover_containers{state="running",instance_type="small"} 0');
    expect(text).toContain('drover_pool_creates_refused{cause="unloaded"} 0');
    expect(text).toContain('drover_max_instances_estimate -1');
    expect(text).toContain('drover_max_concurrent_containers -1');
    expect(text).toContain('drover_longest_wait_seconds 3');
    // Nothing runs: the two booted instances' vCPUs (2 + 8) and RAM (4 + 16 GiB) are all free.
    expect(text).toContain('drover_vcpus{in_use="true"} 0');
    expect(text).toContain('drover_vcpus{in_use="false"} 10');
    expect(text).toContain(`drover_memory_bytes{in_use="false"} ${20_480 * 1024 * 1024}`);
    h.pool.stop();
    queue.close();
  });

  it('reports the quota estimate once a quota error sets one, and quota as a cause of refused creates', async () => {
    const stub = createStub({ quotaMaxInstances: 1 });
    const h = new PoolHarness(stub, { probeInterval: 1_000, timeoutIdle: 3_600_000 });
    const queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3 });
    const registry = new Registry();
    register(registry, h.pool, queue);
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await advance(2_000);
    expect(h.pool.create('small')).toBe(true);
    await advance(2_000);

    const text = await registry.metrics();
    expect(text).toContain('drover_max_instances_estimate 1');
    expect(text).toContain('drover_pool_creates_refused{cause="quota"} 1');
    h.pool.stop();
    queue.close();
  });

  it('times boots, probes and shutdowns, and counts an instance that vanishes by the state it was in', async () => {
    const stub = createStub({ bootDelayMs: { min: 5_000, max: 5_000 } });
    const registry = new Registry();
    const metrics = new DroverMetrics(registry);
    const h = new PoolHarness(stub, { probeInterval: 1_000, syncInterval: 5_000, timeoutIdle: 3_600_000 }, undefined, undefined, metrics);
    const queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3 });
    register(registry, h.pool, queue);
    await h.start();

    expect(h.pool.create('small')).toBe(true);
    await advance(10_000);
    const [first] = h.pool.instances();
    expect(first?.state).toBe('idle');
    let families = await scrape(registry);
    const boots = histogramOf(family(families, 'drover_boot_seconds', 'histogram'));
    expect(boots.count).toBe(1);
    // Booted 5 s after the create; seen at the first probe after that (every second).
    expect(boots.sum).toBeGreaterThanOrEqual(5);
    expect(boots.sum).toBeLessThanOrEqual(7);
    const outcomes = family(families, 'drover_boot_outcomes_total', 'counter');
    expect(valueOf(outcomes, { outcome: 'booted' })).toBe(1);
    expect(valueOf(outcomes, { outcome: 'failed' })).toBe(0);
    const probes = family(families, 'drover_probe_seconds', 'histogram');
    expect(histogramOf(probes, { outcome: 'ok' }).count).toBeGreaterThan(0);
    // Probed before it booted: not booted yet, which is no error.
    expect(histogramOf(probes, { outcome: 'not_booted' }).count).toBeGreaterThan(0);
    expect(histogramOf(probes, { outcome: 'error' }).count).toBe(0);

    // Shut down: gone at the first listing without it.
    h.pool.shutdown({ instanceId: first!.instanceId! });
    await advance(10_000);
    expect(h.pool.instances()).toEqual([]);
    families = await scrape(registry);
    const shutdowns = histogramOf(family(families, 'drover_shutdown_seconds', 'histogram'));
    expect(shutdowns.count).toBe(1);
    expect(shutdowns.sum).toBeGreaterThan(0);
    expect(shutdowns.sum).toBeLessThanOrEqual(10);
    const disappeared = family(families, 'drover_instances_disappeared_total', 'counter');
    for (const state of ['unknown', 'booting', 'idle', 'running']) expect(valueOf(disappeared, { state })).toBe(0);

    // One that vanishes while idle, nobody having shut it down.
    expect(h.pool.create('small')).toBe(true);
    await advance(10_000);
    const [second] = h.pool.instances();
    expect(second?.state).toBe('idle');
    stub.vanish(second!.instanceId!);
    await advance(20_000);
    expect(h.pool.instances()).toEqual([]);
    families = await scrape(registry);
    expect(valueOf(family(families, 'drover_instances_disappeared_total', 'counter'), { state: 'idle' })).toBe(1);
    expect(valueOf(family(families, 'drover_instances_disappeared_total', 'counter'), { state: 'booting' })).toBe(0);
    expect(histogramOf(family(families, 'drover_shutdown_seconds', 'histogram')).count).toBe(1);
    expect(histogramOf(family(families, 'drover_boot_seconds', 'histogram')).count).toBe(2);
    h.pool.stop();
    queue.close();
  });

  it('counts a boot that times out as failed, with no boot time', async () => {
    const stub = createStub({ neverBootFraction: 1 });
    const registry = new Registry();
    const metrics = new DroverMetrics(registry);
    const h = new PoolHarness(stub, { probeInterval: 1_000, syncInterval: 5_000, timeoutBooting: 20_000 }, undefined, undefined, metrics);
    const queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3 });
    register(registry, h.pool, queue);
    await h.start();
    expect(h.pool.create('small')).toBe(true);
    await advance(30_000);

    const families = await scrape(registry);
    const outcomes = family(families, 'drover_boot_outcomes_total', 'counter');
    expect(valueOf(outcomes, { outcome: 'failed' })).toBe(1);
    expect(valueOf(outcomes, { outcome: 'booted' })).toBe(0);
    expect(histogramOf(family(families, 'drover_boot_seconds', 'histogram')).count).toBe(0);
    expect(histogramOf(family(families, 'drover_probe_seconds', 'histogram'), { outcome: 'ok' }).count).toBe(0);
    // Shut down for it, not vanished.
    expect(valueOf(family(families, 'drover_instances_disappeared_total', 'counter'), { state: 'booting' })).toBe(0);
    h.pool.stop();
    queue.close();
  });

  it('reports what runs and what waits, the vCPUs and RAM it holds, queue waits and scheduling passes', async () => {
    const registry = new Registry();
    const metrics = new DroverMetrics(registry);
    const h = new DispatchHarness(createStub({ bootDelayMs: { min: 5_000, max: 5_000 } }), { scheduler: { maxConcurrentContainers: 2 }, observer: metrics });
    register(registry, h.pool, h.queue, 2);
    h.start();
    for (let n = 0; n < 3; n++) h.queue.submit(spec({ env: { STUB_RUN_MS: '30000' } }));
    expect(await h.runUntil(() => h.count('running') === 2, 60_000)).toBe(true);

    let families = await scrape(registry);
    const containers = family(families, 'drover_containers', 'gauge');
    expect(valueOf(containers, { state: 'running', instance_type: 'small' })).toBe(2);
    expect(valueOf(containers, { state: 'queued', instance_type: 'small' })).toBe(1);
    expect(valueOf(containers, { state: 'locked', instance_type: 'small' })).toBe(0);
    const vcpus = family(families, 'drover_vcpus', 'gauge');
    expect(valueOf(vcpus, { in_use: 'true' })).toBe(2);
    expect(valueOf(vcpus, { in_use: 'true' }) + valueOf(vcpus, { in_use: 'false' })).toBe(bootedVcpus(families));
    expect(valueOf(family(families, 'drover_memory_bytes', 'gauge'), { in_use: 'true' })).toBe(2 * 256 * 1024 * 1024);
    expect(valueOf(family(families, 'drover_max_concurrent_containers', 'gauge'))).toBe(2);
    // The third has waited since the submit, through the boot at least.
    expect(valueOf(family(families, 'drover_longest_wait_seconds', 'gauge'))).toBeGreaterThanOrEqual(5);
    expect(histogramOf(family(families, 'drover_container_queue_wait_seconds', 'histogram')).count).toBe(2);

    expect(await h.runUntil(() => h.count('complete') === 3, 120_000)).toBe(true);
    families = await scrape(registry);
    const waits = histogramOf(family(families, 'drover_container_queue_wait_seconds', 'histogram'));
    expect(waits.count).toBe(3);
    // The third waited for a first to finish (30 s).
    expect(waits.sum).toBeGreaterThanOrEqual(30);
    expect(valueOf(family(families, 'drover_longest_wait_seconds', 'gauge'))).toBe(0);
    expect(valueOf(family(families, 'drover_vcpus', 'gauge'), { in_use: 'true' })).toBe(0);
    for (const state of ['queued', 'locked', 'running']) {
      expect(valueOf(family(families, 'drover_containers', 'gauge'), { state, instance_type: 'small' })).toBe(0);
    }
    const passes = histogramOf(family(families, 'drover_scheduler_pass_seconds', 'histogram'));
    expect(passes.count).toBeGreaterThan(0);
    expect(passes.count).toBeLessThanOrEqual(h.dispatcher.passes);
    h.stop();
  });
});

describe('the Prometheus text parser of the tests', () => {
  it('reads families, labels with escapes and histograms', () => {
    const families = parsePromText(
      [
        '# HELP a_total Things, with a \\\\ and a \\n.',
        '# TYPE a_total counter',
        'a_total{kind="x\\"y",path="c:\\\\"} 3',
        '# TYPE h histogram',
        'h_bucket{le="1"} 1',
        'h_bucket{le="+Inf"} 2',
        'h_sum 1.5e0',
        'h_count 2',
        'untyped_thing NaN 1700000000000',
        'prom_client_nan Nan',
        'minus_inf -Inf',
        '',
      ].join('\n'),
    );
    const counter = family(families, 'a_total', 'counter');
    expect(counter.help).toBe('Things, with a \\ and a \n.');
    expect(valueOf(counter, { kind: 'x"y', path: 'c:\\' })).toBe(3);
    expect(histogramOf(family(families, 'h', 'histogram'))).toEqual({
      buckets: [
        { le: 1, count: 1 },
        { le: Infinity, count: 2 },
      ],
      count: 2,
      sum: 1.5,
    });
    expect(valueOf(family(families, 'untyped_thing', 'untyped'))).toBeNaN();
    expect(valueOf(family(families, 'prom_client_nan', 'untyped'))).toBeNaN();
    expect(valueOf(family(families, 'minus_inf', 'untyped'))).toBe(-Infinity);
  });

  it.each([
    ['a value that is no number', 'a 1x\n'],
    ['no value', 'a{b="c"}\n'],
    ['a bad metric name', '1a 1\n'],
    ['a bad label name', 'a{1b="c"} 1\n'],
    ['an unterminated label value', 'a{b="c} 1\n'],
    ['a bad escape', 'a{b="\\x"} 1\n'],
    ['an unknown type', '# TYPE a countr\na 1\n'],
    ['a TYPE after its samples', 'a 1\n# TYPE a gauge\n'],
    ['the same sample twice', 'a{b="c"} 1\na{b="c"} 2\n'],
    ['a family split in two', 'a 1\nb 1\na{c="d"} 1\n'],
    ['a histogram without +Inf', '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'],
    ['a histogram without _count', '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 1\n'],
    ['no final newline', 'a 1'],
  ])('refuses %s', (_what, text) => {
    expect(() => parsePromText(text)).toThrow(Error);
  });

  it('says which line is wrong', () => {
    expect(() => parsePromText('a 1\nb nope\n')).toThrow(PromTextError);
    expect(() => parsePromText('a 1\nb nope\n')).toThrow(/^line 2: bad value nope/);
  });
});
