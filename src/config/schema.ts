// The shape of a Drover config file, its defaults, and the typed Config the rest of Drover reads.

import { z } from 'zod';
import type { InstanceType } from '../cloud/driver.js';
import { ec2SettingsSchema, type Ec2Settings } from '../cloud/ec2/settings.js';
import { gceSettingsSchema, type GceSettings } from '../cloud/gce/settings.js';
import { defaultStubFaults, type StubFaults } from '../cloud/stub/faults.js';
import { logTailBytes, maxLogTailBytes, minLogTailBytes } from '../queue/types.js';
import { defaultMaxInstanceLifetime, defaultTimeoutTERM } from '../../machines/instance.js';
import { durationHint, formatDuration, parseDuration } from './duration.js';

export const cloudDriverNames = ['stub', 'loopback', 'ec2', 'gce'] as const;
export type CloudDriverName = (typeof cloudDriverNames)[number];

export const idleBehaviors = ['run', 'hold', 'drain'] as const;
export type IdleBehavior = (typeof idleBehaviors)[number];

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof logLevels)[number];

/** `pretty`: one readable line per entry; `json`: pino's JSON lines; `auto`: pretty on a terminal, else JSON. */
export const logFormats = ['auto', 'pretty', 'json'] as const;
export type LogFormat = (typeof logFormats)[number];

/** Instances the simulated cloud already holds when the stub starts, as if left by an earlier run. */
export interface SeedInstance {
  /** A key of `instanceTypes`. */
  instanceType: string;
  count: number;
  idleBehavior: IdleBehavior;
}

export type StubSettings = StubFaults & { seedInstances: SeedInstance[] };

export interface CloudSettings {
  driver: CloudDriverName;
  maxCloudOpsPerSecond: number;
  /** Always filled in, whatever the driver, so the stub can be switched on without other edits. */
  stub: StubSettings;
  loopback: LoopbackSettings;
  /** Required when driver is ec2; null otherwise. */
  ec2: Ec2Settings | null;
  /** Required when driver is gce; null otherwise. */
  gce: GceSettings | null;
}

/** The `pool` section; every duration is in ms. */
export interface PoolSettings {
  syncInterval: number;
  probeInterval: number;
  /**
   * The base probe rate, probes per second: a probe round is handed out at least this fast. A
   * round with more instances than this reaches in one probeInterval goes faster, up to
   * probeRateCeiling, so every instance is probed once per probeInterval.
   */
  maxProbesPerSecond: number;
  /**
   * The highest probe rate, probes per second, however large the pool; at least maxProbesPerSecond.
   * A pool larger than probeRateCeiling × probeInterval takes more than one interval to go round.
   */
  probeRateCeiling: number;
  timeoutIdle: number;
  timeoutBooting: number;
  timeoutProbe: number;
  timeoutShutdown: number;
  /**
   * Age at which an instance is drained, counted from its create (or, for one found at start-up,
   * from the first listing that showed it); null: no limit. The config always fills it in
   * (default 96h); absent, the pool uses that default too.
   */
  maxInstanceLifetime?: number | null;
  /** How long containers may still run on an instance drained at maxInstanceLifetime before it is shut down anyway (default 2m). */
  timeoutTERM?: number;
  maxInstances: number;
  maxConcurrentInstanceCreateOps: number;
  /** Containers one instance may run at once, as its vCPUs, RAM, scratch and GPUs allow (1: no packing). */
  maxRunningContainersPerInstance: number;
  quotaErrorTTL: number;
  /** Shell command that succeeds once the VM has booted. */
  bootProbeCommand: string;
  /** How the runner is invoked on a VM: a path on the instance (relative to the login directory), never resolved here. */
  runnerCommand: string;
  /**
   * Bytes of a finished container's output (its end) that are read from the runner and stored;
   * a stored tail of longer output starts with a line saying how much was dropped. The config
   * always fills it in (default 65536); absent, the pool uses that default too.
   */
  logTailBytes?: number;
}

export interface SshSettings {
  username: string;
  privateKeyFile: string | null;
  hostKeysFile: string | null;
}

export interface LogSettings {
  level: LogLevel;
  format: LogFormat;
}

