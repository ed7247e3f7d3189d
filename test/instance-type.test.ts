// Tests of chooseInstanceType: cheapest fit, each constraint, preemptible rules, reasons and ties;
// and of fallbackTypes, the dearer types a container may take when its cheapest is out of capacity.

import { describe, expect, it } from 'vitest';
import type { InstanceType } from '../src/cloud/driver.js';
import type { Constraints } from '../src/queue/types.js';
import { chooseInstanceType, fallbackTypes } from '../src/scheduler/instance-type.js';
import { instanceTypeFixture as type } from './support/fixtures.js';

function types(...list: InstanceType[]): Record<string, InstanceType> {
  return Object.fromEntries(list.map((t) => [t.name, t]));
}

function want(fields: Partial<Constraints> = {}): Constraints {
  return { vcpus: 1, ramMiB: 1024, scratchGiB: 0, gpus: 0, preemptible: false, ...fields };
}

function chosen(constraints: Constraints, available: Record<string, InstanceType>): string {
  const result = chooseInstanceType(constraints, available);
  if (!result.ok) throw new Error(`expected a type, got: ${result.reason}`);
  return result.instanceType.name;
}

function reason(constraints: Constraints, available: Record<string, InstanceType>): string {
  const result = chooseInstanceType(constraints, available);
  if (result.ok) throw new Error(`expected no type, got ${result.instanceType.name}`);
  return result.reason;
}

const small = type('small', { vcpus: 2, ramMiB: 4096, scratchGiB: 20, price: 0.1 });
const medium = type('medium', { vcpus: 4, ramMiB: 16384, scratchGiB: 100, price: 0.2 });
const large = type('large', { vcpus: 8, ramMiB: 32768, scratchGiB: 50, price: 0.4 });
const gpu = type('gpu', { vcpus: 8, ramMiB: 65536, scratchGiB: 200, gpus: 2, price: 3 });
const pool = types(large, gpu, small, medium);

describe('cheapest fit', () => {
  it('picks the cheapest type that fits, whatever the record order', () => {
    expect(chosen(want(), pool)).toBe('small');
    expect(chosen(want({ vcpus: 3 }), pool)).toBe('medium');
    expect(chosen(want({ vcpus: 8 }), pool)).toBe('large');
    expect(chosen(want({ gpus: 1 }), pool)).toBe('gpu');
  });

  it('accepts a type that exactly matches the request', () => {
    expect(chosen(want({ vcpus: 2, ramMiB: 4096, scratchGiB: 20 }), pool)).toBe('small');
  });

  it('returns the configured object itself', () => {
    const result = chooseInstanceType(want(), pool);
    expect(result).toEqual({ ok: true, instanceType: small });
  });
});

describe('each constraint alone excludes a type', () => {
  // cheap meets every constraint but one; pricier meets them all.
  const cases: Array<[string, Partial<InstanceType>, Partial<Constraints>]> = [
    ['vcpus', { vcpus: 1 }, { vcpus: 2 }],
    ['ramMiB', { ramMiB: 2047 }, { ramMiB: 2048 }],
    ['scratchGiB', { scratchGiB: 9 }, { scratchGiB: 10 }],
    ['gpus', { gpus: 0 }, { gpus: 1 }],
  ];
  for (const [name, cheapFields, request] of cases) {
    it(name, () => {
      const pricier = type('pricier', { vcpus: 4, ramMiB: 8192, scratchGiB: 100, gpus: 1, price: 1 });
      const cheap = type('cheap', { vcpus: 4, ramMiB: 8192, scratchGiB: 100, gpus: 1, price: 0.01, ...cheapFields });
      const available = types(cheap, pricier);
      expect(chosen(want(), available)).toBe('cheap');
      expect(chosen(want(request), available)).toBe('pricier');
    });
  }
});

