// Whether a create of an instance type may go ahead as far as its launch configs and the cloud's
// capacity allow, and from which config: one launch-config actor per config, one capacity-scope
// actor per scope a capacity error named. Every answer is read from their snapshots; the counts of
// live instances per config come from the pool, which owns the workers.
import { createActor, type Actor, type SnapshotFrom } from 'xstate';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { LaunchConfig } from '../cloud/driver.js';
import { formatDuration } from '../config/duration.js';
import type { LaunchConfigAdminState, LaunchConfigSettings } from '../config/launch-configs.js';
import { inspectOption, type ActorInspection } from '../inspect/actor-inspection.js';
import { capacityScopeMachine, type CapacityScopeMachine } from '../../machines/capacity-scope.js';
import {
  effectiveWeight,
  launchConfigMachine,
  recentOutcomes,
  type LaunchConfigEvent,
  type LaunchConfigMachine,
} from '../../machines/launch-config.js';
import {
  LaunchConfigStateError,
  UnknownLaunchConfigError,
  type LaunchConfigAction,
  type LaunchConfigStateStore,
  type LaunchConfigView,
} from './launch-config-view.js';

/** Defaults of the pool settings of the same names. */
export const defaultLaunchConfigRetryIntervalMs = 5 * 60_000;
export const defaultLaunchConfigHealthWindowMs = 3_600_000;
export const defaultBootFailuresToBreak = 3;

export interface LaunchConfigsOptions {
  /** The configs in the file; a type with none is given none here and cannot be created. */
  configs: readonly LaunchConfigSettings[];
  /** Operators' pauses and archives from before a restart; written on every change. */
  store?: LaunchConfigStateStore;
  clock: Clock;
  logger: Logger;
  /** A config that failed recently is still tried this often while work for its type waits. */
  retryIntervalMs: number;
  healthWindowMs: number;
  bootFailuresToBreak: number;
  /** How long one capacity error backs creates in its scope off (quotaErrorTTL). */
  capacityBackoffMs: number;
  /** Something creates depend on changed without a pool event (a back-off or a breaker's cooling ended). */
  changed: () => void;
  /** Absent: the machines are created without an inspector. */
  inspection?: ActorInspection | undefined;
}

/** A create refused by the type's configs: why, and for capacity since how long (see CreateRefusal). */
export interface TypeRefusal {
  reason: string;
  refusedForMs?: number;
}

interface Entry {
  settings: LaunchConfigSettings;
  actor: Actor<LaunchConfigMachine>;
  /** False for an id known only from instances' tags or a saved state: gone from the file. */
  inConfig: boolean;
}

type LaunchConfigSnapshot = SnapshotFrom<LaunchConfigMachine>;

const anywhere = '*';

/** The operator's state of a config, from its snapshot's tags. */
function adminStateOf(snapshot: LaunchConfigSnapshot): LaunchConfigAdminState {
  return snapshot.hasTag('archived') ? 'archived' : snapshot.hasTag('paused') ? 'paused' : 'active';
}

function scopeKey(instanceType: string, zone: string): string {
  return `${instanceType} in ${zone}`;
}

export class LaunchConfigs {
  private readonly entries = new Map<string, Entry>();
  private readonly byType = new Map<string, Entry[]>();
  private readonly scopes = new Map<string, Actor<CapacityScopeMachine>>();
  /** For a config that names no zone: the zone its capacity errors said its creates went to. */
  private readonly learnedZones = new Map<string, string>();
  private readonly saved: ReadonlyMap<string, LaunchConfigAdminState>;
  private readonly launchConfigActor;
  private readonly scopeActor;

  constructor(private readonly options: LaunchConfigsOptions) {
    this.saved = options.store?.load() ?? new Map();
    this.launchConfigActor = launchConfigMachine.provide({ actions: { notifyChanged: () => options.changed() } });
    this.scopeActor = capacityScopeMachine.provide({ actions: { notifyChanged: () => options.changed() } });
    for (const settings of options.configs) this.add(settings, true);
  }

  private get logger(): Logger {
    return this.options.logger;
  }

