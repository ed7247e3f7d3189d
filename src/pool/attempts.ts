// The containers this process acts on, one container-attempt actor each (machines/container.ts),
// recorded in the allocation ledger. Supplies the attempts' effects (runner start, kill, logs,
// remove over the instance's executor) and durable queue writes; feeds them what runner lists and
// the per-instance watch session report; rebuilds them from the queue and the runners after a
// restart. Nothing here is awaited by a scheduling pass.
import { createActor, fromPromise, type SnapshotFrom } from 'xstate';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { ContainerStateError, finalStates, logTailBytes, type Container, type ContainerQueue } from '../queue/types.js';
import { killCommand, logsCommand, removeCommand, runnerExit, startCommand, waitCommand } from '../runner/deploy.js';
import type { CommandResult } from '../ssh/executor.js';
import {
  containerMachine,
  type AttemptInitial,
  type AttemptRef,
  type ContainerMachine,
  type KillContainerInput,
  type KillOutcome,
  type RunnerStatus,
  type StartOutcome,
} from '../../machines/container.js';
import { AllocationLedger, type Allocation } from './ledger.js';
import { demandOf } from './resources.js';
import { parseRunnerList, type RunnerListing } from './runner-list.js';
import { inspectOption, type ActorInspection } from '../inspect/actor-inspection.js';

/** The queue as the attempts see it: the durable record they read and write. */
export type AttemptRecords = Pick<
  ContainerQueue,
  'get' | 'liveOn' | 'lock' | 'unlock' | 'markRunning' | 'recordExit' | 'complete' | 'setLogTail' | 'requeueOrFail' | 'fail'
>;

/** The worker a container is placed on, as the attempts need it. */
export interface Placement {
  workerId: string;
  instanceId: string;
  instanceType: string;
}

export interface AttemptsOptions {
  records: AttemptRecords;
  clock: Clock;
  logger: Logger;
  runnerCommand: string;
  /** Run images with docker on the instances. */
  docker: boolean;
  /** Runs a command on the worker's instance, bounded by the pool's command timeout. */
  run: (workerId: string, command: string) => Promise<CommandResult>;
  /** The containers held on a worker changed (one started, one exited, one went). */
  changed: (workerId: string) => void;
  /** How a start on the worker went, for the worker's health. */
  startSettled: (workerId: string, outcome: StartOutcome) => void;
  uncertainDeadlineMs: number;
  killRetryMs: number;
  /** How long one runner `wait` session may block before it is renewed. */
  watchSeconds: number;
  /** Pause before a failed watch session is tried again (probes cover the gap). */
  watchRetryMs: number;
  /** Starts of one container refused in a row (for the instances' reasons) before it is failed. */
  maxRefusals: number;
  /** Bytes of a finished container's output to read (config `pool.logTailBytes`); default 65536. */
  logTailBytes?: number;
  /** A container's first start was recorded, `waitMs` after its submit (the queue's times). */
  firstStarted?: (waitMs: number) => void;
  /** Absent: attempts are created without an inspector. */
  inspection?: ActorInspection | undefined;
}

type AttemptSnapshot = SnapshotFrom<ContainerMachine>;

export class Attempts {
  readonly ledger = new AllocationLedger();
  private readonly machine;
  private readonly watching = new Set<string>();
  /** Starts refused in a row per container, across its attempts (this process only). */
  private readonly refusals = new Map<string, number>();
  /**
   * Copies on an instance that must not be there (finished, cancelled, unknown, or running
   * elsewhere), per worker: what was last sent to clear each away, so a probe does not repeat it.
   * They are no attempt of this process: nothing about them is written to the queue.
   */
  private readonly straysCleared = new Map<string, Map<string, 'TERM' | 'KILL' | 'remove'>>();
  /** Starts the runner confirmed but the queue could not record (disk full): it still has them locked. */
  private readonly unrecordedStarts = new Set<string>();
  /**
   * Queue write failures logged per container since a write last committed: a full disk refuses
   * the same writes at every probe, and the queue itself logs the spell once. Repeats go to debug.
   */
  private readonly failuresLogged = new Map<string, Set<string>>();
  private readonly timers = new Set<unknown>();
  private stopped = false;

