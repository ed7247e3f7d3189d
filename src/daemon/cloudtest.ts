// `drover cloudtest`: checks the configured cloud driver end to end with one instance, the way a
// pool uses it (create with a pool's tags, a listing with an address, SSH with the instance secret
// and the boot probe, the runner, a tag change, a destroy a listing confirms), printing each step
// with its elapsed time. Whatever it created it destroys, on failure too.
//
// It may run beside a daemon of the same config: it touches no queue and takes no state lock.
// Its instance carries the pool tag `<poolName>-cloudtest`, not the pool's own, so no daemon of the
// pool lists, adopts, uses or destroys it, and `drover teardown` of the pool does not see it either;
// its idle behaviour is `hold`, so even a daemon run with that pool name would leave it alone.
// Nothing else will ever destroy it, so an interrupt abandons the step in progress and cleans up
// as a failure does, and a failed create is listed by its token until a lost answer would show.
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { sleep, systemClock, withTimeout, type Clock } from '../clock.js';
import { tagKeys, type CloudInstance, type InstanceType, type Tags } from '../cloud/driver.js';
import { CloudError, CredentialsError, errorClass } from '../cloud/errors.js';
import { cloudFromConfig, type Cloud } from '../cloud/from-config.js';
import { createRequest, newInstanceSecret } from '../cloud/init-script.js';
import { formatDuration } from '../config/duration.js';
import type { Config } from '../config/schema.js';
import { commandTimeoutMs } from '../pool/pool.js';
import { parseRunnerList } from '../pool/runner-list.js';
import { ensureRunner, listCommand } from '../runner/deploy.js';
import type { Executor } from '../ssh/executor.js';
import { InstanceSecretMismatchError } from '../ssh/instance-secret.js';

/** Tag marking a cloudtest instance: `created` by the create, `tagged` once step 5 has changed it. */
export const cloudtestTagKey = 'drover-cloudtest';

/** The pool tag value of cloudtest instances: never the pool's own, so its daemon never sees them. */
export function cloudtestPoolTag(poolName: string): string {
  return `${poolName}-cloudtest`;
}

export const cloudtestSteps = ['create', 'list', 'ssh', 'runner', 'tags', 'destroy'] as const;
export type CloudtestStep = (typeof cloudtestSteps)[number];

/** cloudtest would not start: an instance type the config does not have. Nothing was created. */
export class CloudtestRefusedError extends Error {
  override readonly name = 'CloudtestRefusedError';
}

export interface CloudtestOptions {
  config: Config;
  /** The instance type to create (a name from instanceTypes); default the cheapest. */
  instanceType?: string;
  /** Writes one line of the report (the CLI: stdout). */
  print: (line: string) => void;
  clock?: Clock;
  /** A cloud already built, for tests; by default one is built from the config and closed after. */
  cloud?: Cloud;
  /** Destroy calls, `pool.timeoutShutdown` apart, before the instance is given up on (default 3). */
  destroyRounds?: number;
  /**
   * Ctrl-C or SIGTERM (its reason, e.g. 'SIGINT', is named in the report): abandons the step in
   * progress and cleans up as after a failure. The clean-up itself is not abandoned.
   */
  interrupt?: AbortSignal;
  /**
   * Told what would be left if the process ended now (an instance id, or its create token while a
   * create's outcome is unknown), and null once nothing would be; for a caller that ends at once on
   * a second signal.
   */
  onMayBeLeft?: (what: string | null) => void;
}

export interface StepOutcome {
  step: CloudtestStep;
  ok: boolean;
  elapsedMs: number;
  /** What the step saw, or the cloud's message when it failed. */
  detail: string;
}

export interface CloudtestReport {
  instanceType: string;
  /** The pool tag the instance carried (`<poolName>-cloudtest`). */
  poolTag: string;
  /** The create token tag, by which a create that failed part way can still be found. */
  createToken: string;
  /** Null when the create did not return one. */
  instanceId: string | null;
  steps: StepOutcome[];
  /** The step that failed and why; null when every step passed. */
  failure: { step: CloudtestStep; message: string } | null;
  /** The interrupt came before the run ended: `failure` is the step it abandoned, or null if that was the destroy, which it finishes. */
  interrupted: boolean;
  /** Something created may still exist: its id (null when unknown) and why it was not confirmed gone. */
  leftBehind: { instanceId: string | null; reason: string } | null;
}

