// Carries the scheduler's passes out between the queue and the pool. A pass reads the queue's
// pending set and the pool's picture, plans, and gives commands; it never awaits SSH or a cloud
// call: starts, kills and log collection run in the pool as container-attempt actors, which
// record their outcomes in the queue and notify. The dispatcher keeps no record of its own.
import { performance } from 'node:perf_hooks';
import { createActor, fromPromise, type Actor } from 'xstate';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import type { InstanceType } from '../cloud/driver.js';
import type { SchedulerSettings } from '../config/schema.js';
import { ContainerStateError, type Container, type ContainerQueue } from '../queue/types.js';
import { schedulerMachine, type SchedulerMachine } from '../../machines/scheduler.js';
import { plan, type Plan } from './plan.js';
import type { PoolPicture, WorkerPool } from './worker-pool.js';
import { inspectOption, type ActorInspection } from '../inspect/actor-inspection.js';

/** Told how long each pass took (the daemon's metrics); the dispatcher never sees prom-client. */
export interface DispatcherObserver {
  passTook(seconds: number): void;
}

export interface DispatcherOptions {
  queue: ContainerQueue;
  pool: WorkerPool;
  instanceTypes: Readonly<Record<string, InstanceType>>;
  settings: SchedulerSettings;
  maxInstances: number;
  logger: Logger;
  clock?: Clock;
  /** The scheduling pass (default plan); the simulator swaps in a baseline such as estimatorPlan. */
  planner?: typeof plan;
  /** Default nobody. */
  observer?: DispatcherObserver;
  /** The Stately inspector's choice of actors; absent: the scheduler is created without an inspector. */
  inspection?: ActorInspection;
}

export class Dispatcher {
  private readonly logger: Logger;
  private readonly actor: Actor<SchedulerMachine>;
  private unsubscribers: Array<() => void> = [];
  private waits = new Map<string, string>();

