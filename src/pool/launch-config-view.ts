// What the pool tells operators of its launch configs, what they may do to them, and where their
// choices are kept so a restart keeps them.
import type { LaunchConfig } from '../cloud/driver.js';
import type { LaunchConfigAdminState } from '../config/launch-configs.js';

/** `broken`: the bad-image breaker holds it (boot failures in a row); the others are the operator's. */
export type LaunchConfigState = LaunchConfigAdminState | 'broken';

export const launchConfigActions = ['pause', 'resume', 'archive'] as const;
export type LaunchConfigAction = (typeof launchConfigActions)[number];

/** A launch config's fields (but its driver-specific `extra`), its state and its recent record. */
export interface LaunchConfigView extends Omit<LaunchConfig, 'extra'> {
  /** The configured weight, and the one creates use now (weight × boot success rate over the window). */
  weight: number;
  effectiveWeight: number;
  maxInstances: number | null;
  state: LaunchConfigState;
  /** False for a config known only from its instances' tags: gone from the file, so archived (listed once an instance of it is). */
  inConfig: boolean;
  /** Instances from this config the pool knows now, creating ones included. */
  instances: number;
  /** Boots (successes) and create errors, boot failures and early vanishings (failures) over the last `windowMs`. */
  recent: { successes: number; failures: number; windowMs: number };
  consecutiveBootFailures: number;
  lastError: { at: number; message: string } | null;
  /** While broken: clock ms at which the next trial create is allowed (null while a trial boots). */
  nextTrialAt: number | null;
  /** Why a create from this config would be refused now; null if one may go ahead. */
  refusal: string | null;
}

export class UnknownLaunchConfigError extends Error {
  constructor(readonly launchConfigId: string) {
    super(`no launch config ${launchConfigId} in this pool`);
  }
}

/** An action the config's state does not allow, e.g. resuming an archived config. */
export class LaunchConfigStateError extends Error {
  constructor(
    readonly launchConfigId: string,
    message: string,
  ) {
    super(message);
  }
}

/** The part of the pool the admin API drives for launch configs and the pool-wide create freeze. */
export interface LaunchConfigControl {
  launchConfigs(): LaunchConfigView[];
  /** Throws UnknownLaunchConfigError or LaunchConfigStateError; returns the config as it is after. */
  changeLaunchConfig(id: string, action: LaunchConfigAction): LaunchConfigView;
  /** Lifts a freeze of every create (freezePoolAfterBootFailures); false if creates were not frozen. */
  resumeCreates(): boolean;
  /** Why every create is frozen, or null. */
  createsFrozen(): string | null;
}

/** Where operators' pauses and archives are kept across restarts (the queue's database). */
export interface LaunchConfigStateStore {
  load(): ReadonlyMap<string, LaunchConfigAdminState>;
  save(id: string, state: LaunchConfigAdminState): void;
}
