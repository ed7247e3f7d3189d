// The drover command's exit codes: which ones are Drover's own, so a script can tell them from a container's.
import type { Command } from 'commander';

/**
 * Exit codes of the client commands (everything but `drover run`).
 *
 * `drover submit --wait` ends with the container's own exit code when it ran and exited (0–255,
 * passed through untouched, whether the container completed or failed). Drover's own outcomes are
 * 100 and above, so a code from 1 to 99 is always the container's; from 100 up it may be either
 * (a container may exit 100 too), and the `drover:` line on stderr, or `drover show UUID`, tells
 * which. Every other client command exits 0 on success and with one of these codes otherwise.
 * `drover run`, `drover teardown` and `drover cloudtest` have codes of their own (below); their usage errors are `usage`.
 */
export const exitCodes = {
  /** Done; or, under --wait, the container completed with exit code 0. */
  ok: 0,
  /**
   * The daemon could not be reached (not running, wrong URL; with http.port 0, no daemon.url); --wait
   * and --follow first retry it for a while (--retry-for).
   */
  unreachable: 100,
  /**
   * The daemon answered with an error (4xx/5xx): an unknown uuid, instance or launch config, a launch
   * config change its state does not allow, a refused token, a spec it cannot run.
   */
  refused: 101,
  /**
   * The client's own settings: no API token (usually no daemon has run on this state yet, which the
   * message says), an unreadable token file, a client config that does not load.
   */
  settings: 102,
  /** The command line itself: an unknown command or option, a missing or malformed argument. */
  usage: 103,
  /**
   * --wait: the container failed with no exit code of its own to pass on: no instance type fits it,
   * it ran out of attempts, it was lost, or its runner reported a code outside 0–255.
   */
  containerFailed: 104,
  /** --wait: the container was cancelled (by `drover cancel` or another client) before it ended on its own. */
  cancelled: 105,
  /** A bug in the client: its stack trace is on stderr. */
  internal: 109,
  /**
   * --wait or --follow stopped by Ctrl-C (SIGINT). 130 is the shell's own code for a command killed
   * by SIGINT (128 + 2), which is what the operator did; kept so `drover` reads like any command.
   */
  interrupted: 130,
} as const;

export type ExitCode = (typeof exitCodes)[keyof typeof exitCodes];

/** Exit codes of `drover run`, the daemon. */
export const runExitCodes = {
  /** Stopped by SIGINT or SIGTERM. */
  stopped: 0,
  /** Stopping failed part way; the reason is logged. */
  notStoppedCleanly: 1,
  /** Refused to start (see refusals.ts): a bad config, state others can read, a second daemon on the same state, a queue file it cannot use, the port taken. */
  refused: 2,
} as const;

/** Exit codes of `drover teardown`. */
export const teardownExitCodes = {
  /** Nothing carrying the pool's tag is left. */
  allGone: 0,
  /** Something is left: a destroy failed, the listing failed, or the operator said no. */
  somethingLeft: 1,
  /** Refused before anything was destroyed (see refusals.ts), or it could not ask and had no --yes. */
  refused: 2,
} as const;

/** Exit codes of `drover simulate`. */
export const simulateExitCodes = {
  /** The replay ran (to the end of its work or to --until) and its summary is written. */
  ran: 0,
  /** It ran, but lost a container or ran one twice: the summary says which. */
  invariantBroken: 1,
  /** Refused before replaying: a bad config, trace or option (the message names it). */
  refused: 2,
} as const;

/** Exit codes of `drover cloudtest`. */
export const cloudtestExitCodes = {
  /** Every step passed and the instance is gone. */
  passed: 0,
  /** A step failed (named on stdout and stderr); what it created was destroyed and is gone. */
  failed: 1,
  /** Refused before anything was created (see refusals.ts), or --type names no instance type of the config. */
  refused: 2,
  /** A step failed and the instance could not be confirmed gone: its id is printed, for the operator to remove. */
  instanceLeft: 3,
  /**
   * Stopped by Ctrl-C (SIGINT) or SIGTERM, and what it created was destroyed and is gone (130, the
   * shell's code for SIGINT, as `exitCodes.interrupted`). When it could not be, or a second signal
   * ended the clean-up, the exit is `instanceLeft` instead.
   */
  interrupted: 130,
} as const;

/** Exit codes of `drover inspect-relay`. */
export const inspectRelayExitCodes = {
  /** Stopped by SIGINT or SIGTERM. */
  stopped: 0,
  /** Refused to start: a --host that is no loopback address, or the port taken. */
  refused: 2,
} as const;

/**
 * Makes commander's usage errors (unknown command or option, missing or invalid argument, bare
 * `drover`) exit with `exitCodes.usage` instead of 1; --help and --version still exit 0. Applies to
 * `program`, to the commands it already has, and (commander copies the setting) to those added later.
 */
export function exitWithUsageCode(program: Command): void {
  const exit = (err: { exitCode: number }): never => process.exit(err.exitCode === 0 ? exitCodes.ok : exitCodes.usage);
  const apply = (command: Command): void => {
    command.exitOverride(exit);
    for (const sub of command.commands) apply(sub);
  };
  apply(program);
}
