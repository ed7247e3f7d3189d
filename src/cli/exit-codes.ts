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
 *
 * `drover run` (the daemon, src/cli/main.ts) exits 0 when stopped by SIGINT or SIGTERM, 1 when it
 * did not stop cleanly, and 2 when it refused to start (a bad config, the queue or loopback
 * directory held by another daemon, state readable by other users, the HTTP port taken); its usage
 * errors are `usage` below.
 */
export const exitCodes = {
  /** Done; or, under --wait, the container completed with exit code 0. */
  ok: 0,
  /** The daemon could not be reached (not running, wrong URL); --wait and --follow first retry it for a while (--retry-for). */
  unreachable: 100,
  /** The daemon answered with an error (4xx/5xx): an unknown uuid or instance, a refused token, a spec it cannot run. */
  refused: 101,
  /** The client's own settings: no API token, an unreadable token file, a client config that does not load. */
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
