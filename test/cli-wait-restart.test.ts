// `drover submit --wait` rides out a daemon restart, and gives up on a daemon gone for longer than its bound.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, ApiError, ApiUnreachableError } from '../src/cli/client.js';
import { DaemonRetry, type Clock } from '../src/cli/retry.js';
import { startServer, type ApiDeps } from '../src/http/server.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { closedUrl, runDrover } from './support/run-drover.js';

const token = 'wait-restart-token';

let dir: string;
let queue: SqliteQueue;
let deps: ApiDeps;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'drover-wait-restart-'));
  queue = new SqliteQueue({ path: join(dir, 'queue.sqlite'), maxAttempts: 3 });
  deps = {
    queue,
    pool: { instances: () => [], orphans: () => [], instance: () => undefined, setIdleBehavior: () => undefined, shutdown: () => false },
    token,
    registry: new Registry(),
    logger: pino({ level: 'silent' }),
  };
});

afterAll(() => {
  queue.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Virtual time: each pause moves it on at once. */
function virtualClock(): Clock & { requests: number } {
  let now = 0;
  return {
    requests: 0,
    now: () => now,
    sleep: async (ms) => {
      now += ms;
    },
  };
}

describe('submit --wait through a daemon restart', () => {
  it("keeps polling while the daemon is down, says so once each way, and exits with the container's code", async () => {
    let server = await startServer(deps, { address: '127.0.0.1', port: 0 });
    const port = Number(new URL(server.url).port);
    let phase: 'submitted' | 'stopped' | 'restarted' = 'submitted';
    let restarted: Promise<void> = Promise.resolve();
    try {
      const result = await runDrover(
        ['submit', '--wait', '--', 'sh', '-c', 'echo out; exit 5'],
        { ...process.env, DROVER_URL: server.url, DROVER_TOKEN: token },
        (stderr) => {
          const uuid = /^([0-9a-f-]{36})\n/.exec(stderr)?.[1];
          if (phase === 'submitted' && uuid !== undefined) {
            // The daemon goes away right after accepting the container.
            phase = 'stopped';
            void server.close();
          } else if (phase === 'stopped' && uuid !== undefined && stderr.includes('is not answering')) {
            // Back on the same port, with the same queue; meanwhile the container ran.
            phase = 'restarted';
            queue.lock(uuid, 'i-1', 'small');
            queue.markRunning(uuid, 'i-1', 'small');
            queue.complete(uuid, 5, 'out\n');
            restarted = startServer(deps, { address: '127.0.0.1', port }).then((next) => {
              server = next;
            });
          }
        },
      );
      await restarted;
      const uuid = /^([0-9a-f-]{36})\n/.exec(result.stderr)?.[1];
      expect(result.stderr).toBe(
        `${uuid}\n` +
          `drover: the daemon at ${server.url} is not answering; retrying for up to 60s\n` +
          `drover: the daemon at ${server.url} is answering again\n`,
      );
      expect(result.stdout).toBe('out\n');
      expect(result.code).toBe(5);
    } finally {
      await restarted;
      await server.close();
    }
  });
});

describe('DaemonRetry', () => {
  it('gives up once the daemon has not answered for the bound, after one message', async () => {
    const clock = virtualClock();
    const warnings: string[] = [];
    const url = await closedUrl();
    const client = new ApiClient({ url, token });
    const retry = new DaemonRetry({ url: client.url, retryForMs: 60_000, intervalMs: 500, signal: new AbortController().signal, clock, warn: (line) => warnings.push(line) });
    const failure = await retry
      .call((signal) => {
        clock.requests++;
        return client.get('some-uuid', signal);
      })
      .catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(ApiUnreachableError);
    expect((failure as Error).message).toBe(`cannot reach the drover daemon at ${url}: connect ECONNREFUSED ${url.slice('http://'.length)}; gave up after retrying for 60s`);
    expect(warnings).toEqual([`drover: the daemon at ${url} is not answering; retrying for up to 60s\n`]);
    // Tried at 0, 0.5 s, ... and once more at the bound itself.
    expect(clock.now()).toBe(60_000);
    expect(clock.requests).toBe(121);
  });

  it('gives the daemon the bound in all, not per request, until it answers again', async () => {
    const clock = virtualClock();
    const warnings: string[] = [];
    const retry = new DaemonRetry({ url: 'http://daemon', retryForMs: 10_000, intervalMs: 1000, signal: new AbortController().signal, clock, warn: (line) => warnings.push(line) });
    let down = true;
    const request = async () => {
      if (down) throw new ApiUnreachableError('down');
      return 'answer';
    };
    await expect(retry.call(request)).rejects.toThrow(/gave up after retrying for 10s/);
    expect(clock.now()).toBe(10_000);
    // The next request finds the bound already spent: it does not start one of its own.
    await expect(retry.call(request)).rejects.toThrow(/gave up after retrying for 10s/);
    expect(clock.now()).toBe(10_000);

    down = false;
    await expect(retry.call(request)).resolves.toBe('answer');
    expect(warnings).toEqual([
      'drover: the daemon at http://daemon is not answering; retrying for up to 10s\n',
      'drover: the daemon at http://daemon is answering again\n',
    ]);
  });

  it('does not retry an answer, even an error', async () => {
    const clock = virtualClock();
    const retry = new DaemonRetry({ url: 'http://daemon', retryForMs: 10_000, intervalMs: 1000, signal: new AbortController().signal, clock, warn: () => undefined });
    await expect(retry.call(() => Promise.reject(new ApiError(404, 'no container x')))).rejects.toThrow('no container x');
    expect(clock.now()).toBe(0);
  });
});
