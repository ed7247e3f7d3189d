// The Prometheus gauges read the pool and the queue at scrape time.
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerDroverMetrics } from '../src/daemon/metrics.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { queuePath, spec } from './support/dispatch-harness.js';
import { advance, createStub, instanceTypes, PoolHarness, poolTags, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

describe('metrics', () => {
  it('reports instances by state and behaviour, price, orphans and waiting containers', async () => {
    const stub = createStub();
    stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    stub.addInstance({ instanceType: instanceTypes.large!, tags: poolTags('large', { 'drover-idle-behavior': 'hold' }) });
    stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('retired') });
    const h = new PoolHarness(stub, { probeInterval: 1_000, timeoutIdle: 3_600_000 });
    const queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3 });
    const registry = new Registry();
    registerDroverMetrics(registry, h.pool, queue);
    await h.start();
    await advance(2_000);
    queue.submit(spec());
    queue.submit(spec());

    const text = await registry.metrics();
    expect(text).toContain('drover_instances{state="idle",idle_behavior="run",instance_type="small"} 1');
    expect(text).toContain('drover_instances{state="idle",idle_behavior="hold",instance_type="large"} 1');
    expect(text).toContain('drover_instances_hourly_price 0.25');
    expect(text).toContain('drover_orphan_instances 1');
    expect(text).toContain('drover_containers{state="queued"} 2');
    expect(text).toContain('drover_pool_creates_refused{cause="unloaded"} 0');
    expect(text).toContain('drover_max_instances_estimate -1');
    h.pool.stop();
    queue.close();
  });

  it('reports the quota estimate once a quota error sets one, and quota as a cause of refused creates', async () => {
    const stub = createStub({ quotaMaxInstances: 1 });
    const h = new PoolHarness(stub, { probeInterval: 1_000, timeoutIdle: 3_600_000 });
    const queue = new SqliteQueue({ path: queuePath(), maxAttempts: 3 });
    const registry = new Registry();
    registerDroverMetrics(registry, h.pool, queue);
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
});
