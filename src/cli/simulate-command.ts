// `drover simulate --config FILE --trace FILE [--out DIR] [--seed N] [--until DURATION]`: replays a
// trace through the real pool and scheduler on the stub cloud, writes summary.json and chart.svg.
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { parseDuration } from '../config/duration.js';
import { loadConfig } from '../config/load.js';
import { idlePolicyNames, type IdlePolicyName } from '../pool/idle-policy.js';
import { renderChart } from '../sim/chart.js';
import { simulate, type SimulationProgress, type SimulationSummary } from '../sim/simulate.js';
import { readTrace, TraceError } from '../sim/trace.js';
import { estimatorPlan } from '../scheduler/estimator.js';
import { plan } from '../scheduler/plan.js';
import { simulateExitCodes } from './exit-codes.js';
import { refusal } from './refusals.js';

/** Who decides creates and idling: Drover's scheduling pass, or Taskcluster's estimator as a baseline. */
const policies = { drover: plan, estimator: estimatorPlan } as const;
type Policy = keyof typeof policies;

interface SimulateOptions {
  config: string;
  trace: string;
  out?: string;
  seed?: number;
  until?: number;
  policy: Policy;
  idlePolicy?: IdlePolicyName;
}

function integer(text: string): number {
  if (!/^-?\d+$/.test(text)) throw new InvalidArgumentError(`expected an integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

function duration(text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** The figures an operator reads first, one per line. */
export function headline(summary: SimulationSummary): string {
  const { containers, cost, waitSeconds, instances } = summary;
  return [
    `containers: ${containers.submitted} submitted, ${containers.completed} completed, ${containers.failed} failed, ${containers.lost} lost, ${containers.ranTwice} ran twice`,
    `cost: $${cost.dollars.toFixed(2)} (lower bound $${cost.lowerBoundDollars.toFixed(2)}, ratio ${cost.ratio === null ? '-' : cost.ratio.toFixed(3)})`,
    `wait: p50 ${waitSeconds.p50} s, p95 ${waitSeconds.p95} s, p99 ${waitSeconds.p99} s, max ${waitSeconds.max} s`,
    `instances: ${instances.created} created, at most ${instances.maxAtOnce} at once, ${instances.bootFailures} boot failures`,
    `time: ${(summary.simulatedSeconds / 3_600).toFixed(2)} h simulated in ${summary.wallSeconds.toFixed(1)} s (${Math.round(summary.speedup)}x)${summary.ended === 'until' ? ', stopped at --until' : ''}`,
  ].join('\n');
}

function progressLine(progress: SimulationProgress): string {
  return `\r${(progress.simulatedMs / 3_600_000).toFixed(2)} h simulated, ${progress.ended}/${progress.total} containers ended, ${progress.instances} instances  `;
}

export function registerSimulateCommand(program: Command): void {
  program
    .command('simulate')
    .description('replay a trace of containers through the real pool and scheduler on the simulated (stub) cloud, on a virtual clock')
    .requiredOption('-c, --config <path>', "config file: its instance types, pool, scheduler and cloud.stub faults (whatever its driver)")
    .requiredOption('-t, --trace <path>', 'CSV with a header: submit_s,duration_s,vcpus,ram_mib[,priority]')
    .option('-o, --out <dir>', 'where summary.json and chart.svg go (default simulate-<trace name>)')
    .option('--seed <n>', "seed of the stub's faults and boot delays (default cloud.stub.seed)", integer)
    .option('--until <duration>', 'stop after this much simulated time (e.g. 12h) even if work remains', duration)
    .addOption(
      new Option('--policy <policy>', "who decides creates and idling: drover, or Taskcluster worker-manager's estimator (a baseline)")
        .choices(Object.keys(policies))
        .default('drover'),
    )
    .addOption(
      new Option('--idle-policy <policy>', "how long idle instances wait for work, overriding the config's pool.idlePolicy (the estimator always uses fixed)").choices(
        idlePolicyNames,
      ),
    )
    .action(async (options: SimulateOptions) => {
      try {
        const loaded = loadConfig(options.config);
        // The estimator's baseline idles out after timeoutIdle, as Taskcluster's workers do.
        const idlePolicy = options.policy === 'estimator' ? 'fixed' : (options.idlePolicy ?? loaded.pool.idlePolicy);
        const config = { ...loaded, pool: { ...loaded.pool, idlePolicy } };
        const trace = readTrace(options.trace);
        const out = resolve(options.out ?? `simulate-${basename(options.trace).replace(/\.[^.]*$/, '')}-${options.policy}`);
        const showProgress = process.stderr.isTTY === true;
        const { summary, chart } = await simulate({
          config,
          trace,
          ...(options.seed !== undefined && { seed: options.seed }),
          untilMs: options.until ?? null,
          planner: policies[options.policy],
          ...(showProgress && { onProgress: (progress: SimulationProgress) => process.stderr.write(progressLine(progress)) }),
        });
        if (showProgress) process.stderr.write('\n');
        mkdirSync(out, { recursive: true });
        writeFileSync(join(out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
        writeFileSync(join(out, 'chart.svg'), renderChart(chart, { title: `${basename(options.trace)}: instances by state and queued containers` }));
        process.stdout.write(`${headline(summary)}\nwrote ${join(out, 'summary.json')} and ${join(out, 'chart.svg')}\n`);
        process.exitCode = summary.containers.lost > 0 || summary.containers.ranTwice > 0 ? simulateExitCodes.invariantBroken : simulateExitCodes.ran;
      } catch (error) {
        const message = error instanceof TraceError ? error.message : refusal(error);
        if (message === undefined) throw error;
        process.stderr.write(`drover: ${message}\n`);
        process.exitCode = simulateExitCodes.refused;
      }
    });
}
