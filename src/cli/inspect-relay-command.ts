// `drover inspect-relay [--port N] [--host ADDRESS]`: the relay a daemon streams its actors to and
// the Stately inspector page reads them from, on a loopback address only (src/inspect/relay.ts).
import { InvalidArgumentError, type Command } from 'commander';
import { NonLoopbackHostError, startInspectorRelay } from '../inspect/relay.js';
import { defaultRelayPort } from '../inspect/settings.js';
import { inspectRelayExitCodes } from './exit-codes.js';

function port(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value > 65535) throw new InvalidArgumentError(`expected a port from 0 to 65535, got ${JSON.stringify(text)}`);
  return value;
}

/** Exits with inspectRelayExitCodes. */
export function registerInspectRelayCommand(program: Command): void {
  program
    .command('inspect-relay')
    .description('relay a daemon started with --inspect to the Stately inspector in a browser; loopback only, until SIGINT or SIGTERM')
    .option('--port <port>', `port to listen on (0: any free one)`, port, defaultRelayPort)
    .option('--host <address>', 'loopback address to listen on: 127.0.0.1 or ::1', '127.0.0.1')
    .action(async (options: { port: number; host: string }) => {
      const say = (line: string) => process.stderr.write(`drover inspect-relay: ${line}\n`);
      let relay: Awaited<ReturnType<typeof startInspectorRelay>>;
      try {
        relay = await startInspectorRelay({ host: options.host, port: options.port, log: say });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (error instanceof NonLoopbackHostError) say(error.message);
        else if (code === 'EADDRINUSE') say(`--port ${options.port}: already in use (another relay?); choose another with --port`);
        else if (code === 'EADDRNOTAVAIL') say(`--host ${options.host}: not an address of this machine`);
        else throw error;
        process.exit(inspectRelayExitCodes.refused);
      }
      // stdout: what to do next, one line each, for a script to pick the URLs from.
      process.stdout.write(
        [
          `listening on ${relay.url} (this machine only)`,
          `daemon:    drover run --inspect ${relay.url}   (or inspect.url in its config)`,
          `inspector: open ${relay.pageUrl} in a browser on this machine; from another one, first: ssh -L ${relay.port}:${relay.host.includes(':') ? `[${relay.host}]` : relay.host}:${relay.port} <this host>`,
          '',
        ].join('\n'),
      );
      const stop = () => {
        void relay.close().then(() => process.exit(inspectRelayExitCodes.stopped));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
