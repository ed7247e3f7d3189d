// The shape of a Drover config file, its defaults, and the typed Config the rest of Drover reads.

import { z } from 'zod';
import type { InstanceType } from '../cloud/driver.js';
import { ec2ImageId, ec2LaunchOverrideSchema, ec2SubnetId, ec2SettingsSchema, type Ec2Settings } from '../cloud/ec2/settings.js';
import { gceLaunchOverrideSchema, gceSettingsSchema, gceZoneName, type GceSettings } from '../cloud/gce/settings.js';
import { defaultStubFaults, type StubFaults } from '../cloud/stub/faults.js';
import { defaultLaunchConfig, launchConfigId, type LaunchConfigSettings } from './launch-configs.js';
import { logTailBytes, maxLogTailBytes, minLogTailBytes } from '../queue/types.js';
import { defaultMaxInstanceLifetime, defaultTimeoutTERM } from '../../machines/instance.js';
import { durationHint, formatDuration, parseDuration } from './duration.js';
import { defaultIdlePolicy, idlePolicyNames, type IdlePolicyName } from '../pool/idle-policy.js';
import { actorSelectorHint, defaultActorSelectors, inspectorUrlHint, isActorSelector, isInspectorUrl } from '../inspect/settings.js';

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
  /**
   * How long an idle instance waits for work: `adaptive` (learned per type from earlier idle
   * instances; timeoutIdle until it has learned; src/pool/idle-policy.ts) or `fixed` (timeoutIdle).
   * The config always fills it in (default adaptive: it won the replays, docs/idle-policy.md);
   * absent, the pool uses that default too.
   */
  idlePolicy?: IdlePolicyName;
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
  /**
   * How often a launch config whose weight fell with recent failures is still given one create
   * while work for its type waits, so it is seen to recover. (A broken config's trials wait 1 min,
   * doubling to 30 min.) The config always fills it in (default 5m).
   */
  launchConfigRetryInterval?: number;
  /**
   * The window over which a launch config's boots and failures are counted for its effective
   * weight (weight × boot success rate). The config always fills it in (default 1h).
   */
  launchConfigHealthWindow?: number;
  /** Boot failures in a row, of one launch config, after which the breaker holds it (broken). The config always fills it in (default 3). */
  bootFailuresToBreak?: number;
  /**
   * Boot failures within one hour, across the pool, after which every create is frozen until an
   * operator resumes the pool; null: never. The config always fills it in (default null).
   */
  freezePoolAfterBootFailures?: number | null;
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

/** The `inspect` section: streaming the actors to the Stately inspector (README, "Watching the machines"). */
export interface InspectSettings {
  /** The relay's ws:// or wss:// URL; null: no inspection, and no actor pays for it. */
  url: string | null;
  /** `pool` (the pool's machines, the scheduler, container attempts), `all`, or `instance:<worker or instance id>`. */
  actors: string[];
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
  /** Serve `/metrics` without the token (a Prometheus on a trusted network); false: it needs the token like the rest. */
  publicMetrics: boolean;
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
  inspect: InspectSettings;
  /** Keyed by Drover's name for the type; each value's `name` equals its key. */
  instanceTypes: Record<string, InstanceType>;
  /**
   * Every instance type's launch configs (`instanceTypes.<name>.launchConfigs`), in file order:
   * a type that gives none has one, `defaultLaunchConfig(name)`. Ids are unique across the pool.
   */
  launchConfigs: LaunchConfigSettings[];
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
    capacityErrorZones: z.array(nonEmpty).default(() => [...d.capacityErrorZones]),
    brokenImages: z.array(nonEmpty).default(() => [...d.brokenImages]),
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
      capacityErrorZones: s.capacityErrorZones,
      brokenImages: s.brokenImages,
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
  publicMetrics: z.boolean().default(false),
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
    idlePolicy: z.enum(idlePolicyNames).default(defaultIdlePolicy),
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
    launchConfigRetryInterval: duration.refine(timerLength, tooLong).default(5 * 60_000),
    launchConfigHealthWindow: interval.refine(timerLength, tooLong).default(3_600_000),
    bootFailuresToBreak: count(1).default(3),
    freezePoolAfterBootFailures: count(1).nullable().default(null),
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

const gotText = (hint: string) => (issue: { input: unknown }) => (issue.input === undefined ? undefined : `${hint}, got ${JSON.stringify(issue.input)}`);
const inspectActor = z.string({ error: gotText(actorSelectorHint) }).refine(isActorSelector, { error: gotText(actorSelectorHint) });
const inspectSchema = z.strictObject({
  url: z.string({ error: gotText(inspectorUrlHint) }).refine(isInspectorUrl, { error: gotText(inspectorUrlHint) }).nullable().default(null),
  // One selector may be written alone, without the list.
  actors: z
    .preprocess(
      (value) => (typeof value === 'string' ? [value] : value),
      z.array(inspectActor, { error: gotText('expected pool, all, instance:<id> or a list of them') }).min(1, 'expected at least one of pool, all, instance:<id>'),
    )
    .default([...defaultActorSelectors]),
});

const launchConfigEntrySchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected 1 to 64 characters from A-Z, a-z, 0-9, ., _ and -').optional(),
  zone: nonEmpty.optional(),
  region: nonEmpty.optional(),
  subnet: nonEmpty.optional(),
  image: nonEmpty.optional(),
  weight: z.number().positive().default(1),
  maxInstances: count(1).nullable().default(null),
  state: z.enum(['active', 'paused']).default('active'),
  // Checked against the driver's own override keys by the config check below, which knows the driver.
  extra: z.preprocess((value) => value ?? {}, z.record(nonEmpty, z.unknown())),
});
type LaunchConfigEntry = z.output<typeof launchConfigEntrySchema>;

