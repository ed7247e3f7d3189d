// A pool over the stub cloud, on vitest's fake timers, with its log lines captured for assertions.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { vi } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { tagKeys, type InstanceType, type Tags } from '../../src/cloud/driver.js';
import type { StubFaults } from '../../src/cloud/stub/faults.js';
import { StubCloud } from '../../src/cloud/stub/stub-cloud.js';
import type { LaunchConfigSettings } from '../../src/config/launch-configs.js';
import type { PoolSettings } from '../../src/config/schema.js';
import { Pool, type PoolOptions } from '../../src/pool/pool.js';
import type { Executor, ExecutorTarget } from '../../src/ssh/executor.js';

export const poolName = 'test-pool';

export const instanceTypes: Record<string, InstanceType> = {
  small: { name: 'small', providerType: 'stub.small', vcpus: 2, ramMiB: 4096, scratchGiB: 10, gpus: 0, price: 0.05, preemptible: false },
  large: { name: 'large', providerType: 'stub.large', vcpus: 8, ramMiB: 16384, scratchGiB: 100, gpus: 0, price: 0.2, preemptible: false },
};

export function poolSettings(overrides: Partial<PoolSettings> = {}): PoolSettings {
  return {
    syncInterval: 60_000,
    probeInterval: 10_000,
    maxProbesPerSecond: 10,
    probeRateCeiling: 500,
    timeoutIdle: 60_000,
    timeoutBooting: 600_000,
    timeoutProbe: 600_000,
    timeoutShutdown: 10_000,
    maxInstances: 64,
    maxConcurrentInstanceCreateOps: 1,
    maxRunningContainersPerInstance: 1,
    quotaErrorTTL: 60_000,
    bootProbeCommand: 'true',
    runnerCommand: 'drover-runner',
    ...overrides,
  };
}

export type LogLine = Record<string, unknown> & { msg: string };

export function useFakeClock(): void {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
}

/** Runs every timer due within `ms` of fake time, letting promises settle between them. */
export async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

/** Lets pending promise chains (cloud calls, actor done events) finish without moving the clock. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await vi.advanceTimersByTimeAsync(0);
}

export function createStub(faults: Partial<StubFaults> = {}): StubCloud {
  return new StubCloud({ clock: systemClock, faults, bootProbeCommand: 'true', runnerCommand: 'drover-runner' });
}

export function poolTags(instanceType: string, extra: Tags = {}): Tags {
  return { [tagKeys.pool]: poolName, [tagKeys.instanceType]: instanceType, ...extra };
}

export class PoolHarness {
  readonly logs: LogLine[] = [];
  readonly pool: Pool;
  notifications = 0;

  constructor(
    readonly stub: StubCloud,
    settings: Partial<PoolSettings> = {},
    executorFor: (target: ExecutorTarget) => Executor = (target) => stub.executorFor(target),
    /** The pool's launch configs; default one per type with the driver's own settings. */
    launchConfigs?: LaunchConfigSettings[],
    /** Who is told of boot, probe and shutdown durations and vanished instances; default nobody. */
    observer?: PoolOptions['observer'],
  ) {
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString().split('\n')) if (line) this.logs.push(JSON.parse(line) as LogLine);
        done();
      },
    });
    this.pool = new Pool({
      poolName,
      driver: stub,
      executorFor,
      settings: poolSettings(settings),
      instanceTypes,
      logger: pino({ level: 'info' }, sink),
      clock: systemClock,
      ...(launchConfigs && { launchConfigs }),
      ...(observer && { observer }),
    });
    this.pool.subscribe(() => this.notifications++);
  }

  async start(): Promise<void> {
    this.pool.start();
    await settle();
  }

  logsWith(msg: string): LogLine[] {
    return this.logs.filter((line) => line.msg === msg);
  }
}
