// `drover teardown [--yes] [--config FILE]`: destroys every instance of the pool, with the daemon stopped.
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { defaultConfigDescription, defaultConfigPath } from '../config/home.js';
import { loadConfig } from '../config/load.js';
import { StateLockedError } from '../daemon/state-lock.js';
import { everythingGone, teardown, TeardownListError } from '../daemon/teardown.js';
import { teardownExitCodes } from './exit-codes.js';
import { refusal } from './refusals.js';

/** Exits with teardownExitCodes. */
export function registerTeardownCommand(program: Command): void {
  program
    .command('teardown')
    .description("destroy every instance carrying this pool's tag (orphans too), and the containers on them; the daemon must be stopped")
    .option('-c, --config <path>', `config file (default ${defaultConfigDescription})`)
    .option('-y, --yes', 'destroy without asking (needed when stdin is not a terminal)')
    .action(async (options: { config?: string; yes?: boolean }) => {
      const configPath = options.config ?? defaultConfigPath();
      let refused = false;
      const confirm = async (question: string): Promise<boolean> => {
        if (options.yes) return true;
        if (!process.stdin.isTTY) {
          refused = true;
          process.stderr.write('drover: teardown: stdin is not a terminal, so it cannot ask; run it again with --yes to destroy them\n');
          return false;
        }
        const terminal = createInterface({ input: process.stdin, output: process.stdout });
        try {
          return /^y(es)?$/i.test((await terminal.question(`${question} `)).trim());
        } finally {
          terminal.close();
        }
      };
      try {
        const report = await teardown({
          config: loadConfig(configPath),
          configPath,
          confirm,
          print: (line) => process.stdout.write(`${line}\n`),
        });
        process.exitCode = refused ? teardownExitCodes.refused : everythingGone(report) ? teardownExitCodes.allGone : teardownExitCodes.somethingLeft;
      } catch (error) {
        if (error instanceof TeardownListError) {
          process.stderr.write(`drover: ${error.message}\n`);
          process.exitCode = teardownExitCodes.somethingLeft;
          return;
        }
        const message = refusal(error);
        if (message === undefined) throw error;
        // The lock's message ends with "stop it first"; this finishes the sentence.
        const next = error instanceof StateLockedError ? ', then run drover teardown again; nothing was destroyed' : '';
        process.stderr.write(`drover: ${message}${next}\n`);
        process.exitCode = teardownExitCodes.refused;
      }
    });
}