/** The instance type cloudtest creates: the named one, or the cheapest (then the first by name). */
export function cloudtestInstanceType(config: Config, name?: string): InstanceType {
  const types = Object.values(config.instanceTypes);
  if (name !== undefined) {
    const chosen = config.instanceTypes[name];
    if (!chosen) {
      throw new CloudtestRefusedError(
        `--type ${name}: no such instance type in the config; it has ${types.map((type) => type.name).join(', ')}; nothing was created`,
      );
    }
    return chosen;
  }
  const [cheapest] = [...types].sort((a, b) => a.price - b.price || a.name.localeCompare(b.name));
  // The config schema requires at least one instance type.
  if (!cheapest) throw new CloudtestRefusedError('instanceTypes: the config has none; nothing was created');
  return cheapest;
}

export async function cloudtest(options: CloudtestOptions): Promise<CloudtestReport> {
  const clock = options.clock ?? systemClock;
  const instanceType = cloudtestInstanceType(options.config, options.instanceType);
  let built: Cloud | undefined;
  const cloud = options.cloud ?? (built = await cloudFromConfig(options.config, clock, new Registry()));
  try {
    return await new CloudtestRun(options, cloud, clock, instanceType).run();
  } finally {
    await built?.close();
  }
}

/** A step's own failure, worded for the operator; anything else thrown in a step is the cloud's or the SSH's. */
class StepFailed extends Error {}

/** The step was abandoned on an interrupt. */
class Interrupted extends StepFailed {}

/**
 * The cloud answered the create with a refusal (no quota, no capacity, a rate limit, bad
 * credentials), so it made nothing; any other error may be a lost answer to a create that worked.
 */
function createRefused(error: unknown): boolean {
  return error instanceof CredentialsError || (error instanceof CloudError && error.kind !== 'other');
}

class CloudtestRun {
  private readonly config: Config;
  private readonly print: (line: string) => void;
  private readonly startedAt: number;
  private readonly poolTag: string;
  private readonly createToken = randomUUID();
  // Checked on first SSH contact, as the pool's are: only the VM this create made holds it.
  private readonly secret = newInstanceSecret();
  private readonly pollMs: number;
  private readonly destroyRounds: number;
  private readonly interrupt: AbortSignal | undefined;
  private readonly onMayBeLeft: (what: string | null) => void;
  private instance: CloudInstance | null = null;
  private createError: unknown = null;
  /** What would be left if the process ended now; null before the create is called and once all is gone. */
  private mayBeLeft: string | null = null;
  private createdAt = 0;
  private executor: Executor | null = null;
  private readonly report: CloudtestReport;

  constructor(
    options: CloudtestOptions,
    private readonly cloud: Cloud,
    private readonly clock: Clock,
    private readonly instanceType: InstanceType,
  ) {
    this.config = options.config;
    this.print = options.print;
    this.startedAt = clock.now();
    this.poolTag = cloudtestPoolTag(this.config.poolName);
    // Listings and boot probes go at the pool's own probe pace.
    this.pollMs = this.config.pool.probeInterval;
    this.destroyRounds = options.destroyRounds ?? 3;
    this.interrupt = options.interrupt;
    this.onMayBeLeft = options.onMayBeLeft ?? (() => {});
    this.report = {
      instanceType: instanceType.name,
      poolTag: this.poolTag,
      createToken: this.createToken,
      instanceId: null,
      steps: [],
      failure: null,
      interrupted: false,
      leftBehind: null,
    };
  }