  constructor(private readonly options: DispatcherOptions) {
    this.logger = options.logger;
    this.actor = createActor(
      schedulerMachine.provide({
        delays: { pollInterval: options.settings.pollInterval },
        actors: {
          // Synchronous inside: the promise only hands the result to the machine.
          runPass: fromPromise<void>(async () => {
            this.runPass();
          }),
        },
        actions: {
          passFailed: (_, { error }) => this.logger.error({ error: error instanceof Error ? error.message : String(error) }, 'scheduling pass failed'),
        },
      }),
      { clock: options.clock ?? systemClock, ...inspectOption(options.inspection?.observerFor({ kind: 'scheduler' })) },
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

  /**
   * Why a queued container waits, as the last pass saw it; null for one that pass did not see
   * (submitted since) or started.
   */
  waitReason(uuid: string): string | null {
    return this.waits.get(uuid) ?? null;
  }

  /** Passes run so far (for tests and metrics). */
  get passes(): number {
    return this.actor.getSnapshot().context.passes;
  }

  /** One pass: reconcile, plan, act. Exposed for benchmarks; the scheduler machine calls it. */
  runPass(): Plan {
    // Wall time, not the injected clock: a pass awaits nothing, so this is the CPU it held the
    // event loop for, which a simulated clock would always show as zero.
    const began = performance.now();
    try {
      return this.pass();
    } finally {
      this.options.observer?.passTook((performance.now() - began) / 1_000);
    }
  }

  private pass(): Plan {
    const { queue, pool, instanceTypes, settings, maxInstances } = this.options;
    let pending = queue.pending();
    if (this.reconcile(pending)) pending = queue.pending();
    const picture = pool.picture();
    const planner = this.options.planner ?? plan;
    const result = planner(pending, instanceTypes, picture, {
      maxInstances,
      maxConcurrentContainers: settings.maxConcurrentContainers,
      maxHourlySpend: settings.maxHourlySpend,
      maxContainersPerInstance: pool.maxContainersPerInstance,
      maxStartsPerPass: settings.maxStartsPerPass,
      maxPriceFactor: settings.maxPriceFactor ?? 1,
      preemptibleFallbackAfterMs: settings.preemptibleFallbackAfter ?? Infinity,
    });
    this.execute(result, picture);
    this.waits = result.waits;
    if (result.boundBy !== null || result.blockedTypes.length > 0 || result.deferredStarts > 0) {
      const { boundBy, blockedTypes, deferredStarts } = result;
      this.logger.debug({ boundBy, blockedTypes, deferredStarts }, 'scheduling pass stopped short');
    }
    return result;
  }

  private execute(result: Plan, picture: PoolPicture): void {
    const { queue, pool } = this.options;
    const starts = new Map<string, { workerId: string; instanceType: string }>();
    const instanceOf = new Map<string, string>();
    for (const worker of picture.open) instanceOf.set(worker.workerId, worker.instanceId);
    // A create refused for every type stops the rest; one refused for its type alone, that type's.
    let createsRefused = false;
    const refusedTypes = new Set<string>();
    for (const decision of result.decisions) {
      switch (decision.kind) {
        case 'fail':
          this.logger.warn({ containerUuid: decision.uuid, reason: decision.reason }, 'container cannot run');
          ignoreStateError(() => queue.fail(decision.uuid, decision.reason));
          break;
        case 'start':
          starts.set(decision.uuid, { workerId: decision.workerId, instanceType: decision.instanceType });
          break;
        case 'create':
          // Once the pool refuses, lower-priority work must not get an instance first.
          if (createsRefused || refusedTypes.has(decision.instanceType)) break;
          if (pool.create(decision.instanceType)) {
            this.logger.info({ instanceType: decision.instanceType, forContainer: decision.forUuid }, 'instance create requested');
          } else if (picture.createRefusal(decision.instanceType)?.scope === 'instanceType') {
            refusedTypes.add(decision.instanceType);
          } else {
            createsRefused = true;
          }
          break;
      }
    }
    // One transaction for the pass's locks; each records the instance its start is for, so a
    // restart knows whose runner list decides it.
    const locked = queue.lockMany(
      [...starts].map(([uuid, { workerId, instanceType }]) => ({ uuid, instanceId: instanceOf.get(workerId) ?? '', instanceType })),
    );
    for (const uuid of locked) {
      const container = queue.get(uuid);
      const where = starts.get(uuid)!;
      if (!container || !pool.startContainer(container, where.workerId)) {
        ignoreStateError(() => queue.unlock(uuid, 'the worker no longer took it'));
      }
    }
    for (const shutdown of result.shutdowns) pool.shutdownSurplus(shutdown.workerId, shutdown.state);
  }

  /**
   * What the queue holds that no attempt in the pool covers: lost with an instance the pool knows
   * is gone, else left for that instance's next runner list (the pool rebuilds it from there).
   * Cancelled containers still acted on are killed.
   */
  private reconcile(pending: readonly Readonly<Container>[]): boolean {
    const { queue, pool } = this.options;
    let changed = false;
    for (const container of pending) {
      if (container.state === 'queued') break; // pending() puts running and locked first
      if (pool.hasContainer(container.uuid)) continue;
      const instanceId = container.instanceId;
      if (instanceId !== null && !pool.isGone(instanceId)) continue;
      const reason = instanceId === null ? 'locked without an instance by an earlier dispatcher' : `instance ${instanceId} is gone`;
      changed = true;
      if (container.state === 'locked') {
        ignoreStateError(() => queue.unlock(container.uuid, reason));
      } else {
        const state = queue.requeueOrFail(container.uuid, reason);
        this.logger.warn({ containerUuid: container.uuid, instanceId, reason, state }, 'container lost');
      }
    }
    for (const uuid of pool.containers()) {
      if (queue.get(uuid)?.state === 'cancelled') pool.kill(uuid);
    }
    return changed;
  }
}

// The queue refuses a change a concurrent one made moot (a cancel won the race); that is fine here.
function ignoreStateError(change: () => void): void {
  try {
    change();
  } catch (error) {
    if (!(error instanceof ContainerStateError)) throw error;
  }
}