describe('preemptible', () => {
  const spot = type('spot', { vcpus: 4, ramMiB: 16384, price: 0.05, preemptible: true });
  const onDemand = type('onDemand', { vcpus: 4, ramMiB: 16384, price: 0.2 });

  it('never puts a non-preemptible container on a preemptible type, however cheap', () => {
    expect(chosen(want({ preemptible: false }), types(spot, onDemand))).toBe('onDemand');
  });

  it('lets a preemptible container use the cheaper preemptible type', () => {
    expect(chosen(want({ preemptible: true }), types(spot, onDemand))).toBe('spot');
  });

  it('lets a preemptible container use a non-preemptible type when it is cheaper', () => {
    const cheapOnDemand = type('cheapOnDemand', { vcpus: 4, ramMiB: 16384, price: 0.01 });
    expect(chosen(want({ preemptible: true }), types(spot, cheapOnDemand))).toBe('cheapOnDemand');
  });

  it('says so when only preemptible types exist', () => {
    expect(reason(want(), types(spot))).toBe(
      'every instance type is preemptible and the container does not allow preemptible instances',
    );
  });

  it('says a preemptible type would have fitted when only the rule stands in the way', () => {
    const bigSpot = type('bigSpot', { vcpus: 32, ramMiB: 131072, price: 0.5, preemptible: true });
    expect(reason(want({ vcpus: 16 }), types(bigSpot, onDemand))).toBe(
      'no non-preemptible instance type has 16 vCPUs (largest: 4)' +
        ' (preemptible bigSpot would fit, but the container does not allow preemptible instances)',
    );
  });

  it('measures "largest" among the types the container may use', () => {
    const bigSpot = type('bigSpot', { vcpus: 32, price: 0.5, preemptible: true });
    expect(reason(want({ vcpus: 64 }), types(bigSpot, onDemand))).toBe(
      'no non-preemptible instance type has 64 vCPUs (largest: 4)',
    );
    expect(reason(want({ vcpus: 64, preemptible: true }), types(bigSpot, onDemand))).toBe(
      'no instance type has 64 vCPUs (largest: 32)',
    );
  });
});

describe('reasons', () => {
  it('names vCPUs', () => {
    expect(reason(want({ vcpus: 64 }), pool)).toBe('no instance type has 64 vCPUs (largest: 8)');
  });

  it('names RAM', () => {
    expect(reason(want({ ramMiB: 131072 }), pool)).toBe('no instance type has 131072 MiB RAM (largest: 65536 MiB)');
  });

  it('names scratch', () => {
    expect(reason(want({ scratchGiB: 500 }), pool)).toBe('no instance type has 500 GiB scratch (largest: 200 GiB)');
  });

  it('names GPUs, singular and plural', () => {
    expect(reason(want({ gpus: 4 }), pool)).toBe('no instance type has 4 GPUs (largest: 2)');
    expect(reason(want({ gpus: 1 }), types(small, medium))).toBe('no instance type has 1 GPU (largest: 0)');
  });

  it('names every constraint nothing can meet on its own', () => {
    expect(reason(want({ vcpus: 64, gpus: 8 }), pool)).toBe(
      'no instance type has 64 vCPUs (largest: 8); no instance type has 8 GPUs (largest: 2)',
    );
  });

  it('names a pair that no single type meets together', () => {
    const noGpu = types(small, medium, large);
    // large has 8 vCPUs, medium has 100 GiB scratch, none has both.
    expect(reason(want({ vcpus: 8, scratchGiB: 100 }), noGpu)).toBe(
      'no instance type has 8 vCPUs and 100 GiB scratch together',
    );
  });

  it('names the smallest clashing set, not every constraint asked for', () => {
    const noGpu = types(small, medium, large);
    // The RAM request fits large, so only vCPUs and scratch clash.
    expect(reason(want({ vcpus: 8, ramMiB: 32768, scratchGiB: 100 }), noGpu)).toBe(
      'no instance type has 8 vCPUs and 100 GiB scratch together',
    );
  });

  it('names three constraints when every pair of them fits some type', () => {
    const a = type('a', { vcpus: 8, ramMiB: 8192, scratchGiB: 10 });
    const b = type('b', { vcpus: 8, ramMiB: 1024, scratchGiB: 100 });
    const c = type('c', { vcpus: 1, ramMiB: 8192, scratchGiB: 100 });
    expect(reason(want({ vcpus: 8, ramMiB: 8192, scratchGiB: 100 }), types(a, b, c))).toBe(
      'no instance type has 8 vCPUs, 8192 MiB RAM and 100 GiB scratch together',
    );
  });

  it('says when no type is configured', () => {
    expect(reason(want(), {})).toBe('no instance types are configured');
  });
});

