// Carries the scheduler's passes out between the queue and the pool: reconciles what the runners
// report with the queue (completions, lost containers, restarts), then plans and acts.
import { createActor, fromPromise, type Actor } from 'xstate';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import type { InstanceType } from '../cloud/driver.js';
import type { SchedulerSettings } from '../config/schema.js';
import type { Pool } from '../pool/pool.js';
import { ContainerStateError, type Container, type ContainerQueue } from '../queue/types.js';
import { killCommand, logsCommand, removeCommand, startCommand } from '../runner/deploy.js';
import type { Executor } from '../ssh/executor.js';
import type { StartContainerInput } from '../../machines/instance.js';
import { schedulerMachine, type SchedulerMachine } from '../../machines/scheduler.js';
import { plan, type Plan } from './plan.js';

export interface DispatcherOptions {
  queue: ContainerQueue;
  pool: Pool;
  instanceTypes: Readonly<Record<string, InstanceType>>;
  settings: SchedulerSettings;
  maxInstances: number;
  runnerCommand: string;
  /** Run images with docker on the instances. */
  docker: boolean;
  logger: Logger;
  clock?: Clock;
}

/** How long a kill of a cancelled container is given before it is sent again (KILL from the second time on). */
const killRetryMs = 30_000;
/** Failed starts of one container (each one answered by the runner or refused before it ran) before it is failed. */
export const maxStartFailures = 3;

/** A start whose answer never came: it may or may not have happened; the runner's next list decides. */
interface UncertainStart {
  instanceId: string;
  instanceType: string;
  since: number;
}

export class Dispatcher {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly actor: Actor<SchedulerMachine>;
  /** Containers this process is starting: uuid → instance type. */
  private readonly starting = new Map<string, string>();
  /** Containers whose result is being collected. */
  private readonly finalizing = new Set<string>();
  /** Cancelled containers a kill was sent for: uuid → when, and how many times. */
  private readonly killed = new Map<string, { at: number; times: number }>();
  /** Starts that failed, per container, in this process. */
  private readonly startFailures = new Map<string, number>();
  private readonly uncertainStarts = new Map<string, UncertainStart>();
  private readonly startedAt: number;
  private unsubscribers: Array<() => void> = [];

