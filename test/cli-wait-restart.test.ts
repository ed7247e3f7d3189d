// `drover submit --wait` rides out a daemon restart, and gives up on a daemon gone for longer than its bound.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, ApiError, ApiUnreachableError } from '../src/cli/client.js';
import { exitCodes } from '../src/cli/exit-codes.js';
import { DaemonRetry, type Clock } from '../src/cli/retry.js';
import { removeDaemonUrl, writeDaemonUrl } from '../src/daemon/url-file.js';
import { startServer, type ApiDeps } from '../src/http/server.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { apiFixture, type ApiFixture } from './support/api-fixture.js';
import { closedUrl, runDrover } from './support/run-drover.js';
import { shippedConfig } from './support/shipped-config.js';

const token = 'wait-restart-token';

let dir: string;
let queue: SqliteQueue;
let deps: ApiDeps;
let fixture: ApiFixture;

beforeAll(() => {
  fixture = apiFixture({ prefix: 'drover-wait-restart-', token });
  ({ dir, queue, deps } = fixture);
});

afterAll(() => {
  fixture.close();
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

describe('with http.port 0', () => {
  /** A DROVER_HOME whose config has the daemon pick its port, with the token file the daemon wrote; the CLI is told nothing else. */
  function portZeroHome(): { env: NodeJS.ProcessEnv; urlFile: string } {
    const home = join(dir, `home-${Math.random().toString(36).slice(2)}`);
    mkdirSync(home, { mode: 0o700 });
    writeFileSync(join(home, 'config.yml'), shippedConfig('loopback.yml', { 'http.port': 0 }));
    writeFileSync(join(home, 'token'), `${token}\n`, { mode: 0o600 });
    const { DROVER_URL: _url, DROVER_TOKEN: _token, ...inherited } = process.env;
    return { env: { ...inherited, DROVER_HOME: home }, urlFile: join(home, 'daemon.url') };
  }

  it('follows a restarted daemon to its new port, read again from daemon.url', async () => {
    const { env, urlFile } = portZeroHome();
    const first = await startServer(deps, { address: '127.0.0.1', port: 0 });
    writeDaemonUrl(urlFile, first.url);
    // Up before the first goes down, so the system cannot hand it the same port.
    const second = await startServer(deps, { address: '127.0.0.1', port: 0 });
    let phase: 'submitted' | 'stopped' | 'restarted' = 'submitted';
    try {
      const result = await runDrover(['submit', '--wait', '--retry-for', '10', '--', 'sh', '-c', 'echo out; exit 5'], env, (stderr) => {
        const uuid = /^([0-9a-f-]{36})\n/.exec(stderr)?.[1];
        if (phase === 'submitted' && uuid !== undefined) {
          // The daemon stops as a stopped daemon does: it removes its daemon.url.
          phase = 'stopped';
          removeDaemonUrl(urlFile, first.url);
          void first.close();
        } else if (phase === 'stopped' && uuid !== undefined && stderr.includes('is not answering')) {
          phase = 'restarted';
          queue.lock(uuid, 'i-1', 'small');
          queue.markRunning(uuid, 'i-1', 'small');
          queue.complete(uuid, 5, 'out\n');
          writeDaemonUrl(urlFile, second.url);
        }
      });
      const uuid = /^([0-9a-f-]{36})\n/.exec(result.stderr)?.[1];
      expect(result.stderr).toBe(
        `${uuid}\n` +
          `drover: the daemon at ${first.url} is not answering; retrying for up to 10s\n` +
          `drover: the daemon at ${second.url} is answering again\n`,
      );
      expect(result.stdout).toBe('out\n');
      expect(result.code).toBe(5);
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('counts a daemon.url that stays gone as the daemon unreachable: retried, then the unreachable code', async () => {
    const { env, urlFile } = portZeroHome();
    const server = await startServer(deps, { address: '127.0.0.1', port: 0 });
    writeDaemonUrl(urlFile, server.url);
    let stopped = false;
    try {
      const result = await runDrover(['submit', '--wait', '--retry-for', '1', '--', 'true'], env, (stderr) => {
        if (!stopped && /^[0-9a-f-]{36}\n/.test(stderr)) {
          stopped = true;
          removeDaemonUrl(urlFile, server.url);
          void server.close();
        }
      });
      expect(result.code).toBe(exitCodes.unreachable);
      expect(result.stderr).toContain(`drover: the daemon at ${server.url} is not answering; retrying for up to 1s\n`);
      expect(result.stderr).toMatch(
        new RegExp(`drover: cannot reach the drover daemon: http\\.port is 0 in \\S+, so its URL is read from ${urlFile}, which does not exist; .*; gave up after retrying for 1s\\n$`),
      );
    } finally {
      await server.close();
    }
  });

  it('exits with the unreachable code, not the settings one, when no daemon.url is there at all', async () => {
    const { env, urlFile } = portZeroHome();
    const result = await runDrover(['containers'], env);
    expect(result.code).toBe(exitCodes.unreachable);
    expect(result.stderr).toContain(`so its URL is read from ${urlFile}, which does not exist; is the daemon running (drover run)? Or set DROVER_URL\n`);
  });
});

describe('DaemonRetry', () => {
  it('gives up once the daemon has not answered for the bound, after one message', async () => {
    const clock = virtualClock();
    const warnings: string[] = [];
    const url = await closedUrl();
    const client = new ApiClient({ url, token });
    const retry = new DaemonRetry({ url: () => client.url, retryForMs: 60_000, intervalMs: 500, signal: new AbortController().signal, clock, warn: (line) => warnings.push(line) });
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
    const retry = new DaemonRetry({ url: () => 'http://daemon', retryForMs: 10_000, intervalMs: 1000, signal: new AbortController().signal, clock, warn: (line) => warnings.push(line) });
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
    const retry = new DaemonRetry({ url: () => 'http://daemon', retryForMs: 10_000, intervalMs: 1000, signal: new AbortController().signal, clock, warn: () => undefined });
    await expect(retry.call(() => Promise.reject(new ApiError(404, 'no container x')))).rejects.toThrow('no container x');
    expect(clock.now()).toBe(0);
  });
});