  constructor(private readonly options: AttemptsOptions) {
    const { records, runnerCommand } = options;
    this.machine = containerMachine.provide({
      delays: { uncertainDeadline: options.uncertainDeadlineMs, killRetry: options.killRetryMs },
      actors: {
        startContainer: fromPromise<StartOutcome, AttemptRef>(({ input }) => this.startOn(input)),
        killContainer: fromPromise<KillOutcome, KillContainerInput>(async ({ input }) => {
          const result = await options.run(input.workerId, killCommand(runnerCommand, input.signal, input.uuid));
          if (result.exitCode === runnerExit.ok) return 'sent';
          if (result.exitCode === runnerExit.unknown) return 'gone';
          throw new Error(`runner kill exited with ${result.exitCode}: ${result.stderr.trim()}`);
        }),
        collectLogs: fromPromise<string, AttemptRef>(async ({ input }) => {
          // The runner puts a line saying how much it dropped before a tail of longer output.
          const bytes = options.logTailBytes ?? logTailBytes;
          const result = await options.run(input.workerId, logsCommand(runnerCommand, input.uuid, bytes));
          if (result.exitCode !== runnerExit.ok) throw new Error(`runner logs exited with ${result.exitCode}: ${result.stderr.trim()}`);
          return result.stdout;
        }),
        removeContainer: fromPromise<void, AttemptRef>(async ({ input }) => {
          // Its exit could not be written (disk full): the runner's copy is the only record of it,
          // for the next list to find exited rather than absent, which would run it again.
          const container = records.get(input.uuid);
          if (container && !finalStates.has(container.state) && container.instanceId === input.instanceId && container.exitCode === null) {
            throw new Error('kept on the instance: its exit is not in the queue yet');
          }
          const result = await options.run(input.workerId, removeCommand(runnerCommand, input.uuid));
          if (result.exitCode !== runnerExit.ok && result.exitCode !== runnerExit.unknown) {
            throw new Error(`runner remove exited with ${result.exitCode}: ${result.stderr.trim()}`);
          }
        }),
      },
      actions: {
        recordRunning: (_, params: { uuid: string; instanceId: string }) => {
          this.write(params.uuid, 'mark running', () =>
            this.countingStart(params.uuid, () => {
              const allocation = this.ledger.get(params.uuid);
              records.markRunning(params.uuid, params.instanceId, allocation?.instanceType ?? '');
            }),
          );
          // Still locked: the write failed for the file's sake, not because a cancel won the race.
          if (records.get(params.uuid)?.state === 'locked') this.unrecordedStarts.add(params.uuid);
        },
        // The exit code first, durably: should the instance vanish now, the container is complete, not
        // rerun. With the instance, so that a start the queue could not record (still locked there)
        // is recorded with it.
        recordExit: ({ context }, params: { uuid: string; exitCode: number }) =>
          this.write(params.uuid, 'record exit', () =>
            this.countingStart(params.uuid, () => records.recordExit(params.uuid, params.exitCode, context.instanceId)),
          ),
        // A cancelled container keeps its output up to the kill; any other is completed with it.
        recordLogs: ({ context }, params: { uuid: string; logTail: string }) =>
          this.write(params.uuid, 'complete', () =>
            records.get(params.uuid)?.state === 'cancelled'
              ? records.setLogTail(params.uuid, params.logTail)
              : this.countingStart(params.uuid, () => records.complete(params.uuid, context.exitCode ?? 0, params.logTail)),
          ),
        recordRequeue: (_, params: { uuid: string; reason: string; lost: boolean }) =>
          this.write(params.uuid, 'requeue', () => {
            if (params.lost) records.requeueOrFail(params.uuid, params.reason);
            else records.unlock(params.uuid, params.reason);
          }),
        recordFailed: (_, params: { uuid: string; reason: string }) =>
          this.write(params.uuid, 'fail', () => records.fail(params.uuid, params.reason)),
        orderKill: (_, params: { uuid: string; instanceId: string }) => this.orderKill(params.uuid, params.instanceId),
      },
    });
  }

