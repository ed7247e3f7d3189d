// Tests of the stub cloud's launch config faults: zones out of capacity and images that never
// boot, taken from the launch config a create names, and their cloud.stub config keys.

import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../src/clock.js';
import type { CloudInstance, LaunchConfig } from '../src/cloud/driver.js';
import { CapacityError } from '../src/cloud/errors.js';
import { cloudFromConfig } from '../src/cloud/from-config.js';
import { defaultStubFaults, type StubFaults } from '../src/cloud/stub/faults.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { parseConfig } from '../src/config/load.js';
import { instanceTypeFixture } from './support/fixtures.js';

const bootProbeCommand = 'test -e /run/drover-ready';
const small = instanceTypeFixture('small');
const poolTags = { 'drover-pool': 'p1' };

function makeCloud(faults: Partial<StubFaults> = {}): StubCloud {
  return new StubCloud({ clock: systemClock, faults, bootProbeCommand, runnerCommand: 'drover-runner' });
}

function launchConfig(fields: Partial<LaunchConfig> = {}): LaunchConfig {
  return { id: 'lc-1', instanceType: 'small', zone: null, region: null, subnet: null, image: null, extra: {}, ...fields };
}

async function probe(cloud: StubCloud, instance: CloudInstance): Promise<number | null> {
  const session = cloud.executorFor({ id: instance.id, address: instance.address ?? '', port: instance.port ?? 22 });
  return (await session.run(bootProbeCommand)).exitCode;
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});

afterEach(() => {
  vi.useRealTimers();
});

describe('stub launch config faults', () => {
  it('change nothing by default', () => {
    expect(defaultStubFaults.capacityErrorZones).toEqual([]);
    expect(defaultStubFaults.brokenImages).toEqual([]);
  });

  it('refuses a create whose launch config names a zone in capacityErrorZones, for its type and zone, and makes no VM', async () => {
    const cloud = makeCloud({ capacityErrorZones: ['zone-b'] });
    const error = await cloud.create({ instanceType: small, launchConfig: launchConfig({ zone: 'zone-b' }), tags: poolTags }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CapacityError);
    expect(error).toMatchObject({ instanceType: 'small', zone: 'zone-b' });
    expect(cloud.liveCount()).toBe(0);

    // Another zone, a launch config without a zone, and a create without a launch config all go ahead.
    await cloud.create({ instanceType: small, launchConfig: launchConfig({ zone: 'zone-a' }), tags: poolTags });
    await cloud.create({ instanceType: small, launchConfig: launchConfig(), tags: poolTags });
    await cloud.create({ instanceType: small, tags: poolTags });
    expect(cloud.liveCount()).toBe(3);

    // Read on every call, like every other fault.
    cloud.faults.capacityErrorZones = [];
    await expect(cloud.create({ instanceType: small, launchConfig: launchConfig({ zone: 'zone-b' }), tags: poolTags })).resolves.toBeDefined();
  });

  it('never boots a VM created from a launch config whose image is in brokenImages; other images boot', async () => {
    const cloud = makeCloud({ brokenImages: ['img-bad'], bootDelayMs: { min: 10, max: 10 } });
    const broken = await cloud.create({ instanceType: small, launchConfig: launchConfig({ id: 'lc-bad', image: 'img-bad' }), tags: poolTags });
    const good = await cloud.create({ instanceType: small, launchConfig: launchConfig({ id: 'lc-good', image: 'img-good' }), tags: poolTags });
    const plain = await cloud.create({ instanceType: small, tags: poolTags });
    await vi.advanceTimersByTimeAsync(24 * 3_600_000);
    expect(await probe(cloud, broken)).toBe(1);
    expect(cloud.getVm(broken.id)?.bootAt).toBe(Infinity);
    expect(await probe(cloud, good)).toBe(0);
    expect(await probe(cloud, plain)).toBe(0);
  });

  it('records the launch config each VM was created from', async () => {
    const cloud = makeCloud();
    const from = await cloud.create({ instanceType: small, launchConfig: launchConfig({ id: 'lc-7' }), tags: poolTags });
    const without = await cloud.create({ instanceType: small, tags: poolTags });
    expect(cloud.getVm(from.id)?.launchConfigId).toBe('lc-7');
    expect(cloud.getVm(without.id)?.launchConfigId).toBeUndefined();
  });

  it('draws no random number for a broken image, so the seeded sequence of other VMs is as without it', async () => {
    const faults = { bootDelayMs: { min: 1_000, max: 60_000 }, neverBootFraction: 0.5, seed: 7 };
    const reference = makeCloud(faults);
    const withBroken = makeCloud({ ...faults, brokenImages: ['img-bad'] });
    const bootAts = async (cloud: StubCloud, leadingBroken: boolean) => {
      if (leadingBroken) await cloud.create({ instanceType: small, launchConfig: launchConfig({ image: 'img-bad' }), tags: poolTags });
      const made = [];
      for (let i = 0; i < 5; i++) made.push(await cloud.create({ instanceType: small, tags: poolTags }));
      return made.map((instance) => cloud.getVm(instance.id)?.bootAt);
    };
    expect(await bootAts(withBroken, true)).toEqual(await bootAts(reference, false));
  });
});

describe('cloud.stub launch config faults in a config file', () => {
  const config = (stub: string) =>
    parseConfig(
      `cloud:\n  driver: stub\n  stub:\n${stub}instanceTypes:\n  small: { providerType: t3.small, vcpus: 2, ramMiB: 2048, price: 0.02 }\n`,
      'test.yml',
    );

  it('reads capacityErrorZones and brokenImages, defaulting to none, and hands them to the stub', async () => {
    expect(config('').cloud.stub).toMatchObject({ capacityErrorZones: [], brokenImages: [] });
    const parsed = config('    capacityErrorZones: [zone-b]\n    brokenImages: [img-bad, img-worse]\n');
    expect(parsed.cloud.stub).toMatchObject({ capacityErrorZones: ['zone-b'], brokenImages: ['img-bad', 'img-worse'] });
    const cloud = await cloudFromConfig(parsed, systemClock, new Registry());
    try {
      expect(cloud.stub?.faults).toMatchObject({ capacityErrorZones: ['zone-b'], brokenImages: ['img-bad', 'img-worse'] });
    } finally {
      await cloud.close();
    }
  });

  it('names the key of a bad entry', () => {
    expect(() => config('    capacityErrorZones: [""]\n')).toThrow('test.yml: cloud.stub.capacityErrorZones[0]: must not be empty');
    expect(() => config('    brokenImages: img-bad\n')).toThrow('test.yml: cloud.stub.brokenImages: expected a list, got "img-bad"');
  });
});
