// Fixtures for tests of a scheduling pass as a pure function (plan, and the estimator built on
// it): containers, workers open or on their way, a pool picture, refusals and limits.
import type { InstanceType } from '../../src/cloud/driver.js';
import { capacityOf, type Resources } from '../../src/pool/resources.js';
import type { Constraints, Container } from '../../src/queue/types.js';
import type { Decision, Limits } from '../../src/scheduler/plan.js';
import type { ComingWorker, CreateRefusal, OpenWorker, PoolPicture } from '../../src/scheduler/worker-pool.js';
import { instanceTypeFixture } from './fixtures.js';
import { instanceTypes } from './pool-harness.js';

export const small = instanceTypes.small!; // 2 vCPU, 4 GiB, $0.05
export const large = instanceTypes.large!; // 8 vCPU, 16 GiB, $0.20

// For packing: B holds eight one-vCPU containers at 0.0375 each, A two at 0.05 each.
export const typeA = instanceTypeFixture('A', { vcpus: 2, ramMiB: 4096, price: 0.1 });
export const typeB = instanceTypeFixture('B', { vcpus: 8, ramMiB: 16384, price: 0.3 });
export const packingTypes: Record<string, InstanceType> = { A: typeA, B: typeB };

let clock = 0;
/** A queued container (one vCPU, 256 MiB) submitted after every earlier one; `overrides` set the rest. */
export function container(overrides: Partial<Container> = {}): Container {
  clock++;
  return {
    uuid: `c-${clock}`,
    image: null,
    command: ['true'],
    env: {},
    constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
    state: 'queued',
    attempts: 0,
    exitCode: null,
    instanceId: null,
    instanceType: null,
    logTail: '',
    reason: null,
    submittedAt: clock,
    startedAt: null,
    finishedAt: null,
    updatedAt: clock,
    ...overrides,
  };
}

export function queued(count: number, constraints?: Constraints): Container[] {
  return Array.from({ length: count }, () => container(constraints ? { constraints } : {}));
}

/** An open worker with nothing on it. */
export function idle(workerId: string, type: InstanceType): OpenWorker {
  return { workerId, instanceId: `i-${workerId}`, instanceType: type.name, free: capacityOf(type), containers: 0 };
}

/** An open worker running `containers` containers with `free` left. */
export function running(workerId: string, type: InstanceType, containers: number, free: Resources): OpenWorker {
  return { workerId, instanceId: `i-${workerId}`, instanceType: type.name, free, containers };
}

export function coming(workerId: string, type: InstanceType, state: ComingWorker['state'] = 'booting'): ComingWorker {
  return { workerId, instanceType: type.name, state };
}

export function pool(overrides: Partial<PoolPicture> = {}): PoolPicture {
  return { open: [], coming: [], instances: 0, hourlySpend: 0, createRefusal: () => null, ...overrides };
}

/** The pool refuses every create: listings, quota, throttle, create calls in flight. */
export const poolWide = (reason: string): CreateRefusal => ({ reason, scope: 'pool' });

export const limits: Limits = { maxInstances: 10, maxConcurrentContainers: null, maxHourlySpend: null, maxContainersPerInstance: 1 };
export const packing: Limits = { ...limits, maxInstances: 64, maxContainersPerInstance: 8 };
export const big: Constraints = { vcpus: 8, ramMiB: 8192, scratchGiB: 0, gpus: 0, preemptible: false };

export const creates = (decisions: readonly Decision[]) => decisions.filter((decision) => decision.kind === 'create');
export const starts = (decisions: readonly Decision[]) => decisions.filter((decision) => decision.kind === 'start');