describe('ties', () => {
  const twins = [
    type('b-big', { vcpus: 4, ramMiB: 8192, price: 1 }),
    type('a-more-ram', { vcpus: 2, ramMiB: 8192, price: 1 }),
    type('d-twin', { vcpus: 2, ramMiB: 4096, price: 1 }),
    type('c-twin', { vcpus: 2, ramMiB: 4096, price: 1 }),
  ];

  it('prefers fewer vCPUs, then less RAM, then the name', () => {
    expect(chosen(want(), types(...twins))).toBe('c-twin');
    expect(chosen(want(), types(...twins.filter((t) => t.name !== 'c-twin')))).toBe('d-twin');
    expect(chosen(want(), types(twins[0] as InstanceType, twins[1] as InstanceType))).toBe('a-more-ram');
  });

  it('puts fewer vCPUs before less RAM and before the name', () => {
    const moreCpus = type('a-more-cpus', { vcpus: 4, ramMiB: 4096, price: 1 });
    const fewerCpus = type('z-fewer-cpus', { vcpus: 2, ramMiB: 8192, price: 1 });
    expect(chosen(want(), types(moreCpus, fewerCpus))).toBe('z-fewer-cpus');
  });

  it('puts price before everything else', () => {
    const cheapButBig = type('z-cheap', { vcpus: 16, ramMiB: 65536, price: 0.5 });
    expect(chosen(want(), types(...twins, cheapButBig))).toBe('z-cheap');
  });

  it('gives the same answer whatever the order of the record', () => {
    const answers = new Set<string>();
    const orders = [twins, [...twins].reverse(), [twins[2], twins[0], twins[3], twins[1]] as InstanceType[]];
    for (const order of orders) answers.add(chosen(want(), types(...order)));
    expect([...answers]).toEqual(['c-twin']);
  });

  it('compares names by code unit, not by locale', () => {
    // localeCompare would put 'a' before 'B'; code-unit order puts uppercase first.
    const upper = type('B', { price: 1 });
    const lower = type('a', { price: 1 });
    expect(chosen(want(), types(lower, upper))).toBe('B');
  });
});

describe('fallback types', () => {
  const names = (list: InstanceType[]) => list.map((t) => t.name);
  const between = type('between', { vcpus: 2, ramMiB: 8192, scratchGiB: 20, price: 0.15 });

  it('lists the other types that fit, up to maxPriceFactor × the cheapest price, cheapest first', () => {
    const available = types(large, medium, between, small, gpu);
    expect(names(fallbackTypes(want(), available, small, 2).sameKind)).toEqual(['between', 'medium']);
    expect(names(fallbackTypes(want(), available, small, 1.5).sameKind)).toEqual(['between']);
    expect(fallbackTypes(want(), available, small, 1).sameKind).toEqual([]);
    expect(names(fallbackTypes(want({ ramMiB: 8192 }), available, between, 4).sameKind)).toEqual(['medium', 'large']);
  });

  it('keeps a preemptible choice to preemptible types; on-demand ones are listed apart, within the factor of the cheapest of them', () => {
    const spot = type('spot', { price: 0.03, preemptible: true });
    const spotDearer = type('spotDearer', { price: 0.04, preemptible: true });
    const onDemand = type('onDemand', { price: 0.1 });
    const onDemandDearer = type('onDemandDearer', { price: 0.14 });
    const available = types(onDemandDearer, spotDearer, onDemand, spot, large);
    expect(fallbackTypes(want({ preemptible: true }), available, spot, 1.5)).toEqual({ sameKind: [spotDearer], onDemand: [onDemand, onDemandDearer] });
    // Not allowing preemptible types: none of them, ever.
    expect(names(fallbackTypes(want(), available, onDemand, 10).sameKind)).toEqual(['onDemandDearer', 'large']);
  });
});