  async run(): Promise<CloudtestReport> {
    const { config, instanceType } = this;
    this.say(`driver ${config.cloud.driver}, pool ${config.poolName}, instance type ${instanceType.name} (provider type ${instanceType.providerType}, ${instanceType.price} an hour)`);
    if (config.cloud.driver === 'stub') {
      this.say('cloud.driver is stub: its cloud is simulated inside this process, so this only exercises Drover itself');
    }
    this.say(
      `the instance is tagged ${tagKeys.pool}=${this.poolTag} (not ${config.poolName}), ${tagKeys.idleBehavior}=hold and ${cloudtestTagKey}, ` +
        `so no daemon of pool ${config.poolName} uses or destroys it and drover teardown does not list it`,
    );
    const steps: Record<CloudtestStep, () => Promise<string>> = {
      create: () => this.create(),
      list: () => this.listed(),
      ssh: () => this.booted(),
      runner: () => this.runner(),
      tags: () => this.tagged(),
      destroy: () => this.destroyed(),
    };
    for (const [index, step] of cloudtestSteps.entries()) {
      const label = `${index + 1}/${cloudtestSteps.length} ${step}`;
      const stepStartedAt = this.clock.now();
      try {
        // The destroy step is itself the clean-up an interrupt asks for: it is finished, not abandoned.
        const detail = await (step === 'destroy' ? steps[step]() : this.interruptible(steps[step]));
        const elapsedMs = this.clock.now() - stepStartedAt;
        this.report.steps.push({ step, ok: true, elapsedMs, detail });
        this.say(`${label}: ok in ${seconds(elapsedMs)}: ${detail}`);
      } catch (error) {
        const elapsedMs = this.clock.now() - stepStartedAt;
        const message = describeError(error);
        this.report.steps.push({ step, ok: false, elapsedMs, detail: message });
        this.report.failure = { step, message };
        if (error instanceof Interrupted) {
          this.report.interrupted = true;
          this.say(`${label}: INTERRUPTED after ${seconds(elapsedMs)}${this.interruptReason()}; cleaning up as after a failure`);
        } else {
          this.say(`${label}: FAILED after ${seconds(elapsedMs)}: ${message}`);
        }
        await this.cleanUp(step);
        this.finish();
        return this.report;
      }
    }
    this.finish();
    return this.report;
  }

  // ---- the steps; each returns what it saw, or throws what went wrong ----

  private async create(): Promise<string> {
    const { instanceType } = this;
    const tags = this.createdTags();
    const { launch } = this.cloud;
    const request = createRequest(instanceType, tags, launch, this.secret);
    this.tellMayBeLeft(this.createTokenHint());
    let instance: CloudInstance;
    try {
      instance = await this.cloud.driver.create(request);
    } catch (error) {
      this.createError = error;
      throw error;
    }
    this.instance = instance;
    this.tellMayBeLeft(`${instance.id} (${tagKeys.pool}=${this.poolTag})`);
    this.report.instanceId = instance.id;
    this.createdAt = this.clock.now();
    return `${instance.id}${launch ? `, with the init script for ${launch.username}` : ''}`;
  }

  private async listed(): Promise<string> {
    const created = this.createdTags();
    const listed = await this.pollListing('listed with its address and tags', this.bootDeadline(), this.bootBound(), (instance) => {
      if (instance === undefined) return 'not listed yet';
      const wrong = Object.entries(created).find(([key, value]) => instance.tags[key] !== value);
      // The pool reads the secret (and the rest) back from listings; a tag lost here fails it later.
      if (wrong) return `tag ${wrong[0]} is ${instance.tags[wrong[0]] === undefined ? 'missing' : 'not what the create set'}`;
      return instance.address === null ? 'listed without an address yet' : null;
    });
    this.instance = listed;
    return `listed with address ${listed.address ?? ''}:${listed.port ?? 22} and every tag the create set`;
  }

  private async booted(): Promise<string> {
    const instance = this.known();
    const { bootProbeCommand } = this.config.pool;
    this.executor = this.cloud.executorFor({ id: instance.id, address: instance.address ?? '', port: instance.port ?? 22, secret: this.secret });
    const deadline = this.bootDeadline();
    let lastWhy = 'not tried';
    for (let tries = 1; ; tries++) {
      try {
        const remaining = Math.max(1, Math.min(commandTimeoutMs, deadline - this.clock.now()));
        const probe = await withTimeout(this.clock, remaining, 'the boot probe', this.executor.run(bootProbeCommand));
        if (probe.exitCode === 0) {
          const secret = this.config.cloud.driver === 'stub' ? "the stub's executor checks no secret" : 'the instance secret matched on first contact';
          return `${secret}; boot probe ${JSON.stringify(bootProbeCommand)} passed (try ${tries})`;
        }
        lastWhy = `boot probe ${JSON.stringify(bootProbeCommand)} exited with ${String(probe.exitCode)}: ${probe.stderr.trim()}`;
      } catch (error) {
        // Not the VM we created (or its secret file was changed): no retry can fix that.
        if (error instanceof InstanceSecretMismatchError) throw error;
        lastWhy = describeError(error);
      }
      await this.waitBefore(deadline, () => `not reachable over SSH with a passing boot probe within ${this.bootBound()} (${tries} tries); last: ${lastWhy}`);
    }
  }

