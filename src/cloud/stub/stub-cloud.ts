// A simulated cloud with simulated VMs on an injected clock, for tests and benchmarks of the pool.

import type { Clock } from '../../clock.js';
import {
  cloudOperations,
  type CloudDriver,
  type CloudInstance,
  type CloudOperation,
  type CreateRequest,
  type InstanceType,
  type Tags,
} from '../driver.js';
import { CapacityError, CloudError, QuotaError, RateLimitError } from '../errors.js';
import type { CommandResult, Executor, ExecutorTarget } from '../../ssh/executor.js';
import { defaultStubFaults, type StubFaults } from './faults.js';

/** A container on a stub VM; a running one started through the runner ends (exit 0) at endsAt. */
export type ContainerOnVm = { state: 'running'; endsAt?: number } | { state: 'exited'; exitCode: number };

/** The stub's own record of a VM; tests may read it and adjust it (e.g. bootAt). */
export interface StubVm {
  id: string;
  providerType: string;
  instanceTypeName: string;
  address: string;
  port: number;
  tags: Record<string, string>;
  createdAt: number;
  /** Clock ms from which the boot probe passes; Infinity when the VM never boots. */
  bootAt: number;
  /** Clock ms from which the VM is gone; Infinity when it stays. */
  vanishAt: number;
  containers: Record<string, ContainerOnVm>;
}

export interface StubCloudOptions {
  clock: Clock;
  faults?: Partial<StubFaults>;
  bootProbeCommand: string;
  runnerCommand: string;
}

export interface AddInstanceOptions {
  instanceType: InstanceType;
  tags: Tags;
  /** Default true. When false the VM boots after a boot delay drawn like a created VM's. */
  booted?: boolean;
  containers?: Record<string, ContainerOnVm>;
}

interface HeldCall {
  op: CloudOperation;
  release: () => void;
}

// mulberry32: tiny, fast and good enough for fault draws; seeded so a run can be repeated.
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function toInstance(vm: StubVm): CloudInstance {
  return { id: vm.id, providerType: vm.providerType, address: vm.address, port: vm.port, tags: { ...vm.tags } };
}

function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

export class StubCloud implements CloudDriver {
  faults: StubFaults;
  peakLiveCount = 0;
  sshCommandCount = 0;
  readonly callCounts: Record<CloudOperation, number> = { create: 0, list: 0, destroy: 0, setTags: 0 };

  private readonly clock: Clock;
  private readonly bootProbeCommand: string;
  private readonly runnerCommand: string;
  private readonly random: () => number;
  // Insertion-ordered, so listings come out in creation order.
  private readonly vms = new Map<string, StubVm>();
  private nextId = 1;
  // Earliest vanishAt of any VM, so the lazy purge costs nothing until something is due to vanish.
  private nextVanishAt = Infinity;
  private lastCreateAt = -Infinity;
  private lastListAt = -Infinity;
  private readonly heldOps = new Set<CloudOperation>();
  private heldCalls: HeldCall[] = [];

  constructor(options: StubCloudOptions) {
    this.clock = options.clock;
    this.bootProbeCommand = options.bootProbeCommand;
    this.runnerCommand = options.runnerCommand;
    const faults = { ...defaultStubFaults, ...options.faults };
    // Copied so a test mutating its own objects later does not reach into the defaults.
    this.faults = {
      ...faults,
      bootDelayMs: { ...faults.bootDelayMs },
      capacityErrorTypes: [...faults.capacityErrorTypes],
    };
    this.random = mulberry32(this.faults.seed);
  }

  // ---- CloudDriver ----