  constructor(private readonly options: DispatcherOptions) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger;
    this.startedAt = this.clock.now();
    this.actor = createActor(
      schedulerMachine.provide({
        delays: { pollInterval: options.settings.pollInterval },
        actors: { runPass: fromPromise<void>(() => this.runPass()) },
        actions: {
          passFailed: (_, { error }) => this.logger.error({ error: error instanceof Error ? error.message : String(error) }, 'scheduling pass failed'),
        },
      }),
      { clock: this.clock },
    );
  }

  start(): void {
    this.unsubscribers = [
      this.options.pool.subscribe(() => this.actor.send({ type: 'POOL_CHANGED' })),
      this.options.queue.subscribe(() => this.actor.send({ type: 'QUEUE_CHANGED' })),
    ];
    this.actor.start();
  }

  stop(): void {
    for (const unsubscribe of this.unsubscribers) unsubscribe();
    this.actor.send({ type: 'STOP_REQUESTED' });
    this.actor.stop();
  }

  /** Passes run so far (for tests and metrics). */
  get passes(): number {
    return this.actor.getSnapshot().context.passes;
  }

  /**
   * The pool's start actor: runs the runner's `start` on the instance, then marks the container
   * running. A start that fails puts the container back in the queue untouched.
   */
  async startOn(input: StartContainerInput, executor: Executor): Promise<void> {
    const { queue } = this.options;
    const uuid = input.containerUuid;
    const instanceId = input.instance.id;
    const instanceType = this.starting.get(uuid) ?? '';
    try {
      const container = queue.get(uuid);
      if (container?.state !== 'locked') throw new Error(`container ${uuid} is no longer locked (${container?.state ?? 'gone'})`);
      let command: string;
      try {
        command = startCommand(this.options.runnerCommand, {
          uuid,
          command: container.command,
          env: container.env,
          image: container.image,
          docker: this.options.docker,
        });
      } catch (error) {
        // No retry can fix a container the runner cannot be asked to start.
        queue.fail(uuid, `cannot be started: ${errorMessage(error)}`);
        throw error;
      }
      let result;
      try {
        result = await executor.run(command);
      } catch (error) {
        // The command may have run and only its answer been lost: starting it again elsewhere
        // could run it twice. It stays locked to this instance until the runner's list decides.
        this.uncertainStarts.set(uuid, { instanceId, instanceType, since: this.clock.now() });
        this.logger.warn({ containerUuid: uuid, instanceId, error: errorMessage(error) }, 'no answer to a container start; the next runner list will tell');
        return;
      }
      // 3: the runner already has it, from a start whose answer was lost. It is running there.
      if (result.exitCode !== 0 && result.exitCode !== 3) {
        throw new Error(`runner start exited with ${result.exitCode}: ${result.stderr.trim()}`);
      }
      this.startFailures.delete(uuid);
      if (queue.get(uuid)?.state !== 'locked') {
        // Cancelled while starting: it runs on the instance now, so the worker stays busy and
        // the next pass kills it.
        return;
      }
      queue.markRunning(uuid, instanceId, instanceType);
      this.logger.info({ containerUuid: uuid, instanceId, instanceType }, 'container started');
    } catch (error) {
      this.startFailed(uuid, instanceId, error);
      throw error;
    } finally {
      this.starting.delete(uuid);
    }
  }

  private startFailed(uuid: string, instanceId: string, error: unknown): void {
    const { queue } = this.options;
    if (queue.get(uuid)?.state !== 'locked') return;
    const failures = (this.startFailures.get(uuid) ?? 0) + 1;
    this.startFailures.set(uuid, failures);
    const reason = `start on ${instanceId} failed: ${errorMessage(error)}`;
    this.logger.warn({ containerUuid: uuid, instanceId, failures }, reason);
    if (failures >= maxStartFailures) {
      this.startFailures.delete(uuid);
      queue.fail(uuid, `${reason} (${failures} failed starts)`);
    } else {
      queue.unlock(uuid, reason);
    }
  }

  private async runPass(): Promise<void> {
    await this.reconcile();
    const { queue, pool, instanceTypes, settings, maxInstances } = this.options;
    const countByState = pool.countByState();
    const unallocated = pool.unallocated();
    const booting: Record<string, number> = {};
    for (const view of pool.instances()) {
      if (view.state === 'booting' && view.idleBehavior === 'run') booting[view.instanceType] = (booting[view.instanceType] ?? 0) + 1;
    }
    const result = plan(
      queue.pending(),
      instanceTypes,
      {
        idle: pool.idleCounts(),
        unallocated,
        booting,
        instances: Object.values(countByState).reduce((sum, n) => sum + n, 0),
        hourlySpend: pool.hourlySpend(),
        atQuota: pool.status().atQuota,
        createRefusal: (name) => pool.createRefusal(name),
      },
      { maxInstances, maxConcurrentContainers: settings.maxConcurrentContainers, maxHourlySpend: settings.maxHourlySpend },
    );
    this.execute(result);
  }

  private execute(result: Plan): void {
    const { queue, pool } = this.options;
    let createsRefused = false;
    for (const decision of result.decisions) {
      switch (decision.kind) {
        case 'fail':
          this.logger.warn({ containerUuid: decision.uuid, reason: decision.reason }, 'container cannot run');
          ignoreStateError(() => queue.fail(decision.uuid, decision.reason));
          break;
        case 'start':
          if (!queue.lock(decision.uuid)) break;
          this.starting.set(decision.uuid, decision.instanceType);
          if (!pool.startContainer(decision.instanceType, decision.uuid)) {
            this.starting.delete(decision.uuid);
            queue.unlock(decision.uuid, 'no idle worker took it');
          }
          break;
        case 'create':
          // Once the pool refuses, lower-priority work must not get an instance first.
          if (createsRefused) break;
          if (pool.create(decision.instanceType)) {
            this.logger.info({ instanceType: decision.instanceType, forContainer: decision.forUuid }, 'instance create requested');
          } else {
            createsRefused = true;
          }
          break;
      }
    }
    for (const shutdown of result.shutdowns) pool.shutdown({ instanceType: shutdown.instanceType, states: [shutdown.state] });
  }

  /** Brings the queue in line with what the pool and the runners report. */
  private async reconcile(): Promise<void> {
    const { queue, pool } = this.options;
    const loaded = pool.status().loaded;
    const finishing: Array<Promise<void>> = [];
    const views = pool.instances();

    for (const container of queue.list({ states: ['locked', 'running'] })) {
      const uuid = container.uuid;
      if (container.state === 'locked') {
        const uncertain = this.uncertainStarts.get(uuid);
        if (uncertain) this.resolveUncertainStart(container, uncertain);
        else if (!this.starting.has(uuid)) this.resolveStaleLock(container, views);
        continue;
      }
      const instanceId = container.instanceId;
      if (!instanceId || this.finalizing.has(uuid) || !loaded) continue;
      if (pool.isGone(instanceId)) {
        this.lost(container, `instance ${instanceId} disappeared`);
        continue;
      }
      const report = pool.runnerReport(instanceId);
      if (!report) continue;
      const exitCode = report.exited.get(uuid);
      if (exitCode !== undefined) {
        finishing.push(this.finish(container, instanceId, exitCode));
      } else if (!report.running.has(uuid) && report.listedAt > (container.startedAt ?? 0)) {
        this.lost(container, `the runner on ${instanceId} has no record of it`);
      }
    }

    // Whatever a runner still holds for a container the queue has finished with: kill it if it
    // runs (it was cancelled), else clear it away.
    for (const view of views) {
      if (!view.instanceId) continue;
      const report = pool.runnerReport(view.instanceId);
      if (!report) continue;
      for (const uuid of [...report.running, ...report.exited.keys()]) {
        const container = queue.get(uuid);
        if (container?.state === 'queued' && report.running.has(uuid) && queue.lock(uuid)) {
          // The queue gave it up (its instance looked lost) but it runs here: adopt it rather
          // than start a second copy.
          queue.markRunning(uuid, view.instanceId, view.instanceType);
          this.logger.warn({ containerUuid: uuid, instanceId: view.instanceId }, 'adopted a requeued container found running');
          continue;
        }
        if (container && (container.state === 'running' || container.state === 'locked' || container.state === 'queued')) continue;
        if (report.running.has(uuid)) finishing.push(this.killCancelled(uuid, view.instanceId));
        else finishing.push(this.removeFromRunner(uuid, view.instanceId));
      }
    }
    await Promise.all(finishing);
  }

  /**
   * A lock left by an earlier process (it stopped between locking and confirming a start). If a
   * runner shows the container, it started: adopt it. Once every instance has reported since this
   * process began and none shows it, it never started: put it back in the queue.
   */
  private resolveStaleLock(container: Container, views: ReturnType<Pool['instances']>): void {
    const { queue, pool } = this.options;
    let everyoneReported = pool.status().loaded;
    for (const view of views) {
      if (!view.instanceId) continue;
      const report = pool.runnerReport(view.instanceId);
      if (report && (report.running.has(container.uuid) || report.exited.has(container.uuid))) {
        queue.markRunning(container.uuid, view.instanceId, view.instanceType);
        this.logger.info({ containerUuid: container.uuid, instanceId: view.instanceId }, 'adopted a container started before a restart');
        return;
      }
      // Instances this process created cannot hold a start from before it.
      if (view.createdByPool || view.state === 'shutdown') continue;
      if (!report || report.listedAt < this.startedAt) everyoneReported = false;
    }
    if (everyoneReported) queue.unlock(container.uuid, 'its start was not confirmed before the dispatcher restarted');
  }

  private resolveUncertainStart(container: Container, start: UncertainStart): void {
    const { queue, pool } = this.options;
    const report = pool.runnerReport(start.instanceId);
    if (pool.hasInstance(start.instanceId) && (!report || report.listedAt <= start.since)) return;
    this.uncertainStarts.delete(container.uuid);
    if (report && (report.running.has(container.uuid) || report.exited.has(container.uuid))) {
      queue.markRunning(container.uuid, start.instanceId, start.instanceType);
      this.logger.info({ containerUuid: container.uuid, instanceId: start.instanceId }, 'container start confirmed by the runner');
    } else {
      this.startFailed(container.uuid, start.instanceId, new Error('the runner has no record of it'));
    }
  }

  private lost(container: Container, reason: string): void {
    const state = this.options.queue.requeueOrFail(container.uuid, reason);
    this.logger.warn({ containerUuid: container.uuid, instanceId: container.instanceId, reason, state }, 'container lost');
  }

  private async finish(container: Container, instanceId: string, exitCode: number): Promise<void> {
    const { queue, pool, runnerCommand } = this.options;
    this.finalizing.add(container.uuid);
    try {
      let logTail = '';
      try {
        const logs = await pool.runOn(instanceId, logsCommand(runnerCommand, container.uuid));
        if (logs.exitCode === 0) logTail = logs.stdout;
      } catch (error) {
        this.logger.warn({ containerUuid: container.uuid, instanceId, error: String(error) }, 'could not read container logs');
      }
      ignoreStateError(() => queue.complete(container.uuid, exitCode, logTail));
      this.logger.info({ containerUuid: container.uuid, instanceId, exitCode }, 'container finished');
      await this.removeFromRunner(container.uuid, instanceId);
    } finally {
      this.finalizing.delete(container.uuid);
    }
  }

  private async killCancelled(uuid: string, instanceId: string): Promise<void> {
    const now = this.clock.now();
    const last = this.killed.get(uuid);
    if (last !== undefined && now - last.at < killRetryMs) return;
    // A container that ignores TERM for killRetryMs gets KILL.
    const signal = last === undefined ? 'TERM' : 'KILL';
    this.killed.set(uuid, { at: now, times: (last?.times ?? 0) + 1 });
    this.logger.info({ containerUuid: uuid, instanceId, signal }, 'killing cancelled container');
    try {
      await this.options.pool.runOn(instanceId, killCommand(this.options.runnerCommand, signal, uuid));
    } catch (error) {
      this.logger.warn({ containerUuid: uuid, instanceId, error: String(error) }, 'kill failed; will retry');
    }
  }

  private async removeFromRunner(uuid: string, instanceId: string): Promise<void> {
    this.killed.delete(uuid);
    try {
      await this.options.pool.runOn(instanceId, removeCommand(this.options.runnerCommand, uuid));
    } catch (error) {
      this.logger.debug({ containerUuid: uuid, instanceId, error: String(error) }, 'runner cleanup failed; will retry');
    }
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// The queue refuses a change a concurrent one made moot (a cancel won the race); that is fine here.
function ignoreStateError(change: () => void): void {
  try {
    change();
  } catch (error) {
    if (!(error instanceof ContainerStateError)) throw error;
  }
}