  private async runner(): Promise<string> {
    const executor = this.executor;
    if (executor === null) throw new StepFailed('no SSH executor: the ssh step did not pass');
    const { runnerCommand } = this.config.pool;
    let installed = 'built into the instance';
    if (this.cloud.deploysRunner) {
      // Two commands (a hash check, an upload), each allowed what the pool allows one.
      const outcome = await withTimeout(this.clock, 2 * commandTimeoutMs, `installing the runner at ${runnerCommand}`, ensureRunner(executor, runnerCommand));
      installed = outcome === 'installed' ? `installed at ${runnerCommand}` : `already current at ${runnerCommand}`;
    }
    const list = await withTimeout(this.clock, commandTimeoutMs, 'the runner list', executor.run(listCommand(runnerCommand)));
    if (list.exitCode !== 0) throw new StepFailed(`${runnerCommand} list exited with ${String(list.exitCode)}: ${list.stderr.trim()}`);
    const listing = parseRunnerList(list.stdout);
    this.closeExecutor();
    return `runner ${installed}; its list parsed (${listing.running.length} running, ${listing.exited.size} exited)`;
  }

  private async tagged(): Promise<string> {
    const instance = this.known();
    await this.cloud.driver.setTags(instance.id, { [cloudtestTagKey]: 'tagged' });
    const expected = { ...this.createdTags(), [cloudtestTagKey]: 'tagged' };
    // A listing may lag a tag change (eventual consistency); the pool's own wait for news is timeoutBooting.
    const deadline = this.clock.now() + this.config.pool.timeoutBooting;
    const bound = `${formatDuration(this.config.pool.timeoutBooting)} (pool.timeoutBooting)`;
    await this.pollListing('listed with the changed tag', deadline, bound, (listed) => {
      if (listed === undefined) return 'no longer listed';
      const wrong = Object.entries(expected).find(([key, value]) => listed.tags[key] !== value);
      return wrong ? `tag ${wrong[0]} is ${listed.tags[wrong[0]] ?? 'missing'}, expected ${wrong[1]}` : null;
    });
    return `set ${cloudtestTagKey}=tagged; a listing shows it, and the other tags unchanged`;
  }

  private async destroyed(): Promise<string> {
    const instance = this.known();
    const rounds = await this.destroyConfirmed(instance.id);
    this.tellMayBeLeft(null);
    this.report.interrupted = this.interrupt?.aborted ?? false;
    return `${instance.id} no longer listed (${rounds === 1 ? 'one destroy call' : `${rounds} destroy calls`})`;
  }

  // ---- clean-up after a failed step ----

  private async cleanUp(failed: CloudtestStep): Promise<void> {
    this.closeExecutor();
    // The destroy step already tried as hard as clean-up would.
    if (failed === 'destroy') {
      this.report.leftBehind = { instanceId: this.known().id, reason: this.report.failure?.message ?? '' };
      return;
    }
    // Interrupted before the create was called: nothing to look for.
    if (this.instance === null && this.mayBeLeft === null) return;
    const cleanupStartedAt = this.clock.now();
    const ids = this.instance !== null ? [this.instance.id] : await this.madeByFailedCreate();
    if (ids === null) return;
    for (const id of ids) {
      try {
        await this.destroyConfirmed(id);
        this.say(`clean-up: destroyed ${id} in ${seconds(this.clock.now() - cleanupStartedAt)}`);
      } catch (error) {
        this.report.leftBehind = { instanceId: id, reason: describeError(error) };
      }
    }
    if (this.report.leftBehind === null) this.tellMayBeLeft(null);
  }