/** The `scheduler` section; durations in ms. null limits mean "no limit". */
export interface SchedulerSettings {
  pollInterval: number;
  maxConcurrentContainers: number | null;
  maxHourlySpend: number | null;
  /** Starts of one container (including lost ones) before it is failed. */
  maxAttempts: number;
  /** Starts one scheduling pass hands out; the rest keep their worker and start in the next pass, passGap later. */
  maxStartsPerPass: number;
  /**
   * A container whose cheapest type is out of capacity may run on a dearer type that fits, up to
   * this factor × the cheapest type's price (1: never). Optional for settings built in code; the
   * config always sets it (default 1.5, as Arvados' MaximumPriceFactor).
   */
  maxPriceFactor?: number;
  /**
   * After its preemptible type has been refused for capacity this long, a container may run on
   * on-demand types. Optional for settings built in code (then never); the config sets it (10 min).
   */
  preemptibleFallbackAfter?: number;
}

// The state paths below (queue.path, http.tokenFile, cloud.loopback.directory) may be written
// relative in a file; loadConfig and parseConfig make them absolute against the state directory
// (DROVER_HOME, default ~/.drover), so a Config holds them absolute.

export interface QueueSettings {
  /** SQLite file of the queue. */
  path: string;
}

export interface HttpSettings {
  address: string;
  port: number;
  /** Where the daemon writes the admin token (mode 0600) on first start and reads it after. */
  tokenFile: string;
}

/** The loopback driver: instances are sandbox directories on this machine. */
export interface LoopbackSettings {
  /** Directory that holds the sandboxes, their SSH keys and the driver's state. */
  directory: string;
}

export interface RunnerSettings {
  /** Run containers' images with docker; otherwise run their command as a plain process. */
  docker: boolean;
}

export interface Config {
  /** Tag value that marks this pool's instances, so two pools can share an account. */
  poolName: string;
  cloud: CloudSettings;
  pool: PoolSettings;
  scheduler: SchedulerSettings;
  queue: QueueSettings;
  http: HttpSettings;
  runner: RunnerSettings;
  ssh: SshSettings;
  log: LogSettings;
  /** Keyed by Drover's name for the type; each value's `name` equals its key. */
  instanceTypes: Record<string, InstanceType>;
}

// Returning undefined for a missing value leaves the wording ("required") to the caller's error map.
const duration = z
  .string({ error: (issue) => (issue.input === undefined ? undefined : `${durationHint}, got ${JSON.stringify(issue.input)}`) })
  .transform((text, ctx) => {
    try {
      return parseDuration(text);
    } catch (err) {
      ctx.issues.push({ code: 'custom', message: (err as Error).message, input: text });
      return z.NEVER;
    }
  });

// An interval of 0 would make a loop spin, so the loops' intervals must be longer.
const interval = duration.refine((ms) => ms > 0, 'must be longer than 0s');

const fraction = z.number().min(0).max(1);
const count = (min: number) => z.number().int().min(min);
const nonEmpty = z.string().min(1);

const seedInstanceSchema = z.strictObject({
  instanceType: nonEmpty,
  count: count(1).default(1),
  idleBehavior: z.enum(idleBehaviors).default('run'),
});

const d = defaultStubFaults;

// An omitted section, or one left empty in YAML (which reads as null), is parsed as {} rather than
// replaced by a default value, so every key's own default and every required key still apply.
function section<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => value ?? {}, schema);
}

const stubSchema = z
  .strictObject({
    createErrorRate: fraction.default(d.createErrorRate),
    destroyErrorRate: fraction.default(d.destroyErrorRate),
    minCreateInterval: duration.default(d.minCreateIntervalMs),
    minListInterval: duration.default(d.minListIntervalMs),
    quotaMaxInstances: count(0).nullable().default(d.quotaMaxInstances),
    capacityErrorTypes: z.array(nonEmpty).default(() => [...d.capacityErrorTypes]),
    bootDelay: z
      .strictObject({ min: duration, max: duration })
      .superRefine((delay, ctx) => {
        if (delay.min > delay.max) {
          ctx.issues.push({
            code: 'custom',
            message: `min (${formatDuration(delay.min)}) must not be greater than max (${formatDuration(delay.max)})`,
            input: delay,
          });
        }
      })
      .default(() => ({ ...d.bootDelayMs })),
    neverBootFraction: fraction.default(d.neverBootFraction),
    vanishFraction: fraction.default(d.vanishFraction),
    vanishAfter: duration.default(d.vanishAfterMs),
    listFailureRate: fraction.default(d.listFailureRate),
    failListings: z.boolean().default(d.failListings),
    startExitCode: z.number().int().nullable().default(d.startExitCode),
    listOmitRate: fraction.default(d.listOmitRate),
    sshDropRate: fraction.default(d.sshDropRate),
    containerRun: duration.default(d.containerRunMs),
    seed: z.number().int().default(d.seed),
    seedInstances: z.array(seedInstanceSchema).default(() => []),
  })
  .transform(
    (s): StubSettings => ({
      createErrorRate: s.createErrorRate,
      destroyErrorRate: s.destroyErrorRate,
      minCreateIntervalMs: s.minCreateInterval,
      minListIntervalMs: s.minListInterval,
      quotaMaxInstances: s.quotaMaxInstances,
      capacityErrorTypes: s.capacityErrorTypes,
      bootDelayMs: s.bootDelay,
      neverBootFraction: s.neverBootFraction,
      vanishFraction: s.vanishFraction,
      vanishAfterMs: s.vanishAfter,
      listFailureRate: s.listFailureRate,
      failListings: s.failListings,
      startExitCode: s.startExitCode,
      listOmitRate: s.listOmitRate,
      sshDropRate: s.sshDropRate,
      containerRunMs: s.containerRun,
      seed: s.seed,
      seedInstances: s.seedInstances,
    }),
  );

