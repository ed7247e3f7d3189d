// Requests that ride out a daemon restart: `submit --wait` and `logs --follow` keep asking a daemon that does not answer, for a while.
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiUnreachableError, type ApiClient } from './client.js';
import type { Interrupt } from './interrupt.js';

/** Time as the retries see it; tests pass a virtual one so a bound is reached without waiting it out. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`; rejects when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, undefined, { signal }),
};

/** How long an unreachable daemon is retried by default: a restart takes seconds. */
export const defaultRetryForMs = 60_000;

export interface DaemonRetryOptions {
  /** The daemon's URL as the messages name it, asked for each message: a restarted daemon may be at another (http.port 0). */
  url: () => string;
  /** How long the daemon may stay unreachable before the request fails; 0 gives up at once. */
  retryForMs: number;
  /** The pause between two tries. */
  intervalMs: number;
  /** Aborts the requests and the pauses between them (Ctrl-C). */
  signal: AbortSignal;
  clock?: Clock;
  /** Where the two messages go (one when the daemon stops answering, one when it is back); stderr by default. */
  warn?: (line: string) => void;
}

/** How `logs --follow` and `submit --wait` poll the daemon. */
export interface PollOptions {
  interrupt: Interrupt;
  /** How long an unreachable daemon is retried (DaemonRetry). */
  retryForMs: number;
  /** The pause between two polls. */
  intervalMs: number;
  clock?: Clock;
}

/** The DaemonRetry a poll asks the client's daemon through, until Ctrl-C. */
export function daemonRetry(client: ApiClient, options: PollOptions): DaemonRetry {
  const { retryForMs, intervalMs, interrupt, clock } = options;
  return new DaemonRetry({ url: () => client.url, retryForMs, intervalMs, signal: interrupt.signal, clock });
}

/**
 * Runs requests to the daemon, retrying one that finds the daemon unreachable until it answers or
 * has been unreachable for `retryForMs`. Only unreachability is retried: an answer, even an error,
 * means the daemon is up. The time counts from the first failure since the last answer, across
 * requests, so a daemon that never answers is given `retryForMs` in all, not per request.
 */
export class DaemonRetry {
  private unreachableSince: number | null = null;
  private readonly clock: Clock;
  private readonly warn: (line: string) => void;

  constructor(private readonly options: DaemonRetryOptions) {
    this.clock = options.clock ?? realClock;
    this.warn = options.warn ?? ((line) => process.stderr.write(line));
  }

  async call<T>(request: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const { url, retryForMs, intervalMs, signal } = this.options;
    for (;;) {
      try {
        const result = await request(signal);
        if (this.unreachableSince !== null) {
          this.unreachableSince = null;
          this.warn(`drover: the daemon at ${url()} is answering again\n`);
        }
        return result;
      } catch (err) {
        if (!(err instanceof ApiUnreachableError)) throw err;
        const now = this.clock.now();
        if (this.unreachableSince === null) {
          this.unreachableSince = now;
          if (retryForMs > 0) this.warn(`drover: the daemon at ${url()} is not answering; retrying for up to ${seconds(retryForMs)}\n`);
        }
        const left = this.unreachableSince + retryForMs - now;
        if (left <= 0) {
          throw retryForMs > 0 ? new ApiUnreachableError(`${err.message}; gave up after retrying for ${seconds(retryForMs)}`) : err;
        }
        await this.clock.sleep(Math.min(intervalMs, left), signal);
      }
    }
  }
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10}s`;
}
