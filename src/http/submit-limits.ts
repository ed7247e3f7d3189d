// What `POST /containers` refuses beyond the queue's own validation: specs the runner could never start.
import { DEFAULT_RUNNER_PATH, startCommand } from '../runner/deploy.js';
import type { ContainerSpec } from '../queue/types.js';

/**
 * The most bytes the start command line (`<runner> start <uuid> [--image ..] [--docker]
 * [--env 'K=V' ..] -- 'arg' ..`, every word shell-quoted exactly as the runner receives it) may take.
 *
 * The whole line travels in one SSH `exec` request and the remote sshd runs it as `$SHELL -c <line>`,
 * so on Linux the entire line is a single execve argument, capped by MAX_ARG_STRLEN (131072 bytes);
 * the runner then passes the same argv and env on again (to docker or the command, alongside its own
 * environment), and SSH servers and libraries other than OpenSSH cap exec requests lower still.
 * A quarter of MAX_ARG_STRLEN leaves room for all of that; a command that needs more should read its
 * input from a file or the network rather than from argv.
 */
export const MAX_START_COMMAND_BYTES = 32 * 1024;

/**
 * The most `command` arguments a spec may have. Far below what the byte limit alone would allow for
 * one-character arguments (about 8,000), and checked before the command line is built, so a spec
 * with 150,000 arguments is refused in constant stack rather than spread into a call.
 */
export const MAX_COMMAND_ARGS = 4096;

/** The uuid measured in the start command: as long as the queue's own (a v4 UUID, 36 characters). */
const PLACEHOLDER_UUID = '00000000-0000-4000-8000-000000000000';

export interface RunnerFacts {
  /** `runner.docker`: the runner starts images under docker (and needs one); otherwise plain commands. */
  docker: boolean;
  /** The runner's path on the instances, which is part of the command line measured. */
  runnerPath?: string;
}

/** A spec the queue would accept but this daemon's runner cannot start; the API answers 400. */
export class UnrunnableSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnrunnableSpecError';
  }
}

/**
 * Throws UnrunnableSpecError when `spec` cannot be started by the runner as configured: an image
 * where the runner runs plain commands, none where it runs docker, too many arguments, or a start
 * command line longer than MAX_START_COMMAND_BYTES. What the queue's validation refuses (bad env
 * names, NUL bytes) is left to it, so that its error names the field.
 */
export function checkRunnable(spec: Pick<ContainerSpec, 'command' | 'env' | 'image'>, runner: RunnerFacts): void {
  if (!runner.docker && spec.image !== null) {
    throw new UnrunnableSpecError(
      'image: this daemon runs plain commands (runner.docker is false); submit without an image or enable runner.docker',
    );
  }
  if (runner.docker && spec.image === null) {
    throw new UnrunnableSpecError('image: this daemon runs containers under docker (runner.docker is true); submit with an image');
  }
  if (spec.command.length > MAX_COMMAND_ARGS) {
    throw new UnrunnableSpecError(`command has ${spec.command.length} arguments; the limit is ${MAX_COMMAND_ARGS}`);
  }
  let line: string;
  try {
    line = startCommand(runner.runnerPath ?? DEFAULT_RUNNER_PATH, { uuid: PLACEHOLDER_UUID, ...spec, docker: runner.docker });
  } catch {
    // Only what the queue refuses too (an invalid env name, a NUL byte); its error names the field.
    return;
  }
  const bytes = Buffer.byteLength(line, 'utf8');
  if (bytes > MAX_START_COMMAND_BYTES) {
    throw new UnrunnableSpecError(
      `command and env take ${bytes} bytes once quoted for the runner; the limit is ${MAX_START_COMMAND_BYTES} (one SSH exec)`,
    );
  }
}