/** Keys of a driver's `launch` map that name no instance type, for the config check to report under cloud.<driver>.launch.<key>. */
export function unknownLaunchTypes(launch: Readonly<Record<string, unknown>>, instanceTypeNames: Iterable<string>): string[] {
  const known = new Set(instanceTypeNames);
  return Object.keys(launch).filter((name) => !known.has(name));
}

// An omitted `cloud` reports `cloud.driver: required`, which names what to add.
const cloudSchema = z.strictObject({
  driver: z.enum(cloudDriverNames),
  maxCloudOpsPerSecond: z.number().positive().default(10),
  stub: section(stubSchema),
  loopback: section(z.strictObject({ directory: nonEmpty.default('loopback') })),
  ec2: ec2SettingsSchema.nullable().default(null),
  gce: gceSettingsSchema.nullable().default(null),
}).superRefine((cloud, ctx) => {
  for (const driver of ['ec2', 'gce'] as const) {
    if (cloud.driver === driver && cloud[driver] === null) {
      ctx.issues.push({ code: 'custom', path: [driver], message: `required when cloud.driver is ${driver} (see config/${driver}.yml)`, input: null });
    }
  }
});

const schedulerSchema = z.strictObject({
  pollInterval: interval.default(10_000),
  maxConcurrentContainers: count(1).nullable().default(null),
  maxHourlySpend: z.number().positive().nullable().default(null),
  maxAttempts: count(1).default(3),
  maxStartsPerPass: count(1).default(500),
  maxPriceFactor: z.number().min(1, 'must be at least 1 (1: only the cheapest type that fits)').default(1.5),
  preemptibleFallbackAfter: duration.default(10 * 60_000),
});

const queueSchema = z.strictObject({ path: nonEmpty.default('queue.sqlite') });

const httpSchema = z.strictObject({
  address: nonEmpty.default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(8420),
  tokenFile: nonEmpty.default('token'),
});

const runnerSchema = z.strictObject({ docker: z.boolean().default(false) });

// setTimeout fires at once when asked to wait more than 2^31 - 1 ms (24.8 days): the long pool
// timeouts are held to a round bound under that.
const maxTimerMs = 596 * 3_600_000;
const timerLength = (ms: number) => ms <= maxTimerMs;
const tooLong = `must be at most ${formatDuration(maxTimerMs)}, the longest timer Drover can set`;

const poolSchema = z
  .strictObject({
    syncInterval: interval.default(60_000),
    probeInterval: interval.default(10_000),
    maxProbesPerSecond: z.number().positive().default(10),
    probeRateCeiling: z.number().positive().default(500),
    timeoutIdle: duration.default(60_000),
    timeoutBooting: duration.default(600_000),
    timeoutProbe: duration.default(600_000),
    timeoutShutdown: duration.default(10_000),
    maxInstanceLifetime: interval.refine(timerLength, `${tooLong} (null: no limit)`).nullable().default(defaultMaxInstanceLifetime),
    timeoutTERM: duration.refine(timerLength, tooLong).default(defaultTimeoutTERM),
    maxInstances: count(0).default(64),
    maxConcurrentInstanceCreateOps: count(1).default(1),
    maxRunningContainersPerInstance: count(1).default(1),
    quotaErrorTTL: duration.default(60_000),
    bootProbeCommand: nonEmpty.default('true'),
    runnerCommand: nonEmpty.default('drover-runner'),
    logTailBytes: count(minLogTailBytes).max(maxLogTailBytes).default(logTailBytes),
  })
  .superRefine(
    (pool, ctx) => {
      // Runs even when other keys failed (see `when`), so read the two rates as unknown; a rate
      // that is itself invalid already has its own message.
      const { maxProbesPerSecond: base, probeRateCeiling: ceiling }: Record<string, unknown> = pool;
      if (typeof base !== 'number' || typeof ceiling !== 'number' || !(base > 0) || !(ceiling > 0)) return;
      if (ceiling < base) {
        ctx.issues.push({
          code: 'custom',
          path: ['probeRateCeiling'],
          message: `must be at least maxProbesPerSecond (${base}), got ${ceiling}`,
          input: ceiling,
        });
      }
    },
    // Reported together with any other problem of the section, like every other check.
    { when: () => true },
  );

