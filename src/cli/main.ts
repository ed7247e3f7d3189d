#!/usr/bin/env node
// The drover command line.
import { Command } from 'commander';
import { UnsupportedDriverError } from '../cloud/from-config.js';
import { ConfigError, loadConfig } from '../config/load.js';
import { startDaemon } from '../daemon/daemon.js';
import { StateLockedError } from '../daemon/state-lock.js';
import { StatePermissionError } from '../daemon/state-permissions.js';
import { runSample } from '../daemon/sample.js';
import { registerClientCommands, setIdleBehaviorCommand } from './commands.js';

const program = new Command('drover').description('Dispatches containers onto a pool of cloud VMs it manages itself.');

program
  .command('run')
  .description("run the daemon; with INSTANCE, set that instance's idle behaviour back to run (undoes hold and drain)")
  .argument('[instance]', 'an instance of the running daemon')
  .option('-c, --config <path>', 'config file', 'config/loopback.yml')
  .option('--url <url>', "with INSTANCE: the daemon's URL (default: DROVER_URL, else from the config)")
  .option('--sample', 'also dispatch one sample container and log its output when it finishes')
  .action(async (instance: string | undefined, options: { config: string; url?: string; sample?: boolean }, command: Command) => {
    if (instance !== undefined) {
      const config = command.getOptionValueSource('config') === 'default' ? undefined : options.config;
      await setIdleBehaviorCommand(instance, 'run', { config, url: options.url });
      return;
    }
    const daemon = await startDaemon(loadConfig(options.config), { configPath: options.config });
    if (options.sample) {
      void runSample(daemon.queue).then((container) => {
        daemon.logger.info(
          { containerUuid: container.uuid, state: container.state, exitCode: container.exitCode, instanceId: container.instanceId, output: container.logTail, reason: container.reason },
          'sample container finished',
        );
      });
    }
    const stop = () => {
      daemon.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          daemon.logger.error({ err }, 'drover did not stop cleanly');
          process.exit(1);
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

registerClientCommands(program);

try {
  await program.parseAsync();
} catch (error) {
  // Operator mistakes get their message alone, no stack: it already names the key and the fix.
  if (
    error instanceof ConfigError || error instanceof UnsupportedDriverError || error instanceof StateLockedError ||
    error instanceof StatePermissionError
  ) {
    process.stderr.write(`drover: ${error.message}\n`);
    process.exit(2);
  }
  if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
    process.stderr.write(`drover: http.port: ${(error as Error).message}; is another daemon running? Stop it or set another port\n`);
    process.exit(2);
  }
  throw error;
}