  /** Starts a locked container on the worker. The caller has checked the worker takes it. */
  start(container: Readonly<Container>, placement: Placement): void {
    this.spawn(container.uuid, placement, demandOf(container.constraints), 'locked', 0);
  }

  has(uuid: string): boolean {
    return this.ledger.get(uuid) !== undefined;
  }

  *uuids(): Iterable<string> {
    for (const allocation of this.ledger.all()) yield allocation.uuid;
  }

  cancel(uuid: string): void {
    this.ledger.get(uuid)?.actor.send({ type: 'CANCEL' });
  }

  /** The worker's instance is gone: whatever ran there is lost. */
  instanceGone(workerId: string, reason: string): void {
    for (const allocation of this.ledger.on(workerId)) allocation.actor.send({ type: 'INSTANCE_GONE', reason });
    this.straysCleared.delete(workerId);
  }

  /**
   * A runner list of the worker's instance, begun at `listedAt`: tells each attempt there what the
   * runner says of it, and takes on what the runner holds that no attempt covers (after a restart,
   * or a container requeued while it was in fact running), so nothing runs unseen or twice.
   */
  listed(placement: Placement, listing: RunnerListing, listedAt: number): void {
    const { workerId, instanceId } = placement;
    const listedUuids = new Set<string>([...listing.running, ...listing.exited.keys()]);
    for (const uuid of listedUuids) {
      const allocation = this.ledger.get(uuid);
      // An attempt elsewhere owns the container: this copy is a second one and must go.
      if (allocation && allocation.workerId !== workerId) this.clearStray(uuid, placement, listing.exited.has(uuid));
      else if (!allocation) this.takeOn(uuid, placement, listing.exited.has(uuid));
    }
    // Containers the queue has on this instance but no attempt covers (the dispatcher restarted).
    for (const container of this.options.records.liveOn(instanceId)) {
      if (this.ledger.get(container.uuid)) continue;
      this.spawn(container.uuid, placement, demandOf(container.constraints), container.state === 'locked' ? 'uncertain' : 'running', 0);
    }
    for (const allocation of this.ledger.on(workerId)) {
      const exitCode = listing.exited.get(allocation.uuid);
      const status: RunnerStatus =
        exitCode !== undefined ? { state: 'exited', exitCode } : listing.running.includes(allocation.uuid) ? { state: 'running' } : { state: 'absent' };
      allocation.actor.send({ type: 'RUNNER_LISTED', listedAt, status });
    }
    const cleared = this.straysCleared.get(workerId);
    if (cleared) for (const uuid of cleared.keys()) if (!listedUuids.has(uuid)) cleared.delete(uuid);
    if (this.ledger.holdingOn(workerId) > 0) this.watch(placement);
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) this.options.clock.clearTimeout(timer);
    this.timers.clear();
    for (const allocation of [...this.ledger.all()]) {
      allocation.actor.stop();
      this.ledger.remove(allocation.uuid);
    }
  }

  // ---- internals ----

  private takeOn(uuid: string, placement: Placement, exited: boolean): void {
    const { records, logger } = this.options;
    const container = records.get(uuid);
    const { instanceId } = placement;
    const live = container !== undefined && (container.state === 'locked' || container.state === 'running');
    if (live && container.instanceId === instanceId) {
      this.spawn(uuid, placement, demandOf(container.constraints), container.state === 'locked' ? 'uncertain' : 'running', 0);
      logger.info({ containerUuid: uuid, instanceId }, 'adopted a container found on its instance');
      return;
    }
    if (container?.state === 'queued' && this.write(uuid, 'lock', () => records.lock(uuid, instanceId, placement.instanceType))) {
      // The queue gave it up (its instance looked lost) but it is here: adopt it rather than start a second copy.
      this.spawn(uuid, placement, demandOf(container.constraints), 'uncertain', 0);
      logger.warn({ containerUuid: uuid, instanceId }, 'adopted a requeued container found on an instance');
      return;
    }
    // Finished, cancelled, unknown to the queue, or recorded on another instance: it must not run here.
    this.clearStray(uuid, placement, exited);
  }

  /** TERM a stray copy, KILL it if a later list still shows it, remove it once it has exited. */
  private clearStray(uuid: string, placement: Placement, exited: boolean): void {
    const { workerId, instanceId } = placement;
    let cleared = this.straysCleared.get(workerId);
    if (!cleared) this.straysCleared.set(workerId, (cleared = new Map()));
    const last = cleared.get(uuid);
    if (exited && last === 'remove') return;
    const step = exited ? 'remove' : last === undefined ? 'TERM' : 'KILL';
    const { runnerCommand, logger } = this.options;
    const command = step === 'remove' ? removeCommand(runnerCommand, uuid) : killCommand(runnerCommand, step, uuid);
    if (last === undefined) logger.warn({ containerUuid: uuid, instanceId, queueState: this.options.records.get(uuid)?.state ?? null }, 'clearing away a container that should not be on this instance');
    cleared.set(uuid, step);
    this.options.run(workerId, command).catch((error: unknown) => {
      if (cleared.get(uuid) === step) cleared.delete(uuid);
      logger.debug({ containerUuid: uuid, instanceId, step, error: errorMessage(error) }, 'clearing a stray container failed; the next list retries');
    });
  }

  private spawn(uuid: string, placement: Placement, demand: Allocation['demand'], initial: AttemptInitial, since: number): void {
    const actor = createActor(this.machine, {
      clock: this.options.clock,
      input: { uuid, workerId: placement.workerId, instanceId: placement.instanceId, initial, since },
      ...inspectOption(this.options.inspection?.observerFor({ kind: 'container', uuid })),
    });
    const allocation: Allocation = { uuid, ...placement, demand, actor, holds: true };
    this.ledger.add(allocation);
    let last: string | null = null;
    actor.subscribe({
      next: (snapshot) => {
        last = this.observe(allocation, snapshot, last);
      },
      error: (error: unknown) => {
        this.options.logger.error({ containerUuid: uuid, error: errorMessage(error) }, 'container attempt failed unexpectedly');
        this.forget(allocation);
      },
    });
    actor.start();
    this.options.changed(placement.workerId);
  }

  private observe(allocation: Allocation, snapshot: AttemptSnapshot, last: string | null): string {
    const state = typeof snapshot.value === 'string' ? snapshot.value : Object.keys(snapshot.value).join('.');
    if (state !== last) {
      this.options.logger.info(
        { containerUuid: allocation.uuid, instanceId: allocation.instanceId, from: last, to: state, reason: snapshot.context.reason },
        'container state changed',
      );
    }
    // The queue says locked, as after a restart: so must the attempt. As an uncertain start, the
    // runner's next list decides it (and its record is written again), never a running attempt the
    // queue knows nothing of, whose end would be recorded nowhere.
    if (this.unrecordedStarts.delete(allocation.uuid) && snapshot.matches('running')) {
      this.reconsider(allocation, snapshot.context.since);
      return state;
    }
    // Logged by name only; what the pool does depends on tags and status.
    if (snapshot.hasTag('allocated')) this.watch(allocation);
    if (snapshot.status === 'done') {
      if (snapshot.output?.outcome !== 'requeued') this.refusals.delete(allocation.uuid);
      const { exitCode } = snapshot.context;
      // Its logs could not be read, or the queue could not record it: complete it with the exit code
      // alone, if the queue still has it on this attempt's instance.
      const recorded = this.options.records.get(allocation.uuid);
      const live = recorded?.state === 'running' || recorded?.state === 'locked';
      if (exitCode !== null && live && recorded.instanceId === allocation.instanceId) {
        this.write(allocation.uuid, 'complete', () => this.countingStart(allocation.uuid, () => this.options.records.complete(allocation.uuid, exitCode, '')));
      }
      this.forget(allocation);
    } else if (!snapshot.hasTag('allocated') && this.ledger.release(allocation.uuid)) {
      this.options.changed(allocation.workerId);
    }
    return state;
  }

  /** Replaces a running attempt whose start the queue could not record with an uncertain one, from the same `since`. */
  private reconsider(allocation: Allocation, since: number): void {
    const { uuid, workerId, instanceId, instanceType, demand } = allocation;
    const message = 'its start could not be recorded in the queue; the runner list decides it';
    if (this.firstFailure(uuid, message)) this.options.logger.warn({ containerUuid: uuid, instanceId }, message);
    else this.options.logger.debug({ containerUuid: uuid, instanceId }, message);
    this.ledger.remove(uuid);
    allocation.actor.stop();
    this.spawn(uuid, { workerId, instanceId, instanceType }, demand, 'uncertain', since);
  }

  private forget(allocation: Allocation): void {
    if (this.ledger.get(allocation.uuid) !== allocation) return;
    this.ledger.remove(allocation.uuid);
    this.options.changed(allocation.workerId);
  }

  private async startOn(input: AttemptRef): Promise<StartOutcome> {
    const { records, clock, runnerCommand, docker } = this.options;
    const container = records.get(input.uuid);
    if (container?.state !== 'locked') {
      return { kind: 'refused', fault: 'container', reason: `no longer locked (${container?.state ?? 'gone'})` };
    }
    let command: string;
    try {
      command = startCommand(runnerCommand, { uuid: input.uuid, command: container.command, env: container.env, image: container.image, docker });
    } catch (error) {
      // No retry can fix a container the runner cannot be asked to start.
      return { kind: 'refused', fault: 'container', reason: `cannot be started: ${errorMessage(error)}` };
    }
    const sentAt = clock.now();
    let outcome: StartOutcome;
    try {
      const result = await this.options.run(input.workerId, command);
      outcome = classifyStart(result, sentAt, clock.now(), input.instanceId);
    } catch (error) {
      // The command may have run and only its answer been lost: starting it again elsewhere could
      // run it twice. The runner's next list decides.
      outcome = { kind: 'uncertain', sentAt, reason: `no answer from ${input.instanceId}: ${errorMessage(error)}` };
    }
    this.options.startSettled(input.workerId, outcome);
    return this.judgeRefusals(input.uuid, outcome);
  }

  /**
   * A refusal is the instance's failure, and a broken instance is drained after a few; but a
   * container that every instance refuses is its own problem, and must not drain the pool one
   * instance after another: after maxRefusals in a row it fails, with the last reason.
   */
  private judgeRefusals(uuid: string, outcome: StartOutcome): StartOutcome {
    if (outcome.kind === 'started') this.refusals.delete(uuid);
    if (outcome.kind !== 'refused' || outcome.fault !== 'instance') return outcome;
    const refusals = (this.refusals.get(uuid) ?? 0) + 1;
    if (refusals < this.options.maxRefusals) {
      this.refusals.set(uuid, refusals);
      return outcome;
    }
    this.refusals.delete(uuid);
    return { kind: 'refused', fault: 'container', reason: `refused by ${refusals} starts in a row; the last: ${outcome.reason}` };
  }

  /** One long-poll session per busy worker: each exit is reported the moment the runner sees it. */
  private watch(placement: Placement): void {
    if (this.watching.has(placement.workerId) || this.stopped) return;
    this.watching.add(placement.workerId);
    void this.watchLoop(placement).finally(() => this.watching.delete(placement.workerId));
  }

  private async watchLoop({ workerId }: Placement): Promise<void> {
    const { runnerCommand, watchSeconds, watchRetryMs } = this.options;
    // Exits the last session reported (whatever they belong to: a stray's, one whose remove failed).
    let reported: readonly string[] = [];
    while (!this.stopped && this.ledger.holdingOn(workerId) > 0) {
      // Every exit already seen is passed back, so the session waits for the next one instead of
      // answering at once about a directory nobody has removed yet.
      const known = new Set(reported);
      for (const allocation of this.ledger.on(workerId)) if (!allocation.holds) known.add(allocation.uuid);
      let listing: RunnerListing;
      try {
        const result = await this.options.run(workerId, waitCommand(runnerCommand, watchSeconds, [...known]));
        if (result.exitCode !== runnerExit.ok) throw new Error(`runner wait exited with ${result.exitCode}: ${result.stderr.trim()}`);
        listing = parseRunnerList(result.stdout);
      } catch (error) {
        if (this.stopped || this.ledger.holdingOn(workerId) === 0) return;
        this.options.logger.debug({ workerId, error: errorMessage(error) }, 'runner watch failed; probes cover until it is back');
        await this.sleep(watchRetryMs);
        continue;
      }
      reported = [...listing.exited.keys()];
      for (const [uuid, exitCode] of listing.exited) {
        const allocation = this.ledger.get(uuid);
        if (allocation?.workerId === workerId && allocation.holds) allocation.actor.send({ type: 'EXITED', exitCode });
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.options.clock.setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.add(timer);
    });
  }

  /** A start given up on whose instance did not answer its kill: if it shows up there later, listed() clears it away unless the queue gives it back there. */
  private orderKill(uuid: string, instanceId: string): void {
    this.options.logger.warn({ containerUuid: uuid, instanceId }, 'a start given up on could not be killed; it is cleared away if it shows up');
  }

  /**
   * A queue write that may count the container's start (markRunning, or recordExit and complete of
   * a start the queue could not record): reports the first start's wait. The attempts counter, not
   * startedAt, tells a first start: a requeue clears startedAt but keeps the count.
   */
  private countingStart(uuid: string, change: () => void): void {
    const { records, firstStarted } = this.options;
    const before = firstStarted === undefined ? undefined : records.get(uuid);
    change();
    if (before?.attempts !== 0) return;
    const after = records.get(uuid);
    if (after !== undefined && after.attempts > 0 && after.startedAt !== null) firstStarted?.(after.startedAt - after.submittedAt);
  }

  /**
   * Runs a queue write; a write a concurrent change made moot (a cancel won the race) is not an error.
   * A failure is logged as an error the first time this container meets it in a spell of failures
   * (until a write commits), at debug after that.
   */
  private write<T>(uuid: string, what: string, change: () => T): T | undefined {
    let result: T;
    try {
      result = change();
    } catch (error) {
      if (error instanceof ContainerStateError) return undefined;
      const fields = { containerUuid: uuid, error: errorMessage(error) };
      if (this.firstFailure(uuid, `${what}: ${fields.error}`)) this.options.logger.error(fields, `queue write failed: ${what}`);
      else this.options.logger.debug(fields, `queue write failed: ${what}`);
      return undefined;
    }
    // The file takes changes again: the next spell's failures are news.
    this.failuresLogged.clear();
    return result;
  }

  /** Notes a failure of the container; true if it is the first such this spell. */
  private firstFailure(uuid: string, failure: string): boolean {
    let logged = this.failuresLogged.get(uuid);
    if (!logged) this.failuresLogged.set(uuid, (logged = new Set()));
    if (logged.has(failure)) return false;
    logged.add(failure);
    return true;
  }
}

/**
 * What a runner `start` answer means. Its own argument errors are the container's fault; a start
 * ended by a signal or one the runner could not see through is uncertain; anything else the
 * runner refused is the instance's.
 */
export function classifyStart(result: CommandResult, sentAt: number, answeredAt: number, instanceId: string): StartOutcome {
  const detail = result.stderr.trim();
  if (result.exitCode === null) {
    return { kind: 'uncertain', sentAt, reason: `runner start on ${instanceId} ended by a signal` };
  }
  switch (result.exitCode) {
    case runnerExit.ok:
    case runnerExit.exists:
      return { kind: 'started', at: answeredAt };
    case runnerExit.usage:
      return { kind: 'refused', fault: 'container', reason: `the runner refused its arguments: ${detail}` };
    case runnerExit.unsure:
      return { kind: 'uncertain', sentAt, reason: `the runner on ${instanceId} could not tell whether it started: ${detail}` };
    default:
      if (result.exitCode > 128 || result.exitCode < 0) {
        return { kind: 'uncertain', sentAt, reason: `runner start on ${instanceId} ended by signal (exit ${result.exitCode})` };
      }
      return { kind: 'refused', fault: 'instance', reason: `runner start on ${instanceId} exited with ${result.exitCode}: ${detail}` };
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