const sshSchema = z.strictObject({
  username: nonEmpty.default('root'),
  privateKeyFile: nonEmpty.nullable().default(null),
  hostKeysFile: nonEmpty.nullable().default(null),
});

const logSchema = z.strictObject({ level: z.enum(logLevels).default('info'), format: z.enum(logFormats).default('auto') });

const instanceTypeSchema = z.strictObject({
  providerType: nonEmpty,
  vcpus: count(1),
  ramMiB: count(1),
  scratchGiB: count(0).default(0),
  gpus: count(0).default(0),
  price: z.number().min(0),
  preemptible: z.boolean().default(false),
});

const instanceTypesSchema = z
  .record(nonEmpty, instanceTypeSchema)
  .refine((types) => Object.keys(types).length > 0, 'at least one instance type is required')
  .transform(
    (types): Record<string, InstanceType> =>
      Object.fromEntries(Object.entries(types).map(([name, type]) => [name, { name, ...type }])),
  );

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export const configSchema: z.ZodType<Config> = z
  .strictObject({
    poolName: z
      .string()
      .regex(/^[a-z0-9-]{1,63}$/, 'expected 1 to 63 characters from a-z, 0-9 and -')
      .default('drover'),
    cloud: section(cloudSchema),
    pool: section(poolSchema),
    scheduler: section(schedulerSchema),
    queue: section(queueSchema),
    http: section(httpSchema),
    runner: section(runnerSchema),
    ssh: section(sshSchema),
    log: section(logSchema),
    instanceTypes: instanceTypesSchema,
  })
  .superRefine(
    (value, ctx) => {
      // Runs even when other parts failed (see `when`), so the value may be partial: read it as unknown.
      const raw: unknown = value;
      if (!isRecord(raw) || !isRecord(raw.instanceTypes) || !isRecord(raw.cloud) || !isRecord(raw.cloud.stub)) return;
      const known = new Set(Object.keys(raw.instanceTypes));
      // With no instance types at all, that one problem is already reported and says enough.
      if (known.size === 0) return;
      const knownList = [...known].join(', ');
      const { seedInstances, capacityErrorTypes } = raw.cloud.stub;
      if (Array.isArray(seedInstances)) {
        seedInstances.forEach((seed: unknown, i) => {
          if (isRecord(seed) && typeof seed.instanceType === 'string' && !known.has(seed.instanceType)) {
            ctx.issues.push({
              code: 'custom',
              path: ['cloud', 'stub', 'seedInstances', i, 'instanceType'],
              message: `unknown instance type ${JSON.stringify(seed.instanceType)}; instanceTypes has ${knownList}`,
              input: seed.instanceType,
            });
          }
        });
      }
      for (const driver of ['ec2', 'gce'] as const) {
        const settings = raw.cloud[driver];
        if (!isRecord(settings) || !isRecord(settings.launch)) continue;
        for (const name of unknownLaunchTypes(settings.launch, known)) {
          ctx.issues.push({
            code: 'custom',
            path: ['cloud', driver, 'launch', name],
            message: `unknown instance type ${JSON.stringify(name)}; instanceTypes has ${knownList}`,
            input: name,
          });
        }
      }
      if (Array.isArray(capacityErrorTypes)) {
        capacityErrorTypes.forEach((name: unknown, i) => {
          if (typeof name === 'string' && name !== '*' && !known.has(name)) {
            ctx.issues.push({
              code: 'custom',
              path: ['cloud', 'stub', 'capacityErrorTypes', i],
              message: `unknown instance type ${JSON.stringify(name)}; expected '*' or one of ${knownList}`,
              input: name,
            });
          }
        });
      }
    },
    // By default zod skips this check once any other field has failed; running it anyway lets one
    // pass over the file report every problem.
    { when: () => true },
  );