  create(request: CreateRequest): Promise<CloudInstance> {
    this.callCounts.create++;
    if (!this.heldOps.has('create')) return settle(() => this.doCreate(request));
    // Runs at call time even when held: the VM exists (and is listable) before the response.
    // The outcome is kept as a value, not a rejected promise, which would be reported unhandled.
    let release: () => Promise<CloudInstance>;
    try {
      const instance = this.doCreate(request);
      release = () => Promise.resolve(instance);
    } catch (error) {
      release = () => Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.heldCalls.push({ op: 'create', release: () => release().then(resolve, reject) });
    });
  }

  list(tagFilter: Tags): Promise<CloudInstance[]> {
    this.callCounts.list++;
    return this.runOrHold('list', () => this.doList(tagFilter));
  }

  destroy(id: string): Promise<void> {
    this.callCounts.destroy++;
    return this.runOrHold('destroy', () => this.doDestroy(id));
  }

  setTags(id: string, tags: Tags): Promise<void> {
    this.callCounts.setTags++;
    return this.runOrHold('setTags', () => this.doSetTags(id, tags));
  }

  // ---- holding calls ----

  holdCloudOps(ops: readonly CloudOperation[] = cloudOperations): void {
    for (const op of ops) this.heldOps.add(op);
  }

  /** Stops holding `ops` and lets their pending calls go, oldest first. */
  releaseCloudOps(ops: readonly CloudOperation[] = cloudOperations): void {
    for (const op of ops) this.heldOps.delete(op);
    const releasing = this.heldCalls.filter((call) => ops.includes(call.op));
    this.heldCalls = this.heldCalls.filter((call) => !ops.includes(call.op));
    for (const call of releasing) call.release();
  }

  pendingOps(op?: CloudOperation): number {
    return op === undefined ? this.heldCalls.length : this.heldCalls.filter((call) => call.op === op).length;
  }

  // ---- observability and set-up for tests ----

  liveInstances(): CloudInstance[] {
    this.purgeVanished();
    return Array.from(this.vms.values(), toInstance);
  }

  liveCount(): number {
    this.purgeVanished();
    return this.vms.size;
  }

  addInstance(options: AddInstanceOptions): CloudInstance {
    const now = this.clock.now();
    const bootAt = options.booted === false ? now + this.drawBootDelay() : -Infinity;
    const vm = this.makeVm(options.instanceType, options.tags, bootAt, Infinity);
    if (options.containers) vm.containers = { ...options.containers };
    return toInstance(vm);
  }

  vanish(id: string): void {
    this.vms.delete(id);
  }

  setContainers(id: string, containers: Record<string, ContainerOnVm>): void {
    const vm = this.getVm(id);
    if (!vm) throw new Error(`stub cloud: no VM ${id}`);
    vm.containers = { ...containers };
  }

  /** The live VM's record (mutable), or undefined when it does not exist. */
  getVm(id: string): StubVm | undefined {
    this.purgeVanished();
    return this.vms.get(id);
  }

  executorFor(target: ExecutorTarget): Executor {
    let current = target;
    let closed = false;
    return {
      run: async (command: string): Promise<CommandResult> => {
        this.sshCommandCount++;
        // Always asynchronous, like a real session, but without real timers.
        await Promise.resolve();
        if (closed) throw new Error('ssh: executor closed');
        const vm = this.getVm(current.id);
        if (!vm) throw new Error(`ssh: connect ECONNREFUSED ${current.address}`);
        if (this.chance(this.faults.sshDropRate)) throw new Error('ssh: connection dropped');
        return this.answer(vm, command);
      },
      setTarget: (next: ExecutorTarget) => {
        current = next;
      },
      close: () => {
        closed = true;
      },
    };
  }

  // ---- internals ----

  private runOrHold<T>(op: CloudOperation, work: () => T): Promise<T> {
    if (!this.heldOps.has(op)) return settle(work);
    return new Promise((resolve, reject) => {
      this.heldCalls.push({ op, release: () => settle(work).then(resolve, reject) });
    });
  }

  private doCreate({ instanceType, tags }: CreateRequest): CloudInstance {
    const faults = this.faults;
    const now = this.clock.now();
    if (faults.quotaMaxInstances !== null && this.liveCount() >= faults.quotaMaxInstances) {
      throw new QuotaError(`quota of ${faults.quotaMaxInstances} instances reached`);
    }
    const createAllowedAt = this.lastCreateAt + faults.minCreateIntervalMs;
    if (now < createAllowedAt) {
      throw new RateLimitError('create rate limit exceeded', createAllowedAt);
    }
    // A call past the rate limit counts against it even if it then fails, as provider APIs do.
    this.lastCreateAt = now;
    if (faults.capacityErrorTypes.includes(instanceType.name)) {
      throw new CapacityError(`no capacity for ${instanceType.name}`, instanceType.name);
    }
    if (faults.capacityErrorTypes.includes('*')) {
      throw new CapacityError('no capacity in zone');
    }
    if (this.chance(faults.createErrorRate)) throw new CloudError('create failed');
    const bootAt = this.chance(faults.neverBootFraction) ? Infinity : now + this.drawBootDelay();
    const vanishAt = this.chance(faults.vanishFraction) ? now + faults.vanishAfterMs : Infinity;
    return toInstance(this.makeVm(instanceType, tags, bootAt, vanishAt));
  }

  private doList(tagFilter: Tags): CloudInstance[] {
    const faults = this.faults;
    if (faults.failListings || this.chance(faults.listFailureRate)) throw new CloudError('listing failed');
    const now = this.clock.now();
    const listAllowedAt = this.lastListAt + faults.minListIntervalMs;
    if (now < listAllowedAt) throw new RateLimitError('list rate limit exceeded', listAllowedAt);
    this.lastListAt = now;
    this.purgeVanished();
    const filter = Object.entries(tagFilter);
    const result: CloudInstance[] = [];
    for (const vm of this.vms.values()) {
      if (!filter.every(([key, value]) => vm.tags[key] === value)) continue;
      if (this.chance(faults.listOmitRate)) continue;
      result.push(toInstance(vm));
    }
    return result;
  }

  private doDestroy(id: string): void {
    if (this.chance(this.faults.destroyErrorRate)) throw new CloudError(`destroy of ${id} failed`);
    this.vms.delete(id);
  }

  private doSetTags(id: string, tags: Tags): void {
    const vm = this.getVm(id);
    if (!vm) throw new CloudError(`setTags: no instance ${id}`);
    Object.assign(vm.tags, tags);
  }

  private makeVm(instanceType: InstanceType, tags: Tags, bootAt: number, vanishAt: number): StubVm {
    const n = this.nextId++;
    const vm: StubVm = {
      id: `stub-${n}`,
      providerType: instanceType.providerType,
      instanceTypeName: instanceType.name,
      // n is unique and below 2^24 in any realistic run, so the address is unique too.
      address: `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`,
      port: 22,
      tags: { ...tags },
      createdAt: this.clock.now(),
      bootAt,
      vanishAt,
      containers: {},
    };
    this.purgeVanished();
    this.vms.set(vm.id, vm);
    this.nextVanishAt = Math.min(this.nextVanishAt, vanishAt);
    this.peakLiveCount = Math.max(this.peakLiveCount, this.vms.size);
    return vm;
  }

  private purgeVanished(): void {
    const now = this.clock.now();
    if (now < this.nextVanishAt) return;
    let next = Infinity;
    for (const [id, vm] of this.vms) {
      if (now >= vm.vanishAt) this.vms.delete(id);
      else next = Math.min(next, vm.vanishAt);
    }
    this.nextVanishAt = next;
  }

  private answer(vm: StubVm, command: string): CommandResult {
    if (command === this.bootProbeCommand) {
      return this.clock.now() >= vm.bootAt
        ? { stdout: '', stderr: '', exitCode: 0 }
        : { stdout: '', stderr: 'not booted', exitCode: 1 };
    }
    const words = shellWords(command);
    if (words[0] === this.runnerCommand) {
      if (words[1] === 'list' && words.length === 2) return this.answerList(vm);
      return this.answerRunner(vm, words.slice(1));
    }
    return { stdout: '', stderr: 'command not found', exitCode: 127 };
  }

  private answerList(vm: StubVm): CommandResult {
    this.finishEndedContainers(vm);
    const lines = Object.entries(vm.containers)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([uuid, container]) =>
        container.state === 'exited' ? `${uuid} exited ${container.exitCode}\n` : `${uuid} running\n`,
      );
    return { stdout: lines.join(''), stderr: '', exitCode: 0 };
  }

  // The runner's other commands, as src/runner/drover-runner.sh answers them, minus real processes.
  private answerRunner(vm: StubVm, [verb, ...args]: string[]): CommandResult {
    const ok = (stdout = ''): CommandResult => ({ stdout, stderr: '', exitCode: 0 });
    const refuse = (exitCode: number, stderr: string): CommandResult => ({ stdout: '', stderr, exitCode });
    this.finishEndedContainers(vm);
    const uuid = verb === 'kill' ? args[1] : args[0];
    if (!uuid) return refuse(2, 'usage: drover-runner start|kill|logs|remove ...');
    const container = vm.containers[uuid];
    switch (verb) {
      case 'start':
        if (container) return refuse(3, `container ${uuid} already exists`);
        vm.containers[uuid] = { state: 'running', endsAt: this.clock.now() + this.faults.containerRunMs };
        return ok();
      case 'kill':
        if (!container) return refuse(4, `no container ${uuid}`);
        if (container.state === 'running') vm.containers[uuid] = { state: 'exited', exitCode: 143 };
        return ok();
      case 'logs':
        return container ? ok(`stub output of ${uuid}\n`) : refuse(4, `no container ${uuid}`);
      case 'remove':
        if (container?.state === 'running') return refuse(3, `container ${uuid} is still running`);
        delete vm.containers[uuid];
        return ok();
      default:
        return refuse(2, `unknown runner command ${String(verb)}`);
    }
  }

  private finishEndedContainers(vm: StubVm): void {
    const now = this.clock.now();
    for (const [uuid, container] of Object.entries(vm.containers)) {
      if (container.state === 'running' && container.endsAt !== undefined && container.endsAt <= now) {
        vm.containers[uuid] = { state: 'exited', exitCode: 0 };
      }
    }
  }

  private drawBootDelay(): number {
    const { min, max } = this.faults.bootDelayMs;
    // Whole milliseconds, inclusive of max, so tests can advance a clock to exactly the boot time.
    return max <= min ? min : min + Math.floor(this.random() * (max - min + 1));
  }

  // Draws only for a real probability, so 0 and 1 are certain and do not shift the sequence.
  private chance(probability: number): boolean {
    if (probability <= 0) return false;
    if (probability >= 1) return true;
    return this.random() < probability;
  }
}

/** Splits a command line made of bare and single-quoted words (what the runner commands use). */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      word = (word ?? '') + line.slice(i + 1, end === -1 ? line.length : end);
      i = end === -1 ? line.length : end;
    } else if (ch === '\\' && i + 1 < line.length) {
      word = (word ?? '') + line[++i];
    } else if (ch === ' ' || ch === '\t' || ch === '\n') {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? '') + ch;
    }
  }
  if (word !== null) words.push(word);
  return words;
}
