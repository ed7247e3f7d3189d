// The whole dispatcher on the stub cloud and a real SQLite queue file, on vitest's fake timers:
// queue → scheduler → pool → stub VMs → runner list → queue.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { systemClock } from '../../src/clock.js';
import type { InstanceType } from '../../src/cloud/driver.js';
import type { StubCloud } from '../../src/cloud/stub/stub-cloud.js';
import type { LaunchConfigSettings } from '../../src/config/launch-configs.js';
import type { PoolSettings, SchedulerSettings } from '../../src/config/schema.js';
import { Pool } from '../../src/pool/pool.js';
import type { PoolObserver } from '../../src/pool/pool-observer.js';
import { SqliteQueue } from '../../src/queue/sqlite-queue.js';
import type { Container, ContainerSpec } from '../../src/queue/types.js';
import { Dispatcher, type DispatcherObserver } from '../../src/scheduler/dispatcher.js';
import type { Executor } from '../../src/ssh/executor.js';
import { advance, instanceTypes, poolName, poolSettings } from './pool-harness.js';

export function queuePath(): string {
  return join(mkdtempSync(join(tmpdir(), 'drover-dispatch-')), 'queue.sqlite');
}

export function spec(overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    image: null,
    command: ['true'],
    env: {},
    constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
    ...overrides,
  };
}

export interface DispatchOptions {
  pool?: Partial<PoolSettings>;
  scheduler?: Partial<SchedulerSettings>;
  queuePath?: string;
  docker?: boolean;
  /** Instance types of the pool and the scheduler; default the shared small/large fixture. */
  instanceTypes?: Record<string, InstanceType>;
  /** Launch configs of the pool; default one per type with the driver's own settings. */
  launchConfigs?: LaunchConfigSettings[];
  /** Wraps the stub executor of each instance (under the start counting), e.g. to make one hang. */
  wrapExecutor?: (executor: Executor, instanceId: string) => Executor;
  /** Told what the pool and the dispatcher measure (the daemon's metrics); default nobody. */
  observer?: PoolObserver & DispatcherObserver;
}

/** How runner `start` commands misbehave: refused by the runner, or run with the answer lost. */
export type StartFault = 'refused' | 'answer lost' | null;

export class DispatchHarness {
  readonly queue: SqliteQueue;
  readonly pool: Pool;
  readonly dispatcher: Dispatcher;
  /** Successful runner `start` commands per container uuid, across every VM. */
  readonly starts = new Map<string, number>();
  startFault: StartFault = null;
  /** Instances whose runner refuses every start, and how many it refused on each. */
  readonly brokenInstances = new Set<string>();
  readonly refusedStarts = new Map<string, number>();
  /** Called when a start's answer is dropped, before the dispatcher hears of it. */
  onAnswerLost: (() => void) | null = null;

  constructor(
    readonly stub: StubCloud,
    options: DispatchOptions = {},
  ) {
    const logger = pino({ level: 'silent' });
    const settings = poolSettings({ probeInterval: 1_000, syncInterval: 10_000, ...options.pool });
    const schedulerSettings: SchedulerSettings = {
      pollInterval: 1_000,
      maxConcurrentContainers: null,
      maxHourlySpend: null,
      maxAttempts: 3,
      maxStartsPerPass: 500,
      ...options.scheduler,
    };
    this.queue = new SqliteQueue({ path: options.queuePath ?? queuePath(), maxAttempts: schedulerSettings.maxAttempts, clock: systemClock });
    this.pool = new Pool({
      poolName,
      driver: stub,
      executorFor: (target) => {
        const executor = stub.executorFor(target);
        return this.counting(options.wrapExecutor ? options.wrapExecutor(executor, target.id) : executor, target.id);
      },
      settings,
      instanceTypes: options.instanceTypes ?? instanceTypes,
      logger,
      clock: systemClock,
      records: this.queue,
      docker: options.docker ?? false,
      ...(options.launchConfigs && { launchConfigs: options.launchConfigs }),
      launchConfigStore: this.queue,
      ...(options.observer && { observer: options.observer }),
    });
    const dispatcher = new Dispatcher({
      queue: this.queue,
      pool: this.pool,
      instanceTypes: options.instanceTypes ?? instanceTypes,
      settings: schedulerSettings,
      maxInstances: settings.maxInstances,
      logger,
      clock: systemClock,
      ...(options.observer && { observer: options.observer }),
    });
    this.dispatcher = dispatcher;
  }

  start(): void {
    this.pool.start();
    this.dispatcher.start();
  }

  stop(): void {
    this.dispatcher.stop();
    this.pool.stop();
    this.queue.close();
  }

  containers(): Container[] {
    return this.queue.list();
  }

  count(state: Container['state']): number {
    return this.queue.list({ states: [state] }).length;
  }

  /** Advances fake time in steps until `done` holds or `limitMs` passes; returns whether it held. */
  async runUntil(done: () => boolean, limitMs: number, stepMs = 1_000, eachStep?: () => void): Promise<boolean> {
    for (let elapsed = 0; elapsed < limitMs; elapsed += stepMs) {
      if (done()) return true;
      await advance(stepMs);
      eachStep?.();
    }
    return done();
  }

  private counting(executor: Executor, instanceId: string): Executor {
    return {
      run: async (command, options) => {
        const match = / start '?([A-Za-z0-9._-]+)'?/.exec(command);
        if (match && (this.startFault === 'refused' || this.brokenInstances.has(instanceId))) {
          this.refusedStarts.set(instanceId, (this.refusedStarts.get(instanceId) ?? 0) + 1);
          return { stdout: '', stderr: 'runner: cannot start', exitCode: 1 };
        }
        const result = await executor.run(command, options);
        if (match?.[1] && result.exitCode === 0) this.starts.set(match[1], (this.starts.get(match[1]) ?? 0) + 1);
        if (match && this.startFault === 'answer lost') {
          this.onAnswerLost?.();
          throw new Error('ssh: connection dropped');
        }
        return result;
      },
      setTarget: (target) => executor.setTarget(target),
      close: () => executor.close(),
    };
  }
}