  /**
   * The ids of what a failed create made, found by its create token; null when no listing could
   * tell (`leftBehind` then says so). A refused create made nothing, which one listing confirms. Any
   * other error may be a lost answer to a create that worked, and a new instance may be listed only
   * later (EC2's DescribeInstances is eventually consistent after RunInstances), so listings go on
   * for pool.timeoutBooting: the time the list step, like a pool, gives a new instance to be listed.
   */
  private async madeByFailedCreate(): Promise<string[] | null> {
    const refused = createRefused(this.createError);
    const { timeoutBooting } = this.config.pool;
    const bound = `${formatDuration(refused ? 0 : timeoutBooting)} (pool.timeoutBooting)`;
    if (!refused) {
      this.say(`clean-up: the create may have made an instance all the same: listing by its create token for up to ${formatDuration(timeoutBooting)} (pool.timeoutBooting)`);
    }
    const deadline = this.clock.now() + (refused ? 0 : timeoutBooting);
    let lastError: string | null = null;
    for (let listings = 1; ; listings++) {
      // A create still in flight when interrupted may answer meanwhile.
      if (this.instance !== null) return [this.instance.id];
      try {
        const ids = (await this.cloud.driver.list(this.filter())).map((instance) => instance.id);
        if (ids.length > 0) return ids;
        lastError = null;
      } catch (error) {
        lastError = describeError(error);
      }
      const now = this.clock.now();
      if (now >= deadline) break;
      await sleep(this.clock, Math.min(this.pollMs, deadline - now));
    }
    if (lastError !== null) {
      this.report.leftBehind = { instanceId: null, reason: `no listing could show whether the failed create made one within ${bound}; last: ${lastError}` };
      return null;
    }
    this.say(`clean-up: the failed create made no instance (none listed with its create token${refused ? '' : ` within ${bound}`})`);
    return [];
  }

  private finish(): void {
    const total = seconds(this.clock.now() - this.startedAt);
    const { failure, leftBehind, interrupted } = this.report;
    if (failure === null) {
      this.say(`${interrupted ? 'interrupted during the destroy step, which finished' : 'passed'} in ${total}: every step, and nothing left behind`);
      return;
    }
    const stepNumber = cloudtestSteps.indexOf(failure.step) + 1;
    const at = `at step ${stepNumber}/${cloudtestSteps.length} ${failure.step} after ${total}`;
    this.say(interrupted ? `INTERRUPTED ${at}${this.interruptReason()}` : `FAILED ${at}: ${failure.message}`);
    if (leftBehind !== null) {
      const which = leftBehind.instanceId === null ? `NOT confirmed gone: may have left ${this.createTokenHint()}` : `NOT destroyed: ${leftBehind.instanceId}`;
      this.say(`${which} (${tagKeys.pool}=${this.poolTag}): ${leftBehind.reason}; remove it with the cloud's own console or CLI`);
    }
  }

  // ---- helpers ----

  /** Destroys the instance and waits for a listing to stop showing it: `destroyRounds` calls, `timeoutShutdown` apart. */
  private async destroyConfirmed(id: string): Promise<number> {
    const { timeoutShutdown } = this.config.pool;
    let lastWhy = '';
    for (let round = 1; round <= this.destroyRounds; round++) {
      let destroyError: string | null = null;
      try {
        await this.cloud.driver.destroy(id);
      } catch (error) {
        destroyError = `destroy failed: ${describeError(error)}`;
      }
      const roundEnd = this.clock.now() + timeoutShutdown;
      for (;;) {
        try {
          const listed = await this.cloud.driver.list(this.filter());
          // Gone is what the cloud no longer lists, whatever the destroy call answered.
          if (!listed.some((instance) => instance.id === id)) return round;
          lastWhy = destroyError ?? 'still listed after its destroy call returned';
        } catch (error) {
          lastWhy = `no listing confirmed the destroy: ${describeError(error)}`;
        }
        const now = this.clock.now();
        if (now >= roundEnd) break;
        await sleep(this.clock, Math.min(this.pollMs, roundEnd - now));
      }
    }
    throw new StepFailed(
      `${id} still listed after ${this.destroyRounds} destroy calls ${formatDuration(timeoutShutdown)} apart (pool.timeoutShutdown); last: ${lastWhy}`,
    );
  }

