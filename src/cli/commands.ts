// The drover subcommands that talk to a running daemon over its HTTP API.
import { Command, InvalidArgumentError, Option } from 'commander';
import type { IdleBehavior } from '../../machines/instance.js';
import { ConfigError } from '../config/load.js';
import type { ContainerState } from '../queue/types.js';
import { defaultConfigDescription } from '../config/home.js';
import { ApiClient, ApiError, ApiUnreachableError, ClientSettingsError, resolveClientSettings, type SubmitRequest } from './client.js';
import { exitCodes } from './exit-codes.js';
import { followLogs } from './follow.js';
import type { LaunchConfigAction, LaunchConfigView } from '../pool/launch-config-view.js';
import { containerDetails, containerTable, frozenHint, instanceName, instanceTable, launchConfigTable, orphanHint } from './format.js';
import { listenForInterrupt } from './interrupt.js';
import { defaultRetryForMs } from './retry.js';
import { waitFor } from './wait.js';

export interface ClientOptions {
  config?: string;
  url?: string;
}

interface RetryOptions {
  /** Seconds to keep retrying a daemon that does not answer. */
  retryFor?: number;
}

interface SubmitOptions extends ClientOptions, RetryOptions {
  vcpus?: number;
  ram?: number;
  scratch?: number;
  gpus?: number;
  preemptible?: boolean;
  priority?: number;
  image?: string;
  env: Record<string, string>;
  wait?: boolean;
  cancelOnInterrupt?: boolean;
}

/** The pause between two polls of `submit --wait` and `logs --follow`. */
export const pollIntervalMs = 500;

const containerStates: ContainerState[] = ['queued', 'locked', 'running', 'complete', 'failed', 'cancelled'];

export function registerClientCommands(program: Command): void {
  // Lets `submit` hand everything after its first operand to the container untouched, so
  // `drover submit sh -c 'ls -l'` works without `--` (program-level options must then come first).
  program.enablePositionalOptions();

  clientCommand(program, 'submit')
    .description('queue a container; prints its uuid (on stderr with --wait, where stdout is the output)')
    .argument('<command...>', 'the program and its arguments (put them after --)')
    .option('--vcpus <n>', 'vCPUs it needs (default 1)', integer(1))
    .option('--ram <MiB>', 'RAM it needs in MiB (default 256)', integer(1))
    .option('--scratch <GiB>', 'scratch disk it needs in GiB (default 0)', integer(0))
    .option('--gpus <n>', 'GPUs it needs (default 0)', integer(0))
    .option('--preemptible', 'may run on a preemptible (spot) instance')
    .option('--priority <n>', 'higher runs first (default 0)', integer(Number.MIN_SAFE_INTEGER))
    .option('--image <image>', 'image to run under docker')
    .option('--env <K=V>', 'environment variable (repeatable)', envPair, {})
    .option('--wait', "wait until it finishes, print its output and exit with its exit code (drover's own failures exit 100 or above)")
    .option('--cancel-on-interrupt', 'with --wait: Ctrl-C also cancels the container')
    .addOption(retryOption('with --wait: '))
    .passThroughOptions()
    .action(
      handled(async (command: string[], options: SubmitOptions) => {
        const client = clientFor(options);
        const container = await client.submit(submitRequest(command, options));
        if (!options.wait) {
          process.stdout.write(`${container.uuid}\n`);
          return;
        }
        // Listening before the uuid is printed: whoever saw it and pressed Ctrl-C must find the handler in place.
        const interrupt = listenForInterrupt();
        try {
          // stdout carries the container's own output alone, so `> file` captures just that.
          process.stderr.write(`${container.uuid}\n`);
          process.exitCode = await waitFor(client, container.uuid, {
            cancelOnInterrupt: options.cancelOnInterrupt ?? false,
            interrupt,
            retryForMs: retryForMs(options),
            intervalMs: pollIntervalMs,
          });
        } finally {
          interrupt.stop();
        }
      }),
    );

  clientCommand(program, 'containers')
    .description('list containers, newest first')
    .addOption(new Option('--state <state>', 'only containers in this state').choices(containerStates))
    .option('--limit <n>', 'at most this many (default 100, at most 1000)', integer(1))
    .action(
      handled(async (options: ClientOptions & { state?: ContainerState; limit?: number }) => {
        const containers = await clientFor(options).list({ state: options.state, limit: options.limit });
        process.stdout.write(containerTable(containers, Date.now(), lineWidth()));
      }),
    );

  clientCommand(program, 'show')
    .description('print every field of a container (the names of its environment variables, not their values)')
    .argument('<uuid>')
    .option('--json', 'print the record as the API returns it, environment values included')
    .action(
      handled(async (uuid: string, options: ClientOptions & { json?: boolean }) => {
        const container = await clientFor(options).get(uuid);
        process.stdout.write(options.json ? `${JSON.stringify(container, null, 2)}\n` : containerDetails(container, Date.now()));
      }),
    );

  clientCommand(program, 'logs')
    .description("print a container's output (so far, if it is running)")
    .argument('<uuid>')
    .option('-f, --follow', 'then print new output as it comes, until the container is final (how it ended goes to stderr)')
    .addOption(retryOption('with --follow: '))
    .action(
      handled(async (uuid: string, options: ClientOptions & RetryOptions & { follow?: boolean }) => {
        const client = clientFor(options);
        if (!options.follow) {
          process.stdout.write(await client.logs(uuid));
          return;
        }
        const interrupt = listenForInterrupt();
        try {
          process.exitCode = await followLogs(client, uuid, { interrupt, retryForMs: retryForMs(options), intervalMs: pollIntervalMs });
        } finally {
          interrupt.stop();
        }
      }),
    );

  clientCommand(program, 'cancel')
    .description('cancel a container (stopping it if it runs)')
    .argument('<uuid>')
    .action(
      handled(async (uuid: string, options: ClientOptions) => {
        const container = await clientFor(options).cancel(uuid);
        process.stdout.write(`${container.uuid}: ${container.state}\n`);
      }),
    );

  clientCommand(program, 'instances')
    .description("list the pool's instances")
    .action(
      handled(async (options: ClientOptions) => {
        const instances = await clientFor(options).instances();
        process.stdout.write(instanceTable(instances));
        // On stderr, so stdout stays a table a script can read.
        const hint = orphanHint(instances);
        if (hint !== null) process.stderr.write(hint);
      }),
    );

  registerInstanceCommands(program);
  registerLaunchConfigCommands(program);
  registerPoolCommands(program);
}

