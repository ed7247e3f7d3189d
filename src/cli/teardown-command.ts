// `drover teardown [--yes] [--config FILE]`: destroys every instance of the pool, with the daemon stopped.
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { UnsupportedDriverError } from '../cloud/from-config.js';
import { defaultConfigDescription, defaultConfigPath } from '../config/home.js';
import { ConfigError, loadConfig } from '../config/load.js';
import { StateLockedError } from '../daemon/state-lock.js';
import { everythingGone, teardown, TeardownListError } from '../daemon/teardown.js';

/** Exit codes: 0 everything gone; 1 something left (or the operator said no); 2 refused before anything was destroyed. */
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
        process.exitCode = refused ? 2 : everythingGone(report) ? 0 : 1;
      } catch (error) {
        if (error instanceof StateLockedError) {
          process.stderr.write(`drover: ${error.message}, then run drover teardown again; nothing was destroyed\n`);
          process.exitCode = 2;
        } else if (error instanceof ConfigError || error instanceof UnsupportedDriverError) {
          process.stderr.write(`drover: ${error.message}\n`);
          process.exitCode = 2;
        } else if (error instanceof TeardownListError) {
          process.stderr.write(`drover: ${error.message}\n`);
          process.exitCode = 1;
        } else {
          throw error;
        }
      }
    });
}