  /** Lists until `problem` says nothing is wrong with this instance's entry (undefined: not listed). */
  private async pollListing(what: string, deadline: number, bound: string, problem: (instance: CloudInstance | undefined) => string | null): Promise<CloudInstance> {
    const id = this.known().id;
    let lastWhy = '';
    for (let tries = 1; ; tries++) {
      try {
        const instance = (await this.cloud.driver.list(this.filter())).find((listed) => listed.id === id);
        const why = problem(instance);
        if (why === null && instance !== undefined) return instance;
        lastWhy = why ?? 'not listed';
      } catch (error) {
        lastWhy = `listing failed: ${describeError(error)}`;
      }
      await this.waitBefore(deadline, () => `not ${what} within ${bound} (${tries} listings); last: ${lastWhy}`);
    }
  }

  /** Sleeps one poll interval, or throws `why()` when the deadline has passed, or Interrupted. */
  private async waitBefore(deadline: number, why: () => string): Promise<void> {
    this.throwIfInterrupted();
    const now = this.clock.now();
    if (now >= deadline) throw new StepFailed(why());
    await sleep(this.clock, Math.min(this.pollMs, deadline - now), this.interrupt);
    this.throwIfInterrupted();
  }

  /**
   * Runs a step until it ends or the interrupt comes. An abandoned step stops at its next wait; a
   * cloud call it has in flight is not cancelled (a create that answers later is still cleaned up).
   */
  private async interruptible<T>(step: () => Promise<T>): Promise<T> {
    const signal = this.interrupt;
    if (signal === undefined) return step();
    this.throwIfInterrupted();
    let onAbort = (): void => undefined;
    const interrupted = new Promise<never>((_resolve, reject) => {
      onAbort = () => reject(new Interrupted(this.interruptMessage()));
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([step(), interrupted]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  private throwIfInterrupted(): void {
    if (this.interrupt?.aborted) throw new Interrupted(this.interruptMessage());
  }

  private interruptMessage(): string {
    return `interrupted${this.interruptReason()}`;
  }

  /** ` (SIGINT)`: the signal the caller aborted with, or nothing when it gave none. */
  private interruptReason(): string {
    const reason: unknown = this.interrupt?.reason;
    return typeof reason === 'string' ? ` (${reason})` : '';
  }

  private tellMayBeLeft(what: string | null): void {
    this.mayBeLeft = what;
    this.onMayBeLeft(what);
  }

  private createTokenHint(): string {
    return `an instance with create token ${this.createToken}; look for tag ${tagKeys.createToken}=${this.createToken}`;
  }

  /** New instances must be listed, reachable and booted within timeoutBooting of their create, as in the pool. */
  private bootDeadline(): number {
    return this.createdAt + this.config.pool.timeoutBooting;
  }

  private bootBound(): string {
    return `${formatDuration(this.config.pool.timeoutBooting)} of its create (pool.timeoutBooting; a pool would destroy it then)`;
  }

  private createdTags(): Tags {
    return {
      [tagKeys.pool]: this.poolTag,
      [tagKeys.instanceType]: this.instanceType.name,
      [tagKeys.idleBehavior]: 'hold',
      [tagKeys.createToken]: this.createToken,
      [tagKeys.secret]: this.secret,
      [cloudtestTagKey]: 'created',
    };
  }

  private filter(): Tags {
    return { [tagKeys.pool]: this.poolTag, [tagKeys.createToken]: this.createToken };
  }

  private known(): CloudInstance {
    if (this.instance === null) throw new StepFailed('no instance: the create step did not pass');
    return this.instance;
  }

  private closeExecutor(): void {
    this.executor?.close();
    this.executor = null;
  }

  private say(line: string): void {
    this.print(`cloudtest ${seconds(this.clock.now() - this.startedAt).padStart(7)}  ${line}`);
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** The message with its class when the class says something (QuotaError: ...), as the cloud gave it. */
function describeError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const name = errorClass(error);
  return error instanceof StepFailed || name === 'Error' ? message : `${name}: ${message}`;
}