  stop(): void {
    for (const entry of this.entries.values()) entry.actor.stop();
    for (const scope of this.scopes.values()) scope.stop();
  }

  /** The launch config of this id, if the pool knows it (from the file or an instance). */
  get(id: string): LaunchConfig | undefined {
    return this.entries.get(id)?.settings;
  }

  /**
   * An instance of `instanceType` tagged with this config id was found. An id the file no longer has
   * is remembered as archived (its instances are drained by the pool); true if the config is archived.
   */
  found(id: string, instanceType: string): boolean {
    let entry = this.entries.get(id);
    if (!entry) {
      entry = this.add({ id, instanceType, zone: null, region: null, subnet: null, image: null, extra: {}, weight: 1, maxInstances: null, initialState: 'active' }, false);
      this.logger.warn({ launchConfig: id, instanceType }, 'instances of a launch config no longer in the config: archived, its instances drained');
      try {
        this.options.store?.save(id, 'archived');
      } catch (error) {
        // The id is still missing from the file at the next start, so it is archived again then.
        this.logger.warn({ launchConfig: id, error: error instanceof Error ? error.message : String(error) }, 'archive of a launch config not saved');
      }
    }
    return entry.actor.getSnapshot().hasTag('archived');
  }

  /** Why every create of every type is refused for capacity (an account-wide capacity error), or null. */
  accountRefusal(): string | null {
    const scope = this.scopes.get(scopeKey(anywhere, anywhere));
    if (!scope?.getSnapshot().hasTag('backingOff')) return null;
    return `no capacity for any instance type (${scope.getSnapshot().context.lastError})`;
  }

  /** Why no config of the type may create now, or null if one may. */
  typeRefusal(instanceType: string, instancesOf: (id: string) => number): TypeRefusal | null {
    const entries = this.byType.get(instanceType) ?? [];
    if (entries.length === 0) return { reason: `no launch config for ${instanceType}` };
    const now = this.options.clock.now();
    const refusals: string[] = [];
    let capacityOnly = true;
    let refusedForMs = Infinity;
    for (const entry of entries) {
      const snapshot = entry.actor.getSnapshot();
      if (snapshot.hasTag('archived') && !entry.inConfig) continue;
      const capacity = this.capacityBlock(entry.settings);
      const refusal = this.configRefusal(entry, snapshot, instancesOf, now, capacity);
      if (refusal === null) return null;
      refusals.push(entries.length === 1 ? refusal : `${entry.settings.id}: ${refusal}`);
      if (capacity === null) capacityOnly = false;
      else refusedForMs = Math.min(refusedForMs, now - capacity.getSnapshot().context.since);
    }
    if (refusals.length === 0) return { reason: `no launch config for ${instanceType} in the config` };
    const reason = refusals.length === 1 ? (refusals[0] as string) : `every launch config of ${instanceType} refuses (${refusals.join('; ')})`;
    return capacityOnly && Number.isFinite(refusedForMs) ? { reason, refusedForMs } : { reason };
  }

  /**
   * The config a create of the type goes to, or null if none may create now. A broken config's
   * trial goes first; then one that failed recently and has not been tried for retryInterval; then
   * the one with the fewest live instances for its weight now (weight × boot success rate); with
   * every usable config at weight 0, the one tried longest ago.
   */
  pick(instanceType: string, instancesOf: (id: string) => number): LaunchConfigSettings | null {
    const now = this.options.clock.now();
    const usable: Array<{ entry: Entry; snapshot: LaunchConfigSnapshot; weight: number }> = [];
    for (const entry of this.byType.get(instanceType) ?? []) {
      const snapshot = entry.actor.getSnapshot();
      if (this.configRefusal(entry, snapshot, instancesOf, now, this.capacityBlock(entry.settings)) !== null) continue;
      usable.push({ entry, snapshot, weight: effectiveWeight(snapshot.context, entry.settings.weight, now) });
    }
    const trial = usable.find(({ snapshot }) => snapshot.hasTag('trialReady'));
    if (trial) return trial.entry.settings;
    const lastTried = (snapshot: LaunchConfigSnapshot) => snapshot.context.lastTriedAt ?? -Infinity;
    const byOldestTry = (a: { snapshot: LaunchConfigSnapshot }, b: { snapshot: LaunchConfigSnapshot }) => lastTried(a.snapshot) - lastTried(b.snapshot);
    const retryDue = usable.filter(({ entry, snapshot, weight }) => weight < entry.settings.weight && snapshot.hasTag('retryDue')).sort(byOldestTry)[0];
    if (retryDue) return retryDue.entry.settings;
    let best: { entry: Entry; load: number } | null = null;
    for (const { entry, weight } of usable) {
      if (weight <= 0) continue;
      const load = (instancesOf(entry.settings.id) + 1) / weight;
      if (best === null || load < best.load) best = { entry, load };
    }
    if (best) return best.entry.settings;
    return usable.sort(byOldestTry)[0]?.entry.settings ?? null;
  }