const instanceTypeSchema = z.strictObject({
  providerType: nonEmpty,
  vcpus: count(1),
  ramMiB: count(1),
  scratchGiB: count(0).default(0),
  gpus: count(0).default(0),
  price: z.number().min(0),
  preemptible: z.boolean().default(false),
  launchConfigs: z.array(launchConfigEntrySchema).nullish(),
});

/**
 * An instance type as the schema reads it: its launch configs stay with it, as written, until the
 * config is put together (Config.launchConfigs), so the config check reads them as the file has them.
 */
type InstanceTypeWithLaunchConfigs = InstanceType & { launchConfigs?: LaunchConfigEntry[] | null };

/** The type's launch configs: one per entry, or its default when the file gives none. */
function launchConfigsOf(instanceType: string, entries: readonly LaunchConfigEntry[] | null | undefined): LaunchConfigSettings[] {
  if (!entries || entries.length === 0) return [defaultLaunchConfig(instanceType)];
  return entries.map((entry) => {
    const content = {
      instanceType,
      zone: entry.zone ?? null,
      region: entry.region ?? null,
      subnet: entry.subnet ?? null,
      image: entry.image ?? null,
      extra: entry.extra,
    };
    return {
      id: entry.id ?? launchConfigId(content),
      ...content,
      weight: entry.weight,
      maxInstances: entry.maxInstances,
      initialState: entry.state,
    };
  });
}

/**
 * The id of a launch config entry that may not have parsed (the config check runs on what did
 * not, too): its own id, or the hash of its content; undefined when its content is not readable.
 */
function launchConfigIdOf(instanceType: string, entry: Record<string, unknown>): string | undefined {
  if (entry.id !== undefined) return typeof entry.id === 'string' ? entry.id : undefined;
  const content: Record<string, string | null> = {};
  for (const key of ['zone', 'region', 'subnet', 'image'] as const) {
    const value = entry[key] ?? null;
    if (value !== null && typeof value !== 'string') return undefined;
    content[key] = value;
  }
  const extra = entry.extra ?? {};
  if (!isRecord(extra)) return undefined;
  return launchConfigId({ instanceType, zone: content.zone ?? null, region: content.region ?? null, subnet: content.subnet ?? null, image: content.image ?? null, extra });
}

