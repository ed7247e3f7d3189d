// `drover submit --wait`: polls a container until it is final, through a daemon restart, then prints its output.
import { finalStates, type Container } from '../queue/types.js';
import type { ApiClient } from './client.js';
import { exitCodes } from './exit-codes.js';
import { daemonRetry, realClock, type PollOptions } from './retry.js';

export interface WaitOptions extends PollOptions {
  /** Ctrl-C also cancels the container (else it only stops waiting). */
  cancelOnInterrupt: boolean;
}

/**
 * Waits until the container is final, prints its output on stdout and returns the exit code the
 * CLI should end with: the container's own when it ran and exited, else one of exitCodes.
 */
export async function waitFor(client: ApiClient, uuid: string, options: WaitOptions): Promise<number> {
  const { interrupt, intervalMs } = options;
  const clock = options.clock ?? realClock;
  const daemon = daemonRetry(client, options);
  let container: Container;
  try {
    for (;;) {
      container = await daemon.call((signal) => client.get(uuid, signal));
      if (finalStates.has(container.state)) break;
      await clock.sleep(intervalMs, interrupt.signal);
    }
  } catch (err) {
    if (!interrupt.signal.aborted) throw err;
    // Waiting is over; a second Ctrl-C (say, while the cancel hangs) should end the CLI the usual way.
    interrupt.stop();
    if (options.cancelOnInterrupt) {
      const cancelled = await client.cancel(uuid);
      process.stderr.write(`drover: interrupted; ${uuid} is ${cancelled.state}\n`);
    } else {
      process.stderr.write(`drover: stopped waiting; ${uuid} was not cancelled (drover cancel ${uuid} cancels it)\n`);
    }
    return exitCodes.interrupted;
  }

  let output: string;
  try {
    output = await daemon.call((signal) => client.logs(uuid, signal));
  } catch (err) {
    if (!interrupt.signal.aborted) throw err;
    // The container is final: there is nothing to cancel, only its output left unprinted.
    process.stderr.write(`drover: interrupted; ${uuid} is ${container.state}, its output was not printed (drover logs ${uuid} prints it)\n`);
    return exitCodes.interrupted;
  }
  process.stdout.write(output);
  const reason = container.reason ? `: ${container.reason}` : '';
  switch (container.state) {
    case 'complete':
      return passedThrough(uuid, container.exitCode ?? 0);
    case 'cancelled':
      process.stderr.write(`drover: ${uuid} was cancelled${reason}\n`);
      return exitCodes.cancelled;
    default:
      process.stderr.write(`drover: ${uuid} failed${reason}\n`);
      return container.exitCode === null ? exitCodes.containerFailed : passedThrough(uuid, container.exitCode);
  }
}

// A process exit status is one byte; a code outside it (a runner's -1, say) must not wrap around to
// another, so it counts as no exit code of the container's own.
function passedThrough(uuid: string, code: number): number {
  if (Number.isInteger(code) && code >= 0 && code <= 255) return code;
  process.stderr.write(`drover: ${uuid} ended with exit code ${code}, which is no process exit status\n`);
  return exitCodes.containerFailed;
}
