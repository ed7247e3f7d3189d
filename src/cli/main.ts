#!/usr/bin/env node
// The drover command line.
import { Command } from 'commander';
import { UnsupportedDriverError } from '../cloud/from-config.js';
import { ConfigError, loadConfig } from '../config/load.js';
import { startDaemon } from '../daemon/daemon.js';

const program = new Command('drover').description('Dispatches containers onto a pool of cloud VMs it manages itself.');

program
  .command('run')
  .description('run the daemon')
  .option('-c, --config <path>', 'config file', 'config/stub.yml')
  .action((options: { config: string }) => {
    const daemon = startDaemon(loadConfig(options.config));
    const stop = () => {
      daemon.stop();
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

try {
  await program.parseAsync();
} catch (error) {
  // Operator mistakes get their message alone, no stack: it already names the key and the fix.
  if (error instanceof ConfigError || error instanceof UnsupportedDriverError) {
    process.stderr.write(`drover: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
}