  /** Tells the config how its create, boot or instance went. */
  send(id: string, event: LaunchConfigEvent): void {
    this.entries.get(id)?.actor.send(event);
  }

  /**
   * Backs creates off in the scope the error names: its instance type (every type when it names
   * none) in its zone, else the zone the config launched in, else everywhere.
   */
  capacityError(error: { instanceType: string | null; zone: string | null; message: string }, config: LaunchConfig | null): void {
    // A config with no zone of its own is in whatever zone the driver chose: the error says which.
    if (config !== null && config.zone === null && error.zone !== null) this.learnedZones.set(config.id, error.zone);
    const key = scopeKey(error.instanceType ?? anywhere, error.zone ?? (config === null ? null : this.placeOf(config)) ?? anywhere);
    let scope = this.scopes.get(key);
    if (!scope) {
      scope = createActor(this.scopeActor, {
        clock: this.options.clock,
        input: { backoffMs: this.options.capacityBackoffMs },
        ...inspectOption(this.options.inspection?.observerFor({ kind: 'capacityScope', scope: key })),
      });
      scope.start();
      this.scopes.set(key, scope);
    }
    scope.send({ type: 'CAPACITY_ERROR', at: this.options.clock.now(), message: error.message });
  }

  /** Scopes backing off now, as "<type> in <zone>" ('*': any). */
  capacityBackingOff(): string[] {
    return [...this.scopes].filter(([, scope]) => scope.getSnapshot().hasTag('backingOff')).map(([key]) => key);
  }

  /** The operator pauses, resumes or archives a config; returns whether it was archived now. */
  change(id: string, action: LaunchConfigAction): boolean {
    const entry = this.entries.get(id);
    if (!entry) throw new UnknownLaunchConfigError(id);
    const event = ({ pause: { type: 'PAUSE' }, resume: { type: 'RESUME' }, archive: { type: 'ARCHIVE' } } as const)[action];
    const before = entry.actor.getSnapshot();
    if (!before.can(event)) {
      const state = adminStateOf(before);
      throw new LaunchConfigStateError(id, `launch config ${id} is ${state}: cannot ${action} it${state === 'archived' ? ' (archived is for good; give the config a new id in the file)' : ''}`);
    }
    // Saved first: a save that fails (the queue's disk full) leaves the config as it was, not changed until a restart.
    const state = ({ pause: 'paused', resume: 'active', archive: 'archived' } as const)[action];
    this.options.store?.save(id, state);
    entry.actor.send(event);
    this.logger.info({ launchConfig: id, action, state }, 'launch config changed by operator');
    this.options.changed();
    return state === 'archived';
  }

