// Tests of the cloud driver decorators: the shared rate limiter and the Prometheus metering.

import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SimulatedClock } from 'xstate';
import { systemClock } from '../src/clock.js';
import type { CloudDriver, CloudInstance } from '../src/cloud/driver.js';
import { CapacityError, CloudError } from '../src/cloud/errors.js';
import { metered } from '../src/cloud/metered.js';
import { rateLimited } from '../src/cloud/rate-limited.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { instanceTypeFixture } from './support/fixtures.js';

const small = instanceTypeFixture('small');

const instance: CloudInstance = { id: 'i-1', providerType: 'prov.small', address: '10.0.0.1', tags: {} };

/** A driver that records, per call, the operation and when it started. */
function recordingDriver(now: () => number): { driver: CloudDriver; starts: Array<[string, number]> } {
  const starts: Array<[string, number]> = [];
  const driver: CloudDriver = {
    create: async () => {
      starts.push(['create', now()]);
      return instance;
    },
    list: async () => {
      starts.push(['list', now()]);
      return [];
    },
    destroy: async () => {
      starts.push(['destroy', now()]);
    },
    setTags: async () => {
      starts.push(['setTags', now()]);
    },
  };
  return { driver, starts };
}

describe('rateLimited', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('spaces calls 1000/maxOpsPerSecond ms apart', async () => {
    const { driver, starts } = recordingDriver(() => Date.now());
    const limited = rateLimited(driver, { maxOpsPerSecond: 2, clock: systemClock });
    const calls = [limited.list({}), limited.list({}), limited.list({})];
    // The first call needs no wait, so it starts synchronously.
    expect(starts).toHaveLength(1);

    await vi.advanceTimersByTimeAsync(999);
    expect(starts).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(starts).toHaveLength(3);
    expect(starts.map(([, at]) => at)).toEqual([0, 500, 1000]);
    await Promise.all(calls);
  });

  it('shares one limit across all operations, in call order', async () => {
    const { driver, starts } = recordingDriver(() => Date.now());
    const limited = rateLimited(driver, { maxOpsPerSecond: 10, clock: systemClock });
    const calls = [
      limited.destroy('x'),
      limited.create({ instanceType: small, tags: {} }),
      limited.setTags('x', {}),
      limited.list({}),
    ];
    await vi.advanceTimersByTimeAsync(1_000);
    await Promise.all(calls);
    expect(starts).toEqual([
      ['destroy', 0],
      ['create', 100],
      ['setTags', 200],
      ['list', 300],
    ]);
  });

  it('does not wait after an idle period, and passes results and errors through', async () => {
    const failing: CloudDriver = {
      ...recordingDriver(() => Date.now()).driver,
      destroy: () => Promise.reject(new CloudError('nope')),
    };
    const limited = rateLimited(failing, { maxOpsPerSecond: 1, clock: systemClock });
    await expect(limited.create({ instanceType: small, tags: {} })).resolves.toBe(instance);
    await vi.advanceTimersByTimeAsync(5_000);
    let settled = false;
    const pending = limited.destroy('x').catch((e: unknown) => {
      settled = true;
      return e;
    });
    await Promise.resolve();
    await Promise.resolve();
    expect(settled).toBe(true);
    expect(await pending).toBeInstanceOf(CloudError);
  });

  it('works on XState SimulatedClock', async () => {
    const clock = new SimulatedClock();
    const { driver, starts } = recordingDriver(() => clock.now());
    const limited = rateLimited(driver, { maxOpsPerSecond: 4, clock });
    const calls = [limited.list({}), limited.list({})];
    expect(starts).toHaveLength(1);
    clock.increment(249);
    expect(starts).toHaveLength(1);
    clock.increment(1);
    expect(starts).toHaveLength(2);
    await Promise.all(calls);
  });
});

describe('metered', () => {
  async function counterValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
    const metric = registry.getSingleMetric(name);
    if (!metric) throw new Error(`no metric ${name}`);
    const { values } = await metric.get();
    const match = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
    return match?.value ?? 0;
  }

  it('counts successes and errors with operation, error and class labels', async () => {
    const registry = new Registry();
    const cloud = new StubCloud({
      clock: systemClock,
      faults: { capacityErrorTypes: ['small'] },
      bootProbeCommand: 'probe',
      runnerCommand: 'runner',
    });
    const driver = metered(cloud, registry);

    await driver.list({});
    await driver.list({});
    await expect(driver.create({ instanceType: small, tags: {} })).rejects.toBeInstanceOf(CapacityError);
    cloud.faults.destroyErrorRate = 1;
    await expect(driver.destroy('stub-1')).rejects.toBeInstanceOf(CloudError);
    await expect(driver.setTags('stub-404', {})).rejects.toBeInstanceOf(CloudError);

    const ops = 'drover_cloud_operations_total';
    expect(await counterValue(registry, ops, { operation: 'list', error: 'false' })).toBe(2);
    expect(await counterValue(registry, ops, { operation: 'list', error: 'true' })).toBe(0);
    expect(await counterValue(registry, ops, { operation: 'create', error: 'true' })).toBe(1);
    expect(await counterValue(registry, ops, { operation: 'create', error: 'false' })).toBe(0);
    expect(await counterValue(registry, ops, { operation: 'destroy', error: 'true' })).toBe(1);
    expect(await counterValue(registry, ops, { operation: 'setTags', error: 'true' })).toBe(1);

    const errors = 'drover_cloud_errors_total';
    expect(await counterValue(registry, errors, { operation: 'create', class: 'CapacityError' })).toBe(1);
    expect(await counterValue(registry, errors, { operation: 'destroy', class: 'CloudError' })).toBe(1);
    expect(await counterValue(registry, errors, { operation: 'setTags', class: 'CloudError' })).toBe(1);
    expect(await counterValue(registry, errors, { operation: 'list' })).toBe(0);

    const text = await registry.getSingleMetricAsString(ops);
    expect(text).toContain('drover_cloud_operations_total{operation="list",error="false"} 2');
  });

  it('can wrap drivers twice on one registry, sharing the counters', async () => {
    const registry = new Registry();
    const { driver: first } = recordingDriver(() => 0);
    const { driver: second } = recordingDriver(() => 0);
    const a = metered(first, registry);
    const b = metered(second, registry);
    await a.destroy('x');
    await b.destroy('y');
    expect(await counterValue(registry, 'drover_cloud_operations_total', { operation: 'destroy', error: 'false' })).toBe(
      2,
    );
  });

  it('counts a driver that throws synchronously', async () => {
    const registry = new Registry();
    const throwing: CloudDriver = {
      ...recordingDriver(() => 0).driver,
      list: () => {
        throw new TypeError('bad');
      },
    };
    await expect(metered(throwing, registry).list({})).rejects.toBeInstanceOf(TypeError);
    expect(await counterValue(registry, 'drover_cloud_errors_total', { operation: 'list', class: 'TypeError' })).toBe(1);
  });
});