/** `drover instance hold|drain|resume|kill ID`: one instance's idle behaviour, or its end. */
function registerInstanceCommands(program: Command): void {
  const instance = program.command('instance').description('change one instance of the pool (`drover instances` lists them)');
  for (const [name, behavior, description] of [
    ['hold', 'hold', 'give the instance no new containers and never shut it down automatically; `resume` undoes it'],
    ['drain', 'drain', 'let the instance finish its containers, then shut it down; `resume` undoes it'],
    ['resume', 'run', 'give the instance containers again, and let it shut down when idle (idle behaviour run)'],
  ] as const) {
    clientCommand(instance, name)
      .description(description)
      .argument('<id>', 'its instance id (or worker id while it is being created)')
      .action(
        handled(async (id: string, options: ClientOptions) => {
          await setIdleBehavior(id, behavior, options);
        }),
      );
  }

  clientCommand(instance, 'kill')
    .description('shut the instance down now, whatever it runs')
    .argument('<id>', 'its instance id (or worker id while it is being created)')
    .action(
      handled(async (id: string, options: ClientOptions) => {
        const view = await clientFor(options).kill(id);
        process.stdout.write(`${instanceName(view)}: ${view.state}\n`);
      }),
    );
}

/** `drover launch-config list [--json]` and `drover launch-config pause|resume|archive ID`: where instances are launched from. */
function registerLaunchConfigCommands(program: Command): void {
  const launchConfig = program
    .command('launch-config')
    .description("list or change the pool's launch configs: where, and from what, each instance type is launched");

  clientCommand(launchConfig, 'list')
    .summary('list the launch configs, their state, weight, instances and recent boots')
    .description(
      'list the launch configs: STATE (active, paused, archived, or broken after boot failures in a row), WEIGHT (configured→effective), ' +
        'INSTANCES (n/max when capped), RECENT (boots/failures over the recent window) and LAST ERROR; a note on stderr when every create is frozen',
    )
    .option('--json', 'print the answer as the API returns it: every field of each config, and createsFrozen')
    .action(
      handled(async (options: ClientOptions & { json?: boolean }) => {
        const answer = await clientFor(options).launchConfigs();
        if (options.json) {
          process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
          return;
        }
        process.stdout.write(launchConfigTable(answer.launchConfigs, Date.now(), lineWidth()));
        // On stderr, so stdout stays a table a script can read.
        const hint = frozenHint(answer.createsFrozen);
        if (hint !== null) process.stderr.write(hint);
      }),
    );

  for (const [action, description] of [
    ['pause', 'create no more instances from the config until `resume`'],
    ['resume', 'create instances from a paused config again (the daemon refuses what its state does not allow, such as an archived config)'],
    ['archive', 'retire the config: no more instances are created from it, and `resume` cannot undo it'],
  ] as const satisfies ReadonlyArray<readonly [LaunchConfigAction, string]>) {
    clientCommand(launchConfig, action)
      .description(description)
      .argument('<id>', 'its id (`drover launch-config list` shows them)')
      .action(
        handled(async (id: string, options: ClientOptions) => {
          const view = await clientFor(options).changeLaunchConfig(id, action);
          process.stdout.write(launchConfigLine(view));
        }),
      );
  }
}

