#!/usr/bin/env node
// The drover command line.
import { Command, InvalidArgumentError, Option } from 'commander';
import { defaultConfigDescription, defaultConfigPath, packageVersion } from '../config/home.js';
import { loadConfig } from '../config/load.js';
import { logFormats, type LogFormat } from '../config/schema.js';
import { startDaemon } from '../daemon/daemon.js';
import { runSample } from '../daemon/sample.js';
import { daemonUrlFile, removeDaemonUrl, writeDaemonUrl } from '../daemon/url-file.js';
import { defaultRelayUrl, inspectorUrlHint, isInspectorUrl } from '../inspect/settings.js';
import { createLogger } from '../log/logger.js';
import { registerCloudtestCommand } from './cloudtest-command.js';
import { registerClientCommands } from './commands.js';
import { registerInspectRelayCommand } from './inspect-relay-command.js';
import { exitWithUsageCode, runExitCodes } from './exit-codes.js';
import { refusal } from './refusals.js';
import { registerSimulateCommand } from './simulate-command.js';
import { registerTeardownCommand } from './teardown-command.js';

const program = new Command('drover')
  .description('Dispatches containers onto a pool of cloud VMs it manages itself.')
  .version(packageVersion(), '-V, --version', "print drover's version");

program
  .command('run')
  .description('run the daemon until SIGINT or SIGTERM')
  .option('-c, --config <path>', `config file (default ${defaultConfigDescription})`)
  .option('--sample', 'also dispatch one sample container and log its output when it finishes')
  .addOption(
    new Option('--log-format <format>', 'log lines: pretty, json, or auto (pretty on a terminal, else JSON); overrides log.format').choices(logFormats),
  )
  .option(
    '--inspect [url]',
    `stream the actors to the Stately inspector through the relay at url (default inspect.url, else ${defaultRelayUrl}: drover inspect-relay); overrides inspect.url`,
    (url: string) => {
      if (!isInspectorUrl(url)) throw new InvalidArgumentError(`${inspectorUrlHint}, got ${JSON.stringify(url)}`);
      return url;
    },
  )
  .action(async (options: { config?: string; sample?: boolean; logFormat?: LogFormat; inspect?: string | true }) => {
    const configPath = options.config ?? defaultConfigPath();
    const loaded = loadConfig(configPath);
    const inspectUrl = options.inspect === true ? (loaded.inspect.url ?? defaultRelayUrl) : (options.inspect ?? loaded.inspect.url);
    const config = { ...loaded, inspect: { ...loaded.inspect, url: inspectUrl } };
    const logger = createLogger({ ...config.log, format: options.logFormat ?? config.log.format });
    const daemon = await startDaemon(config, { configPath, logger });
    // With http.port 0 this is the only way the CLI learns the port; it is written in any case.
    const urlFile = daemonUrlFile(config.http);
    writeDaemonUrl(urlFile, daemon.url);
    if (options.sample) {
      void runSample(daemon.queue).then((container) => {
        daemon.logger.info(
          { containerUuid: container.uuid, state: container.state, exitCode: container.exitCode, instanceId: container.instanceId, output: container.logTail, reason: container.reason ?? undefined },
          'sample container finished',
        );
      });
    }
    const stop = () => {
      removeDaemonUrl(urlFile, daemon.url);
      daemon.stop().then(
        () => process.exit(runExitCodes.stopped),
        (err: unknown) => {
          daemon.logger.error({ err }, 'drover did not stop cleanly');
          process.exit(runExitCodes.notStoppedCleanly);
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

registerClientCommands(program);
registerTeardownCommand(program);
registerCloudtestCommand(program);
registerSimulateCommand(program);
registerInspectRelayCommand(program);
// Once every command is registered, so it reaches each of them.
exitWithUsageCode(program);

try {
  await program.parseAsync();
} catch (error) {
  // Operator mistakes get their message alone, no stack: it already names the key and the fix.
  const message = refusal(error);
  if (message === undefined) throw error;
  process.stderr.write(`drover: ${message}\n`);
  process.exit(runExitCodes.refused);
}
