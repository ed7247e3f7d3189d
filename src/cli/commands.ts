// The drover subcommands that talk to a running daemon over its HTTP API.
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { IdleBehavior } from '../../machines/instance.js';
import type { InstanceEntry } from '../http/server.js';
import type { InstanceView } from '../pool/pool.js';
import { finalStates, type Container, type ContainerState } from '../queue/types.js';
import { ApiClient, ApiError, ApiUnreachableError, ClientSettingsError, defaultClientConfig, resolveClientSettings, type SubmitRequest } from './client.js';

export interface ClientOptions {
  config?: string;
  url?: string;
}

interface SubmitOptions extends ClientOptions {
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

export const pollIntervalMs = 500;
/** The shell's convention for "stopped by Ctrl-C". */
const interruptedExitCode = 130;

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
    .option('--wait', 'wait until it finishes, print its output and exit with its exit code')
    .option('--cancel-on-interrupt', 'with --wait: Ctrl-C also cancels the container')
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
          process.exitCode = await waitFor(client, container.uuid, options.cancelOnInterrupt ?? false, interrupt);
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
        process.stdout.write(containerTable(containers, Date.now()));
      }),
    );

  clientCommand(program, 'logs')
    .description("print a container's output (so far, if it is running)")
    .argument('<uuid>')
    .action(
      handled(async (uuid: string, options: ClientOptions) => {
        process.stdout.write(await clientFor(options).logs(uuid));
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

  for (const [behavior, description] of [
    ['hold', 'give an instance no new containers and never shut it down automatically'],
    ['drain', 'let an instance finish its containers, then shut it down'],
  ] as const) {
    clientCommand(program, behavior)
      .description(`${description}; \`drover run INSTANCE\` undoes it`)
      .argument('<instance>')
      .action(
        handled(async (instance: string, options: ClientOptions) => {
          await setIdleBehavior(instance, behavior, options);
        }),
      );
  }

  clientCommand(program, 'kill')
    .description('shut an instance down now, whatever it runs')
    .argument('<instance>')
    .action(
      handled(async (instance: string, options: ClientOptions) => {
        const view = await clientFor(options).kill(instance);
        process.stdout.write(`${instanceName(view)}: ${view.state}\n`);
      }),
    );
}

/**
 * `drover hold|drain|run INSTANCE`; exported for `run`, which is also the daemon command. Reports
 * failures like the other client commands: `drover: <error>` and exit code 1.
 */
export async function setIdleBehaviorCommand(instance: string, behavior: IdleBehavior, options: ClientOptions): Promise<void> {
  await handled(() => setIdleBehavior(instance, behavior, options))();
}

async function setIdleBehavior(instance: string, behavior: IdleBehavior, options: ClientOptions): Promise<void> {
  const view = await clientFor(options).setIdleBehavior(instance, behavior);
  process.stdout.write(`${instanceName(view)}: idle behaviour ${view.idleBehavior} (${view.state})\n`);
}

function clientCommand(program: Command, name: string): Command {
  return program
    .command(name)
    .option('-c, --config <path>', `config file naming the daemon's address and token file (default ${defaultClientConfig})`)
    .option('--url <url>', "the daemon's URL (default: DROVER_URL, else from the config)");
}

function clientFor(options: ClientOptions): ApiClient {
  return new ApiClient(resolveClientSettings({ config: options.config, url: options.url }));
}

/**
 * Wraps an action so the failures an operator can act on print as `drover: <reason>` with exit
 * code 1. Anything else (a bug) still escapes with its stack, and ConfigError reaches main's handler.
 */
function handled<A extends unknown[]>(action: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await action(...args);
    } catch (err) {
      if (!(err instanceof ApiError || err instanceof ApiUnreachableError || err instanceof ClientSettingsError)) throw err;
      process.stderr.write(`drover: ${err.message}\n`);
      process.exitCode = 1;
    }
  };
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

interface Interrupt {
  signal: AbortSignal;
  /** Gives Ctrl-C back its default effect: ending the process. */
  stop(): void;
}

function listenForInterrupt(): Interrupt {
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  process.on('SIGINT', onInterrupt);
  return { signal: controller.signal, stop: () => process.off('SIGINT', onInterrupt) };
}

/** Polls until the container is final, prints its output and returns the exit code the CLI should end with. */
async function waitFor(client: ApiClient, uuid: string, cancelOnInterrupt: boolean, interrupt: Interrupt): Promise<number> {
  let container: Container;
  try {
    for (;;) {
      container = await client.get(uuid, interrupt.signal);
      if (finalStates.has(container.state)) break;
      await sleep(pollIntervalMs, undefined, { signal: interrupt.signal });
    }
  } catch (err) {
    if (!interrupt.signal.aborted) throw err;
    // Waiting is over; a second Ctrl-C (say, while the cancel hangs) should end the CLI the usual way.
    interrupt.stop();
    if (cancelOnInterrupt) {
      const cancelled = await client.cancel(uuid);
      process.stderr.write(`drover: interrupted; ${uuid} is ${cancelled.state}\n`);
    } else {
      process.stderr.write(`drover: stopped waiting; ${uuid} was not cancelled (drover cancel ${uuid} cancels it)\n`);
    }
    return interruptedExitCode;
  }

  process.stdout.write(await client.logs(uuid));
  switch (container.state) {
    case 'complete':
      return exitCodeOf(container.exitCode ?? 0);
    case 'cancelled':
      process.stderr.write(`drover: ${uuid} was cancelled${container.reason ? `: ${container.reason}` : ''}\n`);
      return interruptedExitCode;
    default:
      process.stderr.write(`drover: ${uuid} failed${container.reason ? `: ${container.reason}` : ''}\n`);
      return container.exitCode === null ? 1 : exitCodeOf(container.exitCode);
  }
}

// A process exit status is one byte; a code outside it (a runner's -1, say) must not wrap around to 0.
function exitCodeOf(code: number): number {
  return code >= 0 && code <= 255 ? code : 1;
}

function containerTable(containers: Container[], now: number): string {
  return table(
    ['UUID', 'STATE', 'PRIORITY', 'ATTEMPTS', 'EXIT', 'INSTANCE', 'AGE'],
    containers.map((c) => [
      c.uuid,
      c.state,
      String(c.priority),
      String(c.attempts),
      c.exitCode === null ? '-' : String(c.exitCode),
      c.instanceId ?? '-',
      formatAge(now - c.submittedAt),
    ]),
  );
}

// An orphan's TYPE is its unknown type tag and its STATE is `orphan`; it has no idle behaviour or containers.
function instanceTable(instances: InstanceEntry[]): string {
  return table(
    ['INSTANCE', 'TYPE', 'STATE', 'IDLE', 'RUNNING'],
    instances.map((i) =>
      i.orphan
        ? [i.instanceId, i.instanceTypeTag ?? '-', 'orphan', '-', '-']
        : [instanceName(i), i.instanceType, i.state, i.idleBehavior, String(i.running.length)],
    ),
  );
}

/** What the operator should do about the orphans in the listing; null if there are none. */
function orphanHint(instances: InstanceEntry[]): string | null {
  const orphans = instances.filter((i) => i.orphan).length;
  if (orphans === 0) return null;
  const [count, carry, it, its] = orphans === 1 ? ['1 orphan', 'carries', 'it', 'its'] : [`${orphans} orphans`, 'carry', 'them', 'their'];
  return (
    `hint: ${count} ${carry} this pool's tag but an instance type the config does not define (${its} TYPE above); ` +
    `the pool neither counts nor manages ${it}, and \`drover kill\` cannot reach ${it}. ` +
    `Destroy ${it} with the cloud's own tools, or add ${its} type to instanceTypes in the config.\n`
  );
}

// An instance still being created has no cloud id yet; its worker id is what the pool accepts instead.
function instanceName(view: InstanceView): string {
  return view.instanceId ?? view.workerId;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .concat('\n');
  return [header, ...rows].map(line).join('');
}

function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}