const instanceTypesSchema = z
  .record(nonEmpty, instanceTypeSchema)
  .refine((types) => Object.keys(types).length > 0, 'at least one instance type is required')
  .transform(
    (types): Record<string, InstanceTypeWithLaunchConfigs> =>
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
    inspect: section(inspectSchema),
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
      for (const problem of [...duplicateLaunchConfigIds(raw.instanceTypes), ...launchConfigProblems(raw.cloud, raw.instanceTypes)]) {
        ctx.issues.push({ code: 'custom', ...problem });
      }
    },
    // By default zod skips this check once any other field has failed; running it anyway lets one
    // pass over the file report every problem.
    { when: () => true },
  )
  // The launch configs leave their instance types (InstanceType has no field for them) for the
  // config's own list, in file order.
  .transform((value): Config => {
    const instanceTypes: Record<string, InstanceType> = {};
    const launchConfigs: LaunchConfigSettings[] = [];
    for (const [name, { launchConfigs: entries, ...instanceType }] of Object.entries(value.instanceTypes)) {
      instanceTypes[name] = instanceType;
      launchConfigs.push(...launchConfigsOf(name, entries));
    }
    return { ...value, instanceTypes, launchConfigs };
  });

interface LaunchConfigProblem {
  path: (string | number)[];
  message: string;
  input: unknown;
}

/** Launch config ids used twice across the pool, each reported where it is used again. */
function duplicateLaunchConfigIds(instanceTypes: Record<string, unknown>): LaunchConfigProblem[] {
  const problems: LaunchConfigProblem[] = [];
  // Where each id was first seen, to name both places of a duplicate.
  const seen = new Map<string, string>();
  for (const [typeName, type] of Object.entries(instanceTypes)) {
    if (!isRecord(type)) continue;
    const entries = type.launchConfigs ?? [];
    if (!Array.isArray(entries)) continue;
    if (entries.length === 0) {
      // A type with none has its default, which only an id written to match it can collide with.
      const id = defaultLaunchConfig(typeName).id;
      if (!seen.has(id)) seen.set(id, `instanceTypes.${typeName} (its default launch config)`);
      continue;
    }
    entries.forEach((entry: unknown, i) => {
      if (!isRecord(entry)) return;
      const id = launchConfigIdOf(typeName, entry);
      if (id === undefined) return;
      const first = seen.get(id);
      if (first === undefined) {
        seen.set(id, `instanceTypes.${typeName}.launchConfigs[${i}]`);
        return;
      }
      problems.push({
        path: ['instanceTypes', typeName, 'launchConfigs', i, 'id'],
        message:
          entry.id === undefined
            ? `duplicate launch config id ${JSON.stringify(id)}: the same content as ${first}; give each an id of its own, or change one`
            : `duplicate launch config id ${JSON.stringify(id)}, already used by ${first}; launch config ids must be unique across the pool`,
        input: id,
      });
    });
  }
  return problems;
}

/**
 * What the configured driver cannot launch among the launch configs: for ec2, a region other than
 * cloud.ec2.region, a zone outside it, an image or subnet that is no AMI or subnet id; for gce, a
 * zone that is no zone name or not in the config's region; for both, an `extra` that is not an
 * override of the driver's `launch` entries, or one that repeats a field the config sets itself.
 * The stub and loopback drivers read no launch config field, so nothing is checked for them.
 * `instanceTypes` may be only partly parsed, so everything is read as unknown.
 */
