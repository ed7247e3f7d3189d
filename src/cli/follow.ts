// `drover logs UUID --follow`: the output so far, then new output as it comes, until the container is final.
import { finalStates } from '../queue/types.js';
import type { ApiClient } from './client.js';
import { exitCodes } from './exit-codes.js';
import { daemonRetry, realClock, type PollOptions } from './retry.js';

/**
 * Prints the container's output on stdout, each byte once: every poll asks for the output from the
 * size seen last (`since`), and the daemon puts a line in its place when it no longer holds some of
 * it. A new attempt (the container was requeued and started again) starts its output afresh, after
 * a line saying so. Once the container is final, says how it ended on stderr and returns 0;
 * Ctrl-C returns exitCodes.interrupted.
 */
export async function followLogs(client: ApiClient, uuid: string, options: PollOptions): Promise<number> {
  const { interrupt, intervalMs } = options;
  const clock = options.clock ?? realClock;
  const daemon = daemonRetry(client, options);
  let since = 0;
  let attempt: number | null = null;
  try {
    for (;;) {
      // The state before the output: once it says final, the output read after it is the final one.
      const container = await daemon.call((signal) => client.get(uuid, signal));
      const piece = await daemon.call((signal) => client.logsSince(uuid, since, signal));
      // The attempt comes with the output, not with the state read before it: a new attempt may have
      // started in between, and this piece would then be its output from another attempt's `since`.
      if (attempt !== null && piece.attempt !== attempt && since > 0) {
        process.stdout.write(`[drover: attempt ${piece.attempt} started; its output follows]\n`);
        attempt = piece.attempt;
        since = 0;
        continue;
      }
      attempt = piece.attempt;
      process.stdout.write(piece.text);
      // A smaller size means the daemon could not read the live output this time (the stored tail is
      // empty while a container runs): nothing is printed, and the next poll asks again from here.
      since = Math.max(since, piece.totalBytes);
      if (finalStates.has(container.state)) {
        const exit = container.exitCode === null ? '' : `, exit code ${container.exitCode}`;
        // A complete container's reason is why an earlier attempt was requeued, not how it ended.
        const reason = container.reason && container.state !== 'complete' ? `: ${container.reason}` : '';
        process.stderr.write(`drover: ${uuid} ${container.state}${exit}${reason}\n`);
        return exitCodes.ok;
      }
      await clock.sleep(intervalMs, interrupt.signal);
    }
  } catch (err) {
    if (!interrupt.signal.aborted) throw err;
    return exitCodes.interrupted;
  }
}
