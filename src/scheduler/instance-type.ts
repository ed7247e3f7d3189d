// Picks the instance type a container starts on: the cheapest that fits, or why none can.

import type { InstanceType } from '../cloud/driver.js';
import type { Constraints } from '../queue/types.js';

export type InstanceTypeChoice = { ok: true; instanceType: InstanceType } | { ok: false; reason: string };

type Dimension = 'vcpus' | 'ramMiB' | 'scratchGiB' | 'gpus';

// Fixed order, so the same request always gets the same reason.
const dimensions: readonly Dimension[] = ['vcpus', 'ramMiB', 'scratchGiB', 'gpus'];

function amount(dimension: Dimension, n: number): string {
  switch (dimension) {
    case 'vcpus':
      return `${n} vCPU${n === 1 ? '' : 's'}`;
    case 'ramMiB':
      return `${n} MiB RAM`;
    case 'scratchGiB':
      return `${n} GiB scratch`;
    case 'gpus':
      return `${n} GPU${n === 1 ? '' : 's'}`;
  }
}

function largest(dimension: Dimension, n: number): string {
  switch (dimension) {
    case 'ramMiB':
      return `${n} MiB`;
    case 'scratchGiB':
      return `${n} GiB`;
    default:
      return `${n}`;
  }
}

function fits(type: InstanceType, constraints: Constraints, among: readonly Dimension[] = dimensions): boolean {
  return among.every((dimension) => type[dimension] >= constraints[dimension]);
}

// Code-unit order rather than localeCompare, which would depend on the host's locale.
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function cheaperFirst(a: InstanceType, b: InstanceType): number {
  return a.price - b.price || a.vcpus - b.vcpus || a.ramMiB - b.ramMiB || compareNames(a.name, b.name);
}

function joinAnd(parts: string[]): string {
  if (parts.length <= 1) return parts.join('');
  return `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}`;
}

// Subsets of `items` in order of size, then of position, so the smallest conflict is found first.
function* subsetsBySize<T>(items: readonly T[], size: number, from = 0): Generator<T[]> {
  if (size === 0) {
    yield [];
    return;
  }
  for (let i = from; i <= items.length - size; i++) {
    for (const rest of subsetsBySize(items, size - 1, i + 1)) yield [items[i] as T, ...rest];
  }
}

export function chooseInstanceType(
  constraints: Constraints,
  types: Readonly<Record<string, InstanceType>>,
): InstanceTypeChoice {
  const all = Object.values(types).sort(cheaperFirst);
  const allowed = all.filter((type) => constraints.preemptible || !type.preemptible);
  const chosen = allowed.find((type) => fits(type, constraints));
  if (chosen !== undefined) return { ok: true, instanceType: chosen };
  return { ok: false, reason: whyNothingFits(constraints, all, allowed) };
}

function whyNothingFits(constraints: Constraints, all: InstanceType[], allowed: InstanceType[]): string {
  if (all.length === 0) return 'no instance types are configured';
  if (allowed.length === 0) {
    return 'every instance type is preemptible and the container does not allow preemptible instances';
  }
  // Only name the restriction when it narrowed the choice, and say whether it is what stood in the way.
  const narrowed = allowed.length < all.length;
  const subject = narrowed ? 'no non-preemptible instance type' : 'no instance type';
  const preemptibleFit = narrowed ? all.find((type) => fits(type, constraints)) : undefined;
  const suffix =
    preemptibleFit === undefined
      ? ''
      : ` (preemptible ${preemptibleFit.name} would fit, but the container does not allow preemptible instances)`;

  const alone = dimensions
    .filter((dimension) => !allowed.some((type) => type[dimension] >= constraints[dimension]))
    .map((dimension) => {
      const max = Math.max(...allowed.map((type) => type[dimension]));
      return `${subject} has ${amount(dimension, constraints[dimension])} (largest: ${largest(dimension, max)})`;
    });
  if (alone.length > 0) return alone.join('; ') + suffix;

  // Every constraint is met by some type, just not by the same one: name the smallest set that clashes.
  for (let size = 2; size <= dimensions.length; size++) {
    for (const subset of subsetsBySize(dimensions, size)) {
      if (!allowed.some((type) => fits(type, constraints, subset))) {
        const wanted = joinAnd(subset.map((dimension) => amount(dimension, constraints[dimension])));
        return `${subject} has ${wanted} together${suffix}`;
      }
    }
  }
  // Unreachable while fits() compares only these dimensions; kept so a future check cannot yield no reason.
  return `${subject} fits the container${suffix}`;
}

/**
 * The types a container may run on when its cheapest type (`cheapest`, from chooseInstanceType) is
 * refused for the type alone: the other types it fits, up to `maxPriceFactor` × the cheapest's
 * price, cheapest first. When the cheapest is preemptible, `sameKind` holds preemptible types only,
 * and `onDemand` the on-demand types within the factor of the cheapest on-demand type that fits:
 * the plan allows those only after the preemptible type has been refused for a while.
 */
export interface FallbackTypes {
  sameKind: InstanceType[];
  onDemand: InstanceType[];
}

export function fallbackTypes(
  constraints: Constraints,
  types: Readonly<Record<string, InstanceType>>,
  cheapest: InstanceType,
  maxPriceFactor: number,
): FallbackTypes {
  const fitting = Object.values(types)
    .filter((type) => type !== cheapest && (constraints.preemptible || !type.preemptible) && fits(type, constraints))
    .sort(cheaperFirst);
  const within = (ceiling: number) => (type: InstanceType) => type.price <= ceiling;
  if (!cheapest.preemptible) return { sameKind: fitting.filter(within(cheapest.price * maxPriceFactor)), onDemand: [] };
  const onDemand = fitting.filter((type) => !type.preemptible);
  return {
    sameKind: fitting.filter((type) => type.preemptible).filter(within(cheapest.price * maxPriceFactor)),
    onDemand: onDemand.length === 0 ? [] : onDemand.filter(within(onDemand[0]!.price * maxPriceFactor)),
  };
}
