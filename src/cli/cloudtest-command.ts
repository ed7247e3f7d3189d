// `drover cloudtest [--config FILE] [--type T]`: checks the configured cloud end to end with one instance.
import type { Command } from 'commander';
import { defaultConfigDescription, defaultConfigPath } from '../config/home.js';
import { loadConfig } from '../config/load.js';
import { cloudtest, cloudtestPoolTag, CloudtestRefusedError, type CloudtestReport } from '../daemon/cloudtest.js';
import { cloudtestExitCodes } from './exit-codes.js';
import { refusal } from './refusals.js';

/** What `drover cloudtest` exits with for a finished run. */
export function cloudtestExitCode(report: CloudtestReport): number {
  if (report.leftBehind !== null) return cloudtestExitCodes.instanceLeft;
  if (report.interrupted) return cloudtestExitCodes.interrupted;
  return report.failure === null ? cloudtestExitCodes.passed : cloudtestExitCodes.failed;
}

/**
 * Ctrl-C or SIGTERM: the first aborts the run, which cleans up as after a failure (nobody else
 * would ever destroy its instance); a second ends the process at once, naming what may be left.
 */
function listenForSignals(): { interrupt: AbortSignal; onMayBeLeft: (what: string | null) => void; stop: () => void } {
  const controller = new AbortController();
  let mayBeLeft: string | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!controller.signal.aborted) {
      process.stderr.write(`drover: ${signal}: cleaning up (destroying what cloudtest made and waiting for it to go); a second signal stops at once\n`);
      controller.abort(signal);
      return;
    }
    if (mayBeLeft === null) {
      process.stderr.write(`drover: ${signal} again: stopped; nothing cloudtest made is left\n`);
      process.exit(cloudtestExitCodes.interrupted);
    }
    process.stderr.write(`drover: ${signal} again: stopped before the clean-up finished; may be left: ${mayBeLeft}; remove it with the cloud's own console or CLI\n`);
    process.exit(cloudtestExitCodes.instanceLeft);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    interrupt: controller.signal,
    onMayBeLeft: (what) => {
      mayBeLeft = what;
    },
    stop: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Exits with cloudtestExitCodes. */
export function registerCloudtestCommand(program: Command): void {
  program
    .command('cloudtest')
    .description(
      `create one instance, reach it over SSH, install the runner, tag it and destroy it, timing each step; ` +
        `it carries the pool tag ${cloudtestPoolTag('<poolName>')}, so it may run beside a daemon`,
    )
    .option('-c, --config <path>', `config file (default ${defaultConfigDescription})`)
    .option('-t, --type <name>', 'instance type to create (default: the cheapest in the config)')
    .action(async (options: { config?: string; type?: string }) => {
      const configPath = options.config ?? defaultConfigPath();
      const signals = listenForSignals();
      try {
        const report = await cloudtest({
          config: loadConfig(configPath),
          instanceType: options.type,
          print: (line) => process.stdout.write(`${line}\n`),
          interrupt: signals.interrupt,
          onMayBeLeft: signals.onMayBeLeft,
        });
        const { failure, leftBehind } = report;
        if (failure !== null) {
          const left =
            leftBehind === null
              ? '; what it created is gone'
              : leftBehind.instanceId === null
                ? `; may have left an instance with create token ${report.createToken}; look for tag drover-create-token=${report.createToken} and remove it yourself`
                : `; NOT destroyed: ${leftBehind.instanceId}, remove it yourself`;
          const what = report.interrupted ? `interrupted at step ${failure.step} (${String(signals.interrupt.reason)})` : `failed at step ${failure.step}: ${failure.message}`;
          process.stderr.write(`drover: cloudtest ${what}${left}\n`);
        }
        process.exitCode = cloudtestExitCode(report);
      } catch (error) {
        const message = error instanceof CloudtestRefusedError ? error.message : refusal(error);
        if (message === undefined) throw error;
        process.stderr.write(`drover: ${message}\n`);
        process.exitCode = cloudtestExitCodes.refused;
      } finally {
        signals.stop();
      }
    });
}