function launchConfigProblems(cloud: Record<string, unknown>, instanceTypes: Record<string, unknown>): LaunchConfigProblem[] {
  const driver = cloud.driver;
  if (driver !== 'ec2' && driver !== 'gce') return [];
  const settings = cloud[driver];
  // Missing or invalid: that is reported already, and says more than anything checked against it.
  if (!isRecord(settings)) return [];
  const problems: LaunchConfigProblem[] = [];
  for (const [typeName, type] of Object.entries(instanceTypes)) {
    if (!isRecord(type) || !Array.isArray(type.launchConfigs)) continue;
    type.launchConfigs.forEach((entry: unknown, i) => {
      if (!isRecord(entry)) return;
      const report = (key: (string | number)[], message: string, input: unknown) =>
        problems.push({ path: ['instanceTypes', typeName, 'launchConfigs', i, ...key], message, input });
      const field = (key: string): string | null => (typeof entry[key] === 'string' ? entry[key] : null);
      const check = (key: string, schema: z.ZodType) => {
        const value = field(key);
        const result = value === null ? undefined : schema.safeParse(value, { error: describeConfigIssue });
        if (result && !result.success) report([key], result.error.issues[0]?.message ?? 'invalid', value);
      };
      const extra = isRecord(entry.extra) ? entry.extra : {};
      const twice = (extraKey: string, key: string) => {
        if (extra[extraKey] !== undefined && field(key) !== null) {
          report(['extra', extraKey], `given twice: this launch config sets ${key} (${field(key)}) itself; keep one`, extra[extraKey]);
        }
      };
      const overrideSchema = driver === 'ec2' ? ec2LaunchOverrideSchema : gceLaunchOverrideSchema;
      const extraKeys = Object.keys(driver === 'ec2' ? ec2LaunchOverrideSchema.in.shape : gceLaunchOverrideSchema.shape).join(', ');
      const parsedExtra = overrideSchema.safeParse(extra, { error: describeConfigIssue });
      for (const issue of parsedExtra.error?.issues ?? []) {
        const path = ['extra', ...issue.path.filter((key): key is string | number => typeof key !== 'symbol')];
        if (issue.code === 'unrecognized_keys') {
          for (const key of issue.keys) report([...path, key], `unknown key for the ${driver} driver; extra takes ${extraKeys}`, key);
        } else {
          report(path, issue.message, undefined);
        }
      }
      const region = field('region');
      const zone = field('zone');
      if (driver === 'ec2') {
        const ec2Region = typeof settings.region === 'string' ? settings.region : null;
        if (region !== null && ec2Region !== null && region !== ec2Region) {
          report(['region'], `must be cloud.ec2.region (${ec2Region}), the one region the ec2 driver creates in; got ${JSON.stringify(region)}`, region);
        }
        if (zone !== null && ec2Region !== null && !zone.startsWith(ec2Region)) {
          report(['zone'], `expected an availability zone of cloud.ec2.region (${ec2Region}), such as ${ec2Region}a; got ${JSON.stringify(zone)}`, zone);
        }
        check('image', ec2ImageId);
        check('subnet', ec2SubnetId);
        twice('imageId', 'image');
        twice('subnetId', 'subnet');
      } else {
        check('zone', gceZoneName);
        twice('zone', 'zone');
        twice('image', 'image');
        twice('subnetwork', 'subnet');
        if (region !== null) {
          // The zone the create goes to, and where it is set.
          const typeLaunch = isRecord(settings.launch) && isRecord(settings.launch[typeName]) ? settings.launch[typeName] : {};
          const zones = Array.isArray(settings.zones) ? (settings.zones as unknown[]) : [];
          const [used, from] =
            zone !== null
              ? [zone, 'its zone']
              : typeof extra.zone === 'string'
                ? [extra.zone, 'its extra.zone']
                : typeof typeLaunch.zone === 'string'
                  ? [typeLaunch.zone, `cloud.gce.launch.${typeName}.zone`]
                  : [zones[0], 'cloud.gce.zones[0]'];
          if (typeof used === 'string' && !used.startsWith(`${region}-`)) {
            report(['region'], `the zone it creates in, ${used} (${from}), is not in region ${region}: expected a zone whose name starts with ${region}-`, region);
          }
        }
      }
    });
  }
  return problems;
}

const typeNames: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
};

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

// zod's own wording ("Invalid input: expected number, received string") speaks of JavaScript types;
// these speak of what the operator wrote. Messages set in the schema itself take precedence. The
// error map of every parse of a config (loadConfig's, and the checks here that parse a part again).
export function describeConfigIssue(issue: z.core.$ZodRawIssue): string | undefined {
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_value') && issue.input === undefined) return 'required';
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${typeNames[issue.expected] ?? issue.expected}, got ${describeValue(issue.input)}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => String(v)).join(', ')}, got ${describeValue(issue.input)}`;
    case 'too_small':
      if (issue.origin === 'array') return `must have at least ${issue.minimum} entries`;
      if (issue.origin === 'string') return 'must not be empty';
      return issue.inclusive ? `must be at least ${issue.minimum}` : `must be greater than ${issue.minimum}`;
    case 'too_big':
      return issue.inclusive ? `must be at most ${issue.maximum}` : `must be less than ${issue.maximum}`;
    default:
      return undefined;
  }
}
