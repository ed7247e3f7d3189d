// What the pool tells whoever measures it, as it happens: durations and losses it has no reason to
// keep itself. The daemon's Prometheus metrics implement it; the pool never sees prom-client.
// Counts the pool keeps anyway (boots, instances by state) are read from the pool at scrape time
// instead, so each has one owner.
import type { Lifecycle } from '../../machines/instance.js';

export type ProbeOutcome = 'ok' | 'not_booted' | 'error';
export const probeOutcomes: readonly ProbeOutcome[] = ['ok', 'not_booted', 'error'];

export interface PoolObserver {
  /** An instance this pool created answered booted, `seconds` after its create was asked for. */
  booted(seconds: number): void;
  /** An instance vanished from the cloud while it was in `state`: forgotten, though nobody shut it down. */
  disappeared(state: Lifecycle): void;
  /** An instance shut down was gone from the listings `seconds` after it entered shutdown. */
  shutdownTook(seconds: number): void;
  /**
   * A probe ended after `seconds`: `ok` (booted, and its runner listed), `not_booted` (the boot
   * probe did not pass yet: normal while it boots) or `error` (a command failed or did not answer).
   */
  probed(seconds: number, outcome: ProbeOutcome): void;
  /** A container started for the first time (its first counted attempt), `waitSeconds` after it was submitted. */
  containerStarted(waitSeconds: number): void;
}

/** The pool's default: nobody measures. */
export const noPoolObserver: PoolObserver = {
  booted: () => {},
  disappeared: () => {},
  shutdownTook: () => {},
  probed: () => {},
  containerStarted: () => {},
};
