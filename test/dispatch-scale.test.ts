// Dispatch at scale on the stub cloud with a real SQLite queue, on fake timers: a hung instance
// must not hold anyone else up, packing must fill instances without overfilling them, packing must
// pay off on a mixed workload, and a restart in the middle of a packed run must start nothing twice
// and leave the pool's ledger matching the runners.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { generateWorkload, summarize, workloadSpec } from '../bench/workload.js';
import type { CloudInstance, CreateRequest, InstanceType } from '../src/cloud/driver.js';
import type { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import type { Executor } from '../src/ssh/executor.js';
import { DispatchHarness, queuePath, spec, type DispatchOptions } from './support/dispatch-harness.js';
import { createStub, poolTags, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

/** The scheduler machine's passGap: the least time between two passes. */
const passGap = 100;
const probeInterval = 1_000;

function type(name: string, vcpus: number, price: number): InstanceType {
  return { name, providerType: `stub.${name}`, vcpus, ramMiB: vcpus * 2048, scratchGiB: 10 * vcpus, gpus: 0, price, preemptible: false };
}

// The 8-vCPU type is the cheapest per container once 8 one-vCPU containers may share it.
const twoTypes: Record<string, InstanceType> = { small: type('small', 2, 0.05), large: type('large', 8, 0.16) };

const startPattern = / start '?([A-Za-z0-9._-]+)'?/;

/** The uuid a runner `start` command starts, or null for any other command. */
function startedBy(command: string): string | null {
  return startPattern.exec(command)?.[1] ?? null;
}

function oneVcpu(): ReturnType<typeof spec> {
  return spec({ constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } });
}

/** What each live stub VM runs, checked against its type: never more containers or vCPUs than allowed. */
class CapacityCheck {
  /** Most containers seen running at once on one VM. */
  peakContainers = 0;
  peakVcpus = 0;
  readonly violations: string[] = [];

  constructor(
    private readonly stub: StubCloud,
    private readonly types: Record<string, InstanceType>,
    private readonly maxPerInstance: number,
    private readonly vcpusOf: (uuid: string) => number,
  ) {}

  vm(id: string): void {
    const vm = this.stub.getVm(id);
    if (!vm) return;
    const now = Date.now();
    // A container past its end that nobody has asked about yet has exited.
    const running = Object.entries(vm.containers).filter(([, c]) => c.state === 'running' && (c.endsAt === undefined || c.endsAt > now));
    const vcpus = running.reduce((sum, [uuid]) => sum + this.vcpusOf(uuid), 0);
    this.peakContainers = Math.max(this.peakContainers, running.length);
    this.peakVcpus = Math.max(this.peakVcpus, vcpus);
    const capacity = this.types[vm.instanceTypeName]!.vcpus;
    if (running.length > this.maxPerInstance || vcpus > capacity) {
      this.violations.push(`${id} (${vm.instanceTypeName}) at ${now}: ${running.length} containers, ${vcpus}/${capacity} vCPUs`);
    }
  }

  all(): void {
    for (const instance of this.stub.liveInstances()) this.vm(instance.id);
  }

  /** Wraps an instance's executor to check its VM after every start the runner accepts. */
  wrap(executor: Executor, instanceId: string): Executor {
    return {
      run: async (command, options) => {
        const result = await executor.run(command, options);
        if (startedBy(command) !== null && result.exitCode === 0) this.vm(instanceId);
        return result;
      },
      setTarget: (target) => executor.setTarget(target),
      close: () => executor.close(),
    };
  }
}

interface Billed {
  id: string;
  type: InstanceType;
  createdAt: number;
  /** When the stub lets the VM pass its boot probe. */
  bootAt: number;
  destroyedAt: number | null;
}

/** Every VM the pool creates, from the create call to the destroy call, for the bill. */
class Billing {
  readonly vms = new Map<string, Billed>();

  constructor(stub: StubCloud) {
    const create = stub.create.bind(stub);
    const destroy = stub.destroy.bind(stub);
    stub.create = async (request: CreateRequest): Promise<CloudInstance> => {
      const instance = await create(request);
      const vm = stub.getVm(instance.id)!;
      this.vms.set(instance.id, { id: instance.id, type: request.instanceType, createdAt: vm.createdAt, bootAt: vm.bootAt, destroyedAt: null });
      return instance;
    };
    stub.destroy = async (id: string): Promise<void> => {
      await destroy(id);
      const vm = this.vms.get(id);
      if (vm && vm.destroyedAt === null) vm.destroyedAt = Date.now();
    };
  }

  /** Dollars: Σ price × (destroyed-or-`end` − created) over every VM created. */
  cost(end: number): number {
    let dollars = 0;
    for (const vm of this.vms.values()) dollars += (vm.type.price * ((vm.destroyedAt ?? end) - vm.createdAt)) / 3_600_000;
    return dollars;
  }
}

/** Instances where the pool's ledger and the runner disagree on the containers held there. */
function ledgerMismatches(h: DispatchHarness): string[] {
  const mismatches: string[] = [];
  const views = new Map(h.pool.instances().filter((view) => view.instanceId !== null).map((view) => [view.instanceId!, view]));
  for (const instance of h.stub.liveInstances()) {
    const onVm = Object.keys(h.stub.getVm(instance.id)?.containers ?? {}).sort();
    const inLedger = [...(views.get(instance.id)?.running ?? [])].sort();
    if (onVm.join() !== inLedger.join()) mismatches.push(`${instance.id}: runner [${onVm.join(' ')}], ledger [${inLedger.join(' ')}]`);
  }
  for (const [id, view] of views) {
    if (!h.stub.getVm(id) && view.running.length > 0) mismatches.push(`${id}: gone from the cloud, ledger [${view.running.join(' ')}]`);
  }
  return mismatches;
}

function total(...maps: Map<string, number>[]): Map<string, number> {
  const sum = new Map<string, number>();
  for (const map of maps) for (const [uuid, n] of map) sum.set(uuid, (sum.get(uuid) ?? 0) + n);
  return sum;
}

describe('a hung instance', () => {
  const bootMs = 5_000;
  const runMs = 30_000;

  /**
   * A large instance already booted, then 20 one-vCPU containers. After its first probe, every SSH
   * command to it (`all`), or every runner start (`start`), never answers; the pool's command
   * timeout is 60 s. `none` is the control.
   */
  async function scenario(hang: 'none' | 'all' | 'start', maxInstances = 64) {
    const stub = createStub({ bootDelayMs: { min: bootMs, max: bootMs }, containerRunMs: runMs });
    const billing = new Billing(stub);
    const hungVm = stub.addInstance({ instanceType: twoTypes.large!, tags: poolTags('large') });
    const hanging = new Set<string>();
    const sentToHung: string[] = [];
    /** When each container's start command first reached an instance that answers. */
    const healthyStarts = new Map<string, { at: number; instanceId: string }>();
    /** When the pool first saw each instance booted (its probe moved it out of booting). */
    const seenBooted = new Map<string, number>();
    const h = new DispatchHarness(stub, {
      instanceTypes: twoTypes,
      pool: { maxRunningContainersPerInstance: 8, maxConcurrentInstanceCreateOps: 4, timeoutProbe: 120_000, maxInstances },
      wrapExecutor: (executor, instanceId) => ({
        run: (command, options) => {
          const uuid = startedBy(command);
          if (hanging.has(instanceId) && (hang === 'all' || uuid !== null)) {
            if (uuid) sentToHung.push(uuid);
            return new Promise(() => {});
          }
          if (uuid && !healthyStarts.has(uuid)) healthyStarts.set(uuid, { at: Date.now(), instanceId });
          return executor.run(command, options);
        },
        setTarget: (target) => executor.setTarget(target),
        close: () => executor.close(),
      }),
    });
    const noteBoots = () => {
      for (const view of h.pool.instances()) {
        const booted = view.history.find((t) => t.from === 'booting');
        if (view.instanceId && booted && !seenBooted.has(view.instanceId)) seenBooted.set(view.instanceId, booted.at);
      }
    };
    h.start();
    // Its first probe answers: the pool finds it booted and idle, with room for 8 containers.
    expect(await h.runUntil(() => h.pool.instance(hungVm.id)?.state === 'idle', 10_000, 100)).toBe(true);
    if (hang !== 'none') hanging.add(hungVm.id);
    const submittedAt = Date.now();
    const uuids = Array.from({ length: 20 }, () => h.queue.submit(oneVcpu()).uuid);
    // The hung instance's share can only start elsewhere once its starts have timed out (60 s) and
    // it has been taken out of service.
    expect(await h.runUntil(() => h.count('complete') === 20, 10 * 60_000, 100, noteBoots)).toBe(true);
    return { stub, billing, h, hungVm, uuids, submittedAt, sentToHung, healthyStarts, seenBooted };
  }

  it('20 queued, 8 placed on it: every other container starts within passGap + create/boot time, all complete once', async () => {
    const control = await scenario('none');
    const controlStarts = control.uuids
      .filter((uuid) => control.healthyStarts.get(uuid)?.instanceId !== control.hungVm.id)
      .map((uuid) => control.healthyStarts.get(uuid)!.at - control.submittedAt)
      .sort((a, b) => a - b);
    control.h.stop();

    const { stub, billing, h, hungVm, uuids, submittedAt, sentToHung, healthyStarts, seenBooted } = await scenario('all');
    // Several containers were placed on it: all it had room for.
    expect(sentToHung).toHaveLength(8);
    expect(new Set(sentToHung).size).toBe(8);
    const others = uuids.filter((uuid) => !sentToHung.includes(uuid));
    expect(others).toHaveLength(12);

    // Every other container waited only for its instance to be created and boot:
    for (const uuid of others) {
      const start = healthyStarts.get(uuid)!;
      expect(start.instanceId).not.toBe(hungVm.id);
      const vm = billing.vms.get(start.instanceId)!;
      // its instance was created within a pass gap of the submission,
      expect(vm.createdAt - submittedAt).toBeLessThanOrEqual(passGap);
      // the boot probe found it booted within one probe round (4 probe targets paced at 10/s),
      const sawBooted = seenBooted.get(start.instanceId)!;
      expect(sawBooted).toBeGreaterThanOrEqual(vm.bootAt);
      expect(sawBooted - vm.bootAt).toBeLessThanOrEqual(probeInterval + 3 * 100);
      // and its start reached the instance within a pass gap of that.
      expect(start.at).toBeGreaterThanOrEqual(sawBooted);
      expect(start.at - sawBooted).toBeLessThanOrEqual(passGap);
      expect(start.at - submittedAt).toBeLessThanOrEqual(passGap + bootMs + probeInterval + 3 * 100 + passGap);
    }
    // Not later than where the instance answers (same placements, same creates), by a pass gap at most.
    const hungStarts = others.map((uuid) => healthyStarts.get(uuid)!.at - submittedAt).sort((a, b) => a - b);
    expect(controlStarts).toHaveLength(12);
    hungStarts.forEach((at, i) => expect(at).toBeLessThanOrEqual(controlStarts[i]! + passGap));

    // The hung instance's share went elsewhere once it was given up, and ran once.
    for (const uuid of sentToHung) {
      expect(h.queue.get(uuid)).toMatchObject({ state: 'complete', exitCode: 0 });
      expect(h.queue.get(uuid)?.instanceId).not.toBe(hungVm.id);
    }
    expect(stub.getVm(hungVm.id)).toBeUndefined();
    expect(uuids.map((uuid) => h.starts.get(uuid))).toEqual(Array(20).fill(1));
    expect(h.count('failed')).toBe(0);
    h.stop();
  });

  it('answering probes but never a start, at maxInstances 1: drained after 3 unanswered starts and replaced; all complete once', async () => {
    const { stub, h, hungVm, uuids, submittedAt, sentToHung } = await scenario('start', 1);
    // Its 8 starts went unanswered; it took none again (before, each runner list that showed them
    // absent requeued them onto the same idle instance, for ever).
    expect(sentToHung).toHaveLength(8);
    expect(stub.getVm(hungVm.id)).toBeUndefined();
    expect(stub.callCounts.create).toBe(1);
    // 60 s command timeout, the list that shows them absent, the shutdown and the listing that
    // forgets it, a 5 s boot, then 20 containers in 3 rounds of 8 on one instance.
    expect(Date.now() - submittedAt).toBeLessThan(60_000 + 20_000 + bootMs + 2 * probeInterval + 3 * runMs);
    expect(uuids.map((uuid) => h.starts.get(uuid))).toEqual(Array(20).fill(1));
    expect(h.count('failed')).toBe(0);
    h.stop();
  });
});

describe('packing', () => {
  const packed: DispatchOptions = {
    instanceTypes: twoTypes,
    pool: { maxRunningContainersPerInstance: 8, maxConcurrentInstanceCreateOps: 2, maxInstances: 16 },
  };

  function packedHarness(stub: StubCloud, check: () => CapacityCheck, options: DispatchOptions = {}): DispatchHarness {
    return new DispatchHarness(stub, { ...packed, ...options, wrapExecutor: (executor, instanceId) => check().wrap(executor, instanceId) });
  }

  it('40 one-vCPU containers, 8 per instance: 5 large instances, never overfilled, all complete once', async () => {
    const stub = createStub({ bootDelayMs: { min: 2_000, max: 8_000 }, containerRunMs: 20_000, seed: 7 });
    const billing = new Billing(stub);
    let h: DispatchHarness | null = null;
    const check = new CapacityCheck(stub, twoTypes, 8, (uuid) => h!.queue.get(uuid)!.constraints.vcpus);
    h = packedHarness(stub, () => check);
    h.start();
    const uuids = Array.from({ length: 40 }, () => h.queue.submit(oneVcpu()).uuid);
    expect(await h.runUntil(() => h.count('complete') === 40, 5 * 60_000, 100, () => check.all())).toBe(true);

    expect(stub.callCounts.create).toBe(5);
    expect([...billing.vms.values()].map((vm) => vm.type.name)).toEqual(Array(5).fill('large'));
    expect(check.violations).toEqual([]);
    // Packed full: some instance ran 8 at once.
    expect(check.peakContainers).toBe(8);
    expect(check.peakVcpus).toBe(8);
    const perInstance = new Map<string, number>();
    for (const uuid of uuids) {
      const instanceId = h.queue.get(uuid)!.instanceId!;
      perInstance.set(instanceId, (perInstance.get(instanceId) ?? 0) + 1);
    }
    expect([...perInstance.values()]).toEqual(Array(5).fill(8));
    expect(uuids.map((uuid) => h.starts.get(uuid))).toEqual(Array(40).fill(1));
    h.stop();
  });

  it('a restart in the middle: nothing starts twice, all 40 complete, and the ledger matches the runners', async () => {
    const stub = createStub({ bootDelayMs: { min: 2_000, max: 8_000 }, containerRunMs: 20_000, seed: 7 });
    const path = queuePath();
    let current: DispatchHarness | null = null;
    const check = new CapacityCheck(stub, twoTypes, 8, (uuid) => current!.queue.get(uuid)!.constraints.vcpus);
    const first = packedHarness(stub, () => check, { queuePath: path });
    current = first;
    first.start();
    const uuids = Array.from({ length: 40 }, () => first.queue.submit(oneVcpu()).uuid);
    // Stop while some run and others still wait for their instances to boot.
    const midway = () => first.count('running') >= 16 && first.count('queued') >= 8;
    expect(await first.runUntil(midway, 60_000, 100, () => check.all())).toBe(true);
    const runningAtStop = first.count('running');
    const queuedAtStop = first.count('queued');
    first.stop();

    const second = packedHarness(stub, () => check, { queuePath: path });
    current = second;
    second.start();
    // Steady state: every live instance probed by the new pool, the ledger holding what runs there.
    expect(await second.runUntil(() => ledgerMismatches(second).length === 0 && second.pool.instances().every((v) => v.state === 'idle' || v.state === 'running'), 15_000, 100)).toBe(true);
    const heldAfterRestart = second.pool.instances().reduce((sum, view) => sum + view.running.length, 0);
    expect(heldAfterRestart).toBeGreaterThanOrEqual(runningAtStop);
    // And it stays so, step by step, until the last container is done.
    const mismatches: string[] = [];
    const done = await second.runUntil(() => second.count('complete') === 40, 5 * 60_000, 100, () => {
      mismatches.push(...ledgerMismatches(second));
      check.all();
    });
    expect(done).toBe(true);
    expect(mismatches).toEqual([]);
    expect(check.violations).toEqual([]);

    const starts = total(first.starts, second.starts);
    expect(uuids.map((uuid) => starts.get(uuid))).toEqual(Array(40).fill(1));
    // The new pool started only what the first had not.
    expect(second.starts.size).toBe(queuedAtStop);
    expect(uuids.map((uuid) => second.queue.get(uuid)?.attempts)).toEqual(Array(40).fill(1));
    // The restart created nothing: the instances it found were enough.
    expect(stub.callCounts.create).toBe(5);
    second.stop();
  });
});

describe('a mixed workload', () => {
  // Prices a little sublinear in vCPUs: a bigger instance is cheaper per vCPU, if it is kept full.
  const mixedTypes: Record<string, InstanceType> = {
    c2: type('c2', 2, 0.1),
    c4: type('c4', 4, 0.19),
    c8: type('c8', 8, 0.36),
    c16: type('c16', 16, 0.68),
  };
  const workload = generateWorkload({ count: 500, seed: 42, runMs: { min: 30_000, max: 180_000 } });
  const work = summarize(workload);

  /** The workload on a fresh stub and queue, `perInstance` containers at most per instance. */
  async function run(perInstance: number) {
    const stub = createStub({ bootDelayMs: { min: 20_000, max: 40_000 }, seed: 11 });
    const billing = new Billing(stub);
    const vcpus = new Map<string, number>();
    const check = new CapacityCheck(stub, mixedTypes, perInstance, (uuid) => vcpus.get(uuid) ?? 0);
    const h = new DispatchHarness(stub, {
      instanceTypes: mixedTypes,
      // maxInstances 30: long enough a steady state that boots and the final drain do not swamp it.
      // Probes every 10 s: exits come from the runner's wait, probes only see boots (and cost timers).
      pool: { maxRunningContainersPerInstance: perInstance, maxInstances: 30, maxConcurrentInstanceCreateOps: 8, probeInterval: 10_000 },
      wrapExecutor: (executor, instanceId) => check.wrap(executor, instanceId),
    });
    h.start();
    const startedAt = Date.now();
    const uuids = h.queue.submitMany(workload.map((item) => workloadSpec(item))).map((container) => {
      vcpus.set(container.uuid, container.constraints.vcpus);
      return container.uuid;
    });
    const done = await h.runUntil(() => h.queue.pending().length === 0, 3 * 3_600_000, 1_000, () => check.all());
    const end = Date.now();
    let billedVcpuSeconds = 0;
    for (const vm of billing.vms.values()) billedVcpuSeconds += (vm.type.vcpus * ((vm.destroyedAt ?? end) - vm.createdAt)) / 1000;
    const result = {
      done,
      complete: h.count('complete'),
      startsPerContainer: uuids.map((uuid) => h.starts.get(uuid)),
      violations: check.violations,
      cost: billing.cost(end),
      instances: billing.vms.size,
      makespanS: (end - startedAt) / 1000,
      /** Share of the vCPU-seconds paid for that containers used. */
      utilization: work.vcpuSeconds / billedVcpuSeconds,
    };
    h.stop();
    return result;
  }

  it('500 containers of 1–8 vCPUs: packing 8 per instance costs < 0.9 of whole instances; all complete once in both runs', async () => {
    const off = await run(1);
    const on = await run(8);
    const ratio = on.cost / off.cost;
    const report = (r: typeof on) => ({ cost: Number(r.cost.toFixed(3)), instances: r.instances, makespanS: r.makespanS, utilization: Number(r.utilization.toFixed(3)) });
    console.log(`mixed workload ${JSON.stringify(work)}: packing off ${JSON.stringify(report(off))}, on ${JSON.stringify(report(on))}, ratio ${ratio.toFixed(3)}`);
    for (const result of [off, on]) {
      expect(result.done).toBe(true);
      expect(result.complete).toBe(500);
      expect(result.startsPerContainer).toEqual(Array(500).fill(1));
      expect(result.violations).toEqual([]);
    }
    // Whole instances pay for rounding up to a type (1 vCPU on a 2-vCPU type, 5 on an 8): by these
    // prices $0.056 per used vCPU-hour over this mix, against $0.046 on 16-vCPU instances kept 93%
    // full (their fill here while the queue lasts), so on/off ≈ 0.81 in the steady state. Boots and
    // the drain at the end (packed instances running a last long container or two, idle ones
    // waiting out timeoutIdle) weigh more on the shorter packed run; whole instances also churn
    // types at maxInstances. Measured 0.82–0.86 (workload seeds 1–5 and 42, varying uuid order).
    expect(ratio).toBeLessThan(0.9);
    expect(on.utilization).toBeGreaterThan(off.utilization);
  });
});
