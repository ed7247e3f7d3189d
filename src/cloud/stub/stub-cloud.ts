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
import { logTailMarker } from '../../queue/types.js';
import { MAX_WAIT_SECONDS, runnerExit } from '../../runner/deploy.js';
import { defaultStubFaults, type StubFaults } from './faults.js';
import { mulberry32 } from '../../seeded-random.js';

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
  /** The id of the launch config the VM was created from; absent when the create named none (and for added VMs). */
  launchConfigId?: string;
  /** Clock ms from which the boot probe passes; Infinity when the VM never boots. */
  bootAt: number;
  /** Clock ms from which the VM is gone; Infinity when it stays. */
  vanishAt: number;
  containers: Record<string, ContainerOnVm>;
}

export type StubFaultKind =
  | 'createError'
  | 'destroyError'
  | 'quota'
  | 'createRateLimit'
  | 'listRateLimit'
  | 'capacity'
  | 'listFailure'
  | 'listOmission'
  | 'neverBoots'
  | 'vanishes'
  | 'sshDrop';

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

const MAX_TIMER_MS = 2 ** 31 - 1;

/** A runner `wait` in progress on a VM. */
interface PendingWait {
  /** The executor it runs on, which rejects it when closed. */
  session: object;
  /** Answers it if it is due, else sets its timer for the next moment it could be. */
  check: () => void;
  /** Rejects it, as a lost SSH session would. */
  drop: (error: Error) => void;
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
  /** Faults injected so far, by kind (for soak runs to show each kind happened). */
  readonly faultCounts: Record<StubFaultKind, number> = {
    createError: 0,
    destroyError: 0,
    quota: 0,
    createRateLimit: 0,
    listRateLimit: 0,
    capacity: 0,
    listFailure: 0,
    listOmission: 0,
    neverBoots: 0,
    vanishes: 0,
    sshDrop: 0,
  };

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
  // By VM id: a pool keeps a wait on every busy instance, and each runner command wakes its VM's.
  private readonly waits = new Map<string, Set<PendingWait>>();

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
      capacityErrorZones: [...faults.capacityErrorZones],
      brokenImages: [...faults.brokenImages],
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
    this.dropWaitsOn(id);
  }

  /** Replaces the VM's containers; runner waits on it see the change at once. */
  setContainers(id: string, containers: Record<string, ContainerOnVm>): void {
    const vm = this.getVm(id);
    if (!vm) throw new Error(`stub cloud: no VM ${id}`);
    vm.containers = { ...containers };
    this.wakeWaits(id);
  }

  /** Runner `wait` commands not yet answered, on VM `id` or on all. */
  pendingWaits(id?: string): number {
    if (id !== undefined) return this.waits.get(id)?.size ?? 0;
    let count = 0;
    for (const waits of this.waits.values()) count += waits.size;
    return count;
  }

  /** The live VM's record (mutable), or undefined when it does not exist. */
  getVm(id: string): StubVm | undefined {
    this.purgeVanished();
    return this.vms.get(id);
  }

  executorFor(target: ExecutorTarget): Executor {
    let current = target;
    let closed = false;
    const session = {};
    return {
      run: async (command: string): Promise<CommandResult> => {
        this.sshCommandCount++;
        // Always asynchronous, like a real session, but without real timers.
        await Promise.resolve();
        if (closed) throw new Error('ssh: executor closed');
        const vm = this.getVm(current.id);
        if (!vm) throw new Error(`ssh: connect ECONNREFUSED ${current.address}`);
        if (this.chance(this.faults.sshDropRate)) {
          this.faultCounts.sshDrop++;
          throw new Error('ssh: connection dropped');
        }
        return this.answer(vm, command, session);
      },
      setTarget: (next: ExecutorTarget) => {
        current = next;
      },
      close: () => {
        closed = true;
        // The real executor aborts the commands it is running when closed.
        for (const waits of [...this.waits.values()]) {
          for (const wait of [...waits]) if (wait.session === session) wait.drop(new Error('ssh: executor closed'));
        }
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

  private doCreate({ instanceType, tags, launchConfig }: CreateRequest): CloudInstance {
    const faults = this.faults;
    const now = this.clock.now();
    if (faults.quotaMaxInstances !== null && this.liveCount() >= faults.quotaMaxInstances) {
      this.faultCounts.quota++;
      throw new QuotaError(`quota of ${faults.quotaMaxInstances} instances reached`);
    }
    const createAllowedAt = this.lastCreateAt + faults.minCreateIntervalMs;
    if (now < createAllowedAt) {
      this.faultCounts.createRateLimit++;
      throw new RateLimitError('create rate limit exceeded', createAllowedAt);
    }
    // A call past the rate limit counts against it even if it then fails, as provider APIs do.
    this.lastCreateAt = now;
    if (faults.capacityErrorTypes.includes(instanceType.name)) {
      this.faultCounts.capacity++;
      throw new CapacityError(`no capacity for ${instanceType.name}`, instanceType.name);
    }
    if (faults.capacityErrorTypes.includes('*')) {
      this.faultCounts.capacity++;
      throw new CapacityError('no capacity in zone');
    }
    const zone = launchConfig?.zone ?? null;
    if (zone !== null && faults.capacityErrorZones.includes(zone)) {
      this.faultCounts.capacity++;
      throw new CapacityError(`no capacity for ${instanceType.name} in ${zone}`, instanceType.name, { zone });
    }
    if (this.chance(faults.createErrorRate)) {
      this.faultCounts.createError++;
      throw new CloudError('create failed');
    }
    const image = launchConfig?.image ?? null;
    // A broken image is certain, like neverBootFraction 1: nothing is drawn for it.
    const neverBoots = (image !== null && faults.brokenImages.includes(image)) || this.chance(faults.neverBootFraction);
    const bootAt = neverBoots ? Infinity : now + this.drawBootDelay();
    const vanishAt = this.chance(faults.vanishFraction) ? now + faults.vanishAfterMs : Infinity;
    if (neverBoots) this.faultCounts.neverBoots++;
    if (vanishAt !== Infinity) this.faultCounts.vanishes++;
    const vm = this.makeVm(instanceType, tags, bootAt, vanishAt);
    if (launchConfig !== undefined) vm.launchConfigId = launchConfig.id;
    return toInstance(vm);
  }

  private doList(tagFilter: Tags): CloudInstance[] {
    const faults = this.faults;
    if (faults.failListings || this.chance(faults.listFailureRate)) {
      this.faultCounts.listFailure++;
      throw new CloudError('listing failed');
    }
    const now = this.clock.now();
    const listAllowedAt = this.lastListAt + faults.minListIntervalMs;
    if (now < listAllowedAt) {
      this.faultCounts.listRateLimit++;
      throw new RateLimitError('list rate limit exceeded', listAllowedAt);
    }
    this.lastListAt = now;
    this.purgeVanished();
    const filter = Object.entries(tagFilter);
    const result: CloudInstance[] = [];
    for (const vm of this.vms.values()) {
      if (!filter.every(([key, value]) => vm.tags[key] === value)) continue;
      if (this.chance(faults.listOmitRate)) {
        this.faultCounts.listOmission++;
        continue;
      }
      result.push(toInstance(vm));
    }
    return result;
  }

  private doDestroy(id: string): void {
    if (this.chance(this.faults.destroyErrorRate)) {
      this.faultCounts.destroyError++;
      throw new CloudError(`destroy of ${id} failed`);
    }
    this.vms.delete(id);
    this.dropWaitsOn(id);
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
    const gone: string[] = [];
    for (const [id, vm] of this.vms) {
      if (now >= vm.vanishAt) gone.push(id);
      else next = Math.min(next, vm.vanishAt);
    }
    this.nextVanishAt = next;
    for (const id of gone) {
      this.vms.delete(id);
      // A wait's own timer fires at vanishAt too; this covers a vanishAt a test moved earlier.
      this.dropWaitsOn(id);
    }
  }

  private answer(vm: StubVm, command: string, session: object): CommandResult | Promise<CommandResult> {
    if (command === this.bootProbeCommand) {
      return this.clock.now() >= vm.bootAt
        ? { stdout: '', stderr: '', exitCode: 0 }
        : { stdout: '', stderr: 'not booted', exitCode: 1 };
    }
    const words = shellWords(command);
    if (words[0] === this.runnerCommand) {
      if (words[1] === 'list' && words.length === 2) return this.answerList(vm);
      if (words[1] === 'wait') return this.answerWait(vm, words.slice(2), session);
      const result = this.answerRunner(vm, words.slice(1));
      // A start (containerRunMs 0) or kill may have ended a container someone waits for.
      this.wakeWaits(vm.id);
      return result;
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
    if (!uuid) return refuse(runnerExit.usage, 'usage: drover-runner start|kill|logs|remove ...');
    const container = vm.containers[uuid];
    switch (verb) {
      case 'start': {
        const forced = this.faults.startExitCode;
        if (forced !== null) return refuse(forced, `stub: start answers ${forced} (fault startExitCode)`);
        if (container) return refuse(runnerExit.exists, `container ${uuid} already exists`);
        vm.containers[uuid] = { state: 'running', endsAt: this.clock.now() + (runMsOf(args) ?? this.faults.containerRunMs) };
        return ok();
      }
      case 'kill':
        if (!container) return refuse(runnerExit.unknown, `no container ${uuid}`);
        if (container.state === 'running') vm.containers[uuid] = { state: 'exited', exitCode: 143 };
        return ok();
      case 'logs': {
        const bytesWord = args[1] ?? '65536';
        if (!/^\d+$/.test(bytesWord)) return refuse(runnerExit.usage, `invalid byte count: ${bytesWord}`);
        if (!container) return refuse(runnerExit.unknown, `no container ${uuid}`);
        // As the runner answers: the last BYTES, after a line saying how much was dropped if any.
        const output = Buffer.from(simulatedOutput(uuid));
        const bytes = Number(bytesWord);
        if (output.length <= bytes) return ok(output.toString());
        return ok(logTailMarker(output.length, bytes) + output.subarray(output.length - bytes).toString());
      }
      case 'remove':
        if (container?.state === 'running') return refuse(runnerExit.exists, `container ${uuid} is still running`);
        delete vm.containers[uuid];
        return ok();
      default:
        return refuse(runnerExit.usage, `unknown runner command ${String(verb)}`);
    }
  }

  // `wait SECONDS [UUID...]` as the runner answers it, on the clock: list's answer once a container
  // not in UUIDs has exited, or after SECONDS. Rejects, like a dropped SSH session, if the VM goes.
  private answerWait(vm: StubVm, [secondsWord = '', ...known]: string[], session: object): CommandResult | Promise<CommandResult> {
    if (!/^\d+$/.test(secondsWord) || Number(secondsWord) > MAX_WAIT_SECONDS) {
      return { stdout: '', stderr: `wait: SECONDS must be a non-negative integer, got: '${secondsWord}'`, exitCode: runnerExit.usage };
    }
    const knownExited = new Set(known);
    const deadline = this.clock.now() + Number(secondsWord) * 1000;
    if (this.clock.now() >= deadline || this.hasNewExit(vm, knownExited)) return this.answerList(vm);
    return new Promise<CommandResult>((resolve, reject) => {
      let timer: unknown;
      let settled = false;
      const finish = (): boolean => {
        if (settled) return false;
        settled = true;
        if (timer !== undefined) this.clock.clearTimeout(timer);
        const waits = this.waits.get(vm.id);
        waits?.delete(wait);
        if (waits?.size === 0) this.waits.delete(vm.id);
        return true;
      };
      const wait: PendingWait = {
        session,
        check: () => {
          if (settled) return;
          if (timer !== undefined) this.clock.clearTimeout(timer);
          timer = undefined;
          // Gone at vanishAt, destroyed, or vanished: the session dies with the VM.
          if (this.getVm(vm.id) !== vm) {
            wait.drop(new Error('ssh: connection dropped'));
            return;
          }
          const now = this.clock.now();
          if (now >= deadline || this.hasNewExit(vm, knownExited)) {
            if (finish()) resolve(this.answerList(vm));
            return;
          }
          // Each of these is later than now, or the checks above would have answered.
          let next = Math.min(deadline, vm.vanishAt);
          for (const [uuid, container] of Object.entries(vm.containers)) {
            if (container.state === 'running' && container.endsAt !== undefined && !knownExited.has(uuid)) {
              next = Math.min(next, container.endsAt);
            }
          }
          // Timers take at most 2^31 - 1 ms; a longer delay would fire at once, again and again.
          timer = this.clock.setTimeout(wait.check, Math.min(next - now, MAX_TIMER_MS));
        },
        drop: (error) => {
          if (finish()) reject(error);
        },
      };
      let waits = this.waits.get(vm.id);
      if (!waits) this.waits.set(vm.id, (waits = new Set()));
      waits.add(wait);
      wait.check();
    });
  }

  private hasNewExit(vm: StubVm, knownExited: ReadonlySet<string>): boolean {
    this.finishEndedContainers(vm);
    return Object.entries(vm.containers).some(([uuid, container]) => container.state === 'exited' && !knownExited.has(uuid));
  }

  private wakeWaits(vmId: string): void {
    const waits = this.waits.get(vmId);
    if (waits) for (const wait of [...waits]) wait.check();
  }

  // The VM is gone, and with it every SSH session to it.
  private dropWaitsOn(vmId: string): void {
    const waits = this.waits.get(vmId);
    if (waits) for (const wait of [...waits]) wait.drop(new Error('ssh: connection dropped'));
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

/** A stub container's whole output: it says plainly that nothing ran, so no demo output is mistaken for a result. */
export function simulatedOutput(uuid: string): string {
  return `[stub cloud: nothing ran; this is simulated output for ${uuid}]\n`;
}

/** Env var a container may set to run on the stub for that many ms instead of faults.containerRunMs. */
export const stubRunMsEnv = 'STUB_RUN_MS';

/** The container's own run time: `--env STUB_RUN_MS=<ms>` among a start's options, before `--`. */
function runMsOf(startArgs: readonly string[]): number | null {
  for (let i = 1; i < startArgs.length && startArgs[i] !== '--'; i++) {
    const value = startArgs[i] === '--env' ? startArgs[i + 1] : undefined;
    if (!value?.startsWith(`${stubRunMsEnv}=`)) continue;
    const ms = value.slice(stubRunMsEnv.length + 1);
    if (/^\d+$/.test(ms)) return Number(ms);
  }
  return null;
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
