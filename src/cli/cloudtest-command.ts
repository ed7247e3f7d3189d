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
  return report.failure === null ? cloudtestExitCodes.passed : cloudtestExitCodes.failed;
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
      try {
        const report = await cloudtest({
          config: loadConfig(configPath),
          instanceType: options.type,
          print: (line) => process.stdout.write(`${line}\n`),
        });
        const { failure, leftBehind } = report;
        if (failure !== null) {
          const left =
            leftBehind === null
              ? '; what it created is gone'
              : `; NOT destroyed: ${leftBehind.instanceId ?? `the instance tagged drover-create-token=${report.createToken}, if any`}, remove it yourself`;
          process.stderr.write(`drover: cloudtest failed at step ${failure.step}: ${failure.message}${left}\n`);
        }
        process.exitCode = cloudtestExitCode(report);
      } catch (error) {
        const message = error instanceof CloudtestRefusedError ? error.message : refusal(error);
        if (message === undefined) throw error;
        process.stderr.write(`drover: ${message}\n`);
        process.exitCode = cloudtestExitCodes.refused;
      }
    });
}
