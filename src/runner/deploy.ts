// Installs drover-runner.sh on an instance over its Executor and builds the runner's command lines.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shellQuote } from '../shell-quote.js';
import type { Executor } from '../ssh/executor.js';

/** Where the runner is installed when nothing else is configured, relative to the login directory. */
export const DEFAULT_RUNNER_PATH = '.drover/bin/drover-runner';

/**
 * The runner's exit codes (the script's header says the same). For `start`: `ok` and `exists` mean
 * the container runs (or ran) there; `failed` that nothing runs, for a reason on the instance;
 * `usage` that no instance can start it as asked; `unsure` that it may or may not run, which only
 * a later list can tell. For `remove`, `exists` means it is still running.
 */
export const runnerExit = { ok: 0, failed: 1, usage: 2, exists: 3, unknown: 4, unsure: 5 } as const;

/** The longest wait the runner accepts (it takes at most nine digits). */
export const MAX_WAIT_SECONDS = 999_999_999;

export interface StartSpec {
  uuid: string;
  command: string[];
  env: Record<string, string>;
  image: string | null;
  docker: boolean;
}

// Next to this module under tsx; tsc does not copy it into dist/, so from dist/src/runner/ it is
// found back in the sources (which a packed install ships too, see "files" in package.json).
const SCRIPT_CANDIDATES = ['./drover-runner.sh', '../../../src/runner/drover-runner.sh'];

let cachedScript: string | undefined;
let cachedHash: string | undefined;

/** The runner script's text. */
export function runnerScript(): string {
  if (cachedScript !== undefined) return cachedScript;
  const tried: string[] = [];
  for (const candidate of SCRIPT_CANDIDATES) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    tried.push(path);
    try {
      cachedScript = readFileSync(path, 'utf8');
      return cachedScript;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw new Error(`drover-runner.sh not found; looked in ${tried.join(', ')}`);
}

/** sha256 (hex) of the runner script, which is how an installed copy is recognised as current. */
export function runnerHash(): string {
  cachedHash ??= createHash('sha256').update(runnerScript(), 'utf8').digest('hex');
  return cachedHash;
}

/**
 * Makes sure the current runner is installed at `runnerPath` (relative paths are relative to the
 * login directory): 'present' when it already was, 'installed' when it was (re)written.
 */
export async function ensureRunner(executor: Executor, runnerPath: string): Promise<'present' | 'installed'> {
  const path = shellQuote(runnerPath);
  // Hashing stdin keeps the path out of the output, whichever of the three tools exists.
  const check = await executor.run(
    `if [ -f ${path} ] && [ -x ${path} ]; then ` +
      `{ sha256sum < ${path} || shasum -a 256 < ${path} || openssl dgst -sha256 < ${path}; } 2>/dev/null; fi`,
  );
  if (check.stdout.split(/[\s=]+/).includes(runnerHash())) return 'present';

  const dir = shellQuote(posix.dirname(runnerPath));
  // A temp file per upload and a rename: a runner being read or run never sees a partial copy,
  // and two daemons uploading at once cannot interleave their writes.
  const tmp = `${path}.tmp.$$`;
  const upload = await executor.run(
    `mkdir -p ${dir} && cat > ${tmp} && chmod 755 ${tmp} && mv -f ${tmp} ${path} || { rm -f ${tmp}; exit 1; }`,
    { stdin: runnerScript() },
  );
  if (upload.exitCode !== 0) {
    throw new Error(`installing drover-runner at ${runnerPath} failed (exit ${upload.exitCode}): ${upload.stderr.trim()}`);
  }
  return 'installed';
}

const UUID = /^[A-Za-z0-9._-]+$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SIGNAL = /^(?:[A-Z][A-Z0-9]*|[0-9]+)$/;

// The runner refuses these too; checking here turns a bad request into an exception at its source
// rather than an exit code on a VM.
function checkUuid(uuid: string): void {
  if (!UUID.test(uuid) || uuid === '.' || uuid === '..') throw new Error(`invalid container uuid: ${JSON.stringify(uuid)}`);
}

/** `runner start`: starts the container detached and returns at once; see runnerExit for its exit codes. */
export function startCommand(runnerPath: string, spec: StartSpec): string {
  checkUuid(spec.uuid);
  const words = [shellQuote(runnerPath), 'start', shellQuote(spec.uuid)];
  if (spec.image !== null) words.push('--image', shellQuote(spec.image));
  if (spec.docker) {
    if (spec.image === null) throw new Error(`container ${spec.uuid}: docker needs an image`);
    words.push('--docker');
  }
  for (const [name, value] of Object.entries(spec.env)) {
    if (!ENV_NAME.test(name)) throw new Error(`invalid environment variable name: ${JSON.stringify(name)}`);
    words.push('--env', shellQuote(`${name}=${value}`));
  }
  if (spec.command.length === 0 && !spec.docker) throw new Error(`container ${spec.uuid}: no command`);
  // One at a time: spreading 150,000 arguments into push() overflows the stack.
  words.push('--');
  for (const arg of spec.command) words.push(shellQuote(arg));
  return words.join(' ');
}

/** `runner list`: one `<uuid> running` or `<uuid> exited <code>` line per container; see parseRunnerList. */
export function listCommand(runnerPath: string): string {
  return `${shellQuote(runnerPath)} list`;
}

/**
 * `runner wait`: a long poll. Answers what `list` answers (see parseRunnerList) as soon as a
 * container has exited whose uuid is not in `knownExited`, at once if one already has, or after
 * `seconds` when none does.
 */
export function waitCommand(runnerPath: string, seconds: number, knownExited: readonly string[]): string {
  if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds > MAX_WAIT_SECONDS) {
    throw new Error(`invalid wait seconds: ${seconds}`);
  }
  const words = [shellQuote(runnerPath), 'wait', String(seconds)];
  for (const uuid of knownExited) {
    checkUuid(uuid);
    words.push(shellQuote(uuid));
  }
  return words.join(' ');
}

/** `runner kill`: signals the container's whole process group; `signal` is a name (TERM, SIGKILL) or a number. */
export function killCommand(runnerPath: string, signal: string | number, uuid: string): string {
  const sig = String(signal);
  if (!SIGNAL.test(sig)) throw new Error(`invalid signal: ${JSON.stringify(sig)}`);
  checkUuid(uuid);
  return `${shellQuote(runnerPath)} kill ${sig} ${shellQuote(uuid)}`;
}

/** `runner logs`: the last `bytes` (default 65536 in the runner) of the container's stdout and stderr. */
export function logsCommand(runnerPath: string, uuid: string, bytes?: number): string {
  checkUuid(uuid);
  if (bytes !== undefined && (!Number.isSafeInteger(bytes) || bytes < 0)) throw new Error(`invalid byte count: ${bytes}`);
  return `${shellQuote(runnerPath)} logs ${shellQuote(uuid)}${bytes === undefined ? '' : ` ${bytes}`}`;
}

/** `runner remove`: forgets a finished container (exit 3 while it runs). */
export function removeCommand(runnerPath: string, uuid: string): string {
  checkUuid(uuid);
  return `${shellQuote(runnerPath)} remove ${shellQuote(uuid)}`;
}