  views(instancesOf: (id: string) => number): LaunchConfigView[] {
    const now = this.options.clock.now();
    return [...this.entries.values()].map((entry) => {
      const snapshot = entry.actor.getSnapshot();
      const { context } = snapshot;
      const { id, instanceType, zone, region, subnet, image, weight, maxInstances } = entry.settings;
      const admin = adminStateOf(snapshot);
      // Broken shows only while the operator lets the config create: a paused config's breaker is not news.
      const state = admin === 'active' && snapshot.hasTag('broken') ? 'broken' : admin;
      return {
        id,
        instanceType,
        zone,
        region,
        subnet,
        image,
        weight,
        effectiveWeight: effectiveWeight(context, weight, now),
        maxInstances,
        state,
        inConfig: entry.inConfig,
        instances: instancesOf(id),
        recent: { ...recentOutcomes(context, now), windowMs: context.healthWindowMs },
        consecutiveBootFailures: context.consecutiveBootFailures,
        lastError: context.lastError,
        nextTrialAt: snapshot.hasTag('cooling') ? context.coolingUntil : snapshot.hasTag('trialReady') ? now : null,
        refusal: this.configRefusal(entry, snapshot, instancesOf, now, this.capacityBlock(entry.settings)),
      };
    });
  }

  private add(settings: LaunchConfigSettings, inConfig: boolean): Entry {
    const saved = this.saved.get(settings.id);
    const initialState: LaunchConfigAdminState = !inConfig ? 'archived' : (saved ?? settings.initialState);
    const actor = createActor(this.launchConfigActor, {
      clock: this.options.clock,
      input: {
        id: settings.id,
        initialState,
        bootFailuresToBreak: this.options.bootFailuresToBreak,
        healthWindowMs: this.options.healthWindowMs,
        retryIntervalMs: this.options.retryIntervalMs,
      },
      ...inspectOption(this.options.inspection?.observerFor({ kind: 'launchConfig', id: settings.id })),
    });
    actor.start();
    const entry: Entry = { settings, actor, inConfig };
    this.entries.set(settings.id, entry);
    const siblings = this.byType.get(settings.instanceType) ?? [];
    siblings.push(entry);
    this.byType.set(settings.instanceType, siblings);
    return entry;
  }

  /**
   * Where the config's creates land, as far as capacity goes: its zone; else the zone its errors
   * named; else its subnet (which fixes the zone on EC2); null when nothing says.
   */
  private placeOf(config: LaunchConfig): string | null {
    return config.zone ?? this.learnedZones.get(config.id) ?? (config.subnet === null ? null : `subnet ${config.subnet}`);
  }

  /** The capacity scope backing creates from this config off now, if any (the account-wide one is the pool's to report). */
  private capacityBlock(config: LaunchConfig): Actor<CapacityScopeMachine> | null {
    const place = this.placeOf(config);
    const zones = place === null ? [anywhere] : [place, anywhere];
    for (const type of [config.instanceType, anywhere]) {
      for (const zone of zones) {
        if (type === anywhere && zone === anywhere) continue;
        const scope = this.scopes.get(scopeKey(type, zone));
        if (scope?.getSnapshot().hasTag('backingOff')) return scope;
      }
    }
    return null;
  }

  private configRefusal(
    entry: Entry,
    snapshot: LaunchConfigSnapshot,
    instancesOf: (id: string) => number,
    now: number,
    capacity: Actor<CapacityScopeMachine> | null,
  ): string | null {
    const { id, maxInstances, instanceType, zone } = entry.settings;
    if (snapshot.hasTag('archived')) return `launch config ${id} is archived`;
    if (snapshot.hasTag('paused')) return `launch config ${id} is paused`;
    const { context } = snapshot;
    const last = context.lastError === null ? '' : `; last error: ${context.lastError.message}`;
    if (snapshot.hasTag('cooling')) {
      const wait = formatDuration(Math.max(0, Math.ceil((context.coolingUntil - now) / 1_000) * 1_000));
      return `launch config ${id} is broken after ${context.consecutiveBootFailures} boot failures in a row; a trial create in ${wait}${last}`;
    }
    if (snapshot.hasTag('trialRunning')) return `launch config ${id} is broken; its trial instance ${context.trialWorkerId ?? ''} is booting${last}`;
    const place = zone ?? this.placeOf(entry.settings);
    if (capacity !== null) return `no capacity for ${instanceType}${place === null ? '' : ` in ${place}`} (${capacity.getSnapshot().context.lastError})`;
    if (maxInstances !== null) {
      const live = instancesOf(id);
      if (live >= maxInstances) return `launch config ${id} has ${live} instances (its maxInstances)`;
    }
    return null;
  }
}