/** `drover pool resume`: lifts the freeze of every create that repeated boot failures set. */
function registerPoolCommands(program: Command): void {
  const pool = program.command('pool').description('act on the whole pool');
  clientCommand(pool, 'resume')
    .description('let the pool create instances again after it froze every create on repeated boot failures')
    .action(
      handled(async (options: ClientOptions) => {
        const resumed = await clientFor(options).resumeCreates();
        process.stdout.write(resumed ? 'creates resumed\n' : 'creates were not frozen; nothing to resume\n');
      }),
    );
}

/** A launch config after a change: its id and state, and why creates from it are still refused if it is active. */
function launchConfigLine(view: LaunchConfigView): string {
  const refused = view.state === 'active' && view.refusal !== null ? ` (creates refused: ${view.refusal})` : '';
  return `${view.id}: ${view.state}${refused}\n`;
}

async function setIdleBehavior(instance: string, behavior: IdleBehavior, options: ClientOptions): Promise<void> {
  const view = await clientFor(options).setIdleBehavior(instance, behavior);
  process.stdout.write(`${instanceName(view)}: idle behaviour ${view.idleBehavior} (${view.state})\n`);
}

function clientCommand(parent: Command, name: string): Command {
  return parent
    .command(name)
    .option('-c, --config <path>', `config file naming the daemon's address and token file (default ${defaultConfigDescription})`)
    .option('--url <url>', "the daemon's URL (default: DROVER_URL, else from the config)");
}

function retryOption(prefix: string): Option {
  return new Option('--retry-for <seconds>', `${prefix}how long to keep retrying a daemon that does not answer (default ${defaultRetryForMs / 1000})`).argParser(
    integer(0),
  );
}

function retryForMs(options: RetryOptions): number {
  return options.retryFor === undefined ? defaultRetryForMs : options.retryFor * 1000;
}

function clientFor(options: ClientOptions): ApiClient {
  return new ApiClient(resolveClientSettings({ config: options.config, url: options.url }));
}

/** The width a table line should fit: the terminal's, else COLUMNS (as ls and ps read it), else none. */
function lineWidth(): number | undefined {
  if (process.stdout.isTTY && process.stdout.columns > 0) return process.stdout.columns;
  const columns = Number(process.env.COLUMNS);
  return Number.isSafeInteger(columns) && columns > 0 ? columns : undefined;
}

/**
 * Wraps an action so its failures print as `drover: <reason>` and exit with the code exitCodes
 * gives them; anything else is a bug, printed with its stack as exitCodes.internal.
 */
function handled<A extends unknown[]>(action: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await action(...args);
    } catch (err) {
      const code = exitCodeOf(err);
      process.stderr.write(code === exitCodes.internal ? `drover: internal error: ${(err as Error).stack ?? String(err)}\n` : `drover: ${(err as Error).message}\n`);
      process.exitCode = code;
    }
  };
}

function exitCodeOf(err: unknown): number {
  if (err instanceof ApiUnreachableError) return exitCodes.unreachable;
  if (err instanceof ApiError) return exitCodes.refused;
  // A ConfigError here is the client's config file, read for the daemon's address and token file.
  if (err instanceof ClientSettingsError || err instanceof ConfigError) return exitCodes.settings;
  return exitCodes.internal;
}

function integer(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a whole number');
    if (n < min) throw new InvalidArgumentError(`must be at least ${min}`);
    return n;
  };
}

function envPair(pair: string, env: Record<string, string>): Record<string, string> {
  const eq = pair.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('expected NAME=VALUE');
  return { ...env, [pair.slice(0, eq)]: pair.slice(eq + 1) };
}

function submitRequest(command: string[], options: SubmitOptions): SubmitRequest {
  // Only what was given is sent, so the server's defaults stay the one source of them.
  const constraints: SubmitRequest['constraints'] = {};
  if (options.vcpus !== undefined) constraints.vcpus = options.vcpus;
  if (options.ram !== undefined) constraints.ramMiB = options.ram;
  if (options.scratch !== undefined) constraints.scratchGiB = options.scratch;
  if (options.gpus !== undefined) constraints.gpus = options.gpus;
  if (options.preemptible) constraints.preemptible = true;
  const request: SubmitRequest = { command, env: options.env, constraints };
  if (options.image !== undefined) request.image = options.image;
  if (options.priority !== undefined) request.priority = options.priority;
  return request;
}
