// What a container asks of an instance and what an instance has left: the four dimensions an
// instance type is sized in.
import type { InstanceType } from '../cloud/driver.js';
import type { Constraints } from '../queue/types.js';

export interface Resources {
  vcpus: number;
  ramMiB: number;
  scratchGiB: number;
  gpus: number;
}

export const noResources: Readonly<Resources> = Object.freeze({ vcpus: 0, ramMiB: 0, scratchGiB: 0, gpus: 0 });

export function capacityOf(type: InstanceType): Resources {
  return { vcpus: type.vcpus, ramMiB: type.ramMiB, scratchGiB: type.scratchGiB, gpus: type.gpus };
}

export function demandOf(constraints: Constraints): Resources {
  return { vcpus: constraints.vcpus, ramMiB: constraints.ramMiB, scratchGiB: constraints.scratchGiB, gpus: constraints.gpus };
}

export function fitsIn(demand: Resources, free: Resources): boolean {
  return demand.vcpus <= free.vcpus && demand.ramMiB <= free.ramMiB && demand.scratchGiB <= free.scratchGiB && demand.gpus <= free.gpus;
}

export function plus(a: Resources, b: Resources): Resources {
  return { vcpus: a.vcpus + b.vcpus, ramMiB: a.ramMiB + b.ramMiB, scratchGiB: a.scratchGiB + b.scratchGiB, gpus: a.gpus + b.gpus };
}

export function minus(a: Resources, b: Resources): Resources {
  return { vcpus: a.vcpus - b.vcpus, ramMiB: a.ramMiB - b.ramMiB, scratchGiB: a.scratchGiB - b.scratchGiB, gpus: a.gpus - b.gpus };
}
