// `drover logs UUID --follow` and the logs route's `since`: every byte of output printed once, a drop said in a line.
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../src/cli/exit-codes.js';
import { buildServer, startServer, type ApiDeps } from '../src/http/server.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { logTailMarker, type Container, type ContainerSpec } from '../src/queue/types.js';
import { apiFixture, type ApiFixture } from './support/api-fixture.js';
import { runDrover } from './support/run-drover.js';

const token = 'follow-token';
/** What the fake runner keeps of a container's output, as `drover-runner logs UUID 64` would. */
const tailBytes = 64;

const spec: ContainerSpec = {
  image: null,
  command: ['sh', '-c', 'echo hi'],
  env: {},
  constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
  priority: 0,
};

/** Each running container's output so far, as the runner on its instance holds it: bytes, which may end inside a character. */
const outputs = new Map<string, string | Buffer>();

/**
 * What the daemon makes of `drover-runner logs UUID BYTES`: the last BYTES, after a line saying
 * what was dropped, decoded as the SSH executor does (bytes that are no whole character become U+FFFD).
 */
function runnerTail(output: string | Buffer, bytes: number): string {
  const all = typeof output === 'string' ? Buffer.from(output, 'utf8') : output;
  if (all.length <= bytes) return all.toString('utf8');
  return logTailMarker(all.length, bytes) + all.subarray(all.length - bytes).toString('utf8');
}

let queue: SqliteQueue;
let deps: ApiDeps;
let app: FastifyInstance;
let fixture: ApiFixture;

beforeAll(async () => {
  fixture = apiFixture({
    prefix: 'drover-follow-',
    token,
    liveLogs: async (container: Container) => {
      const output = outputs.get(container.uuid);
      return output === undefined ? null : runnerTail(output, tailBytes);
    },
  });
  ({ queue, deps } = fixture);
  app = buildServer(deps);
  await app.ready();
});

afterAll(async () => {
  await app.close();
  fixture.close();
});

function running(output: string | Buffer): string {
  const { uuid } = queue.submit(spec);
  queue.lock(uuid, 'i-1', 'small');
  queue.markRunning(uuid, 'i-1', 'small');
  outputs.set(uuid, output);
  return uuid;
}

async function logs(uuid: string, query = ''): Promise<{ status: number; text: string; total: string | undefined }> {
  const response = await app.inject({ method: 'GET', url: `/containers/${uuid}/logs${query}`, headers: { authorization: `Bearer ${token}` } });
  return { status: response.statusCode, text: response.body, total: response.headers['drover-output-bytes'] as string | undefined };
}

/** Bytes as printf would write them: `bytes('a', [0xe2, 0x82])`. */
/** Runs each step's action once the CLI's output so far ends with its text, one step at a time and in order. */
function inTurn(steps: [string, () => void][]): (stdout: string) => void {
  return (stdout) => {
    const next = steps[0];
    if (next && stdout.endsWith(next[0])) {
      steps.shift();
      next[1]();
    }
  };
}

function bytes(...parts: (string | number[])[]): Buffer {
  return Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'utf8') : Buffer.from(part))));
}

describe('GET /containers/:uuid/logs', () => {
  it('says how many bytes of output there are, and answers the tail as before without since', async () => {
    const long = `${'x'.repeat(100)}\n`;
    const uuid = running(long);
    expect(await logs(uuid)).toEqual({ status: 200, text: runnerTail(long, tailBytes), total: '101' });
    expect(await logs(running('short\n'))).toEqual({ status: 200, text: 'short\n', total: '6' });
  });

  it('with since, answers the output from that byte on, nothing past its end', async () => {
    const uuid = running('line one\nline two\n');
    expect(await logs(uuid, '?since=0')).toEqual({ status: 200, text: 'line one\nline two\n', total: '18' });
    expect(await logs(uuid, '?since=9')).toEqual({ status: 200, text: 'line two\n', total: '18' });
    expect(await logs(uuid, '?since=18')).toEqual({ status: 200, text: '', total: '18' });
    expect(await logs(uuid, '?since=50')).toEqual({ status: 200, text: '', total: '18' });
  });

  it('with since before what the tail holds, says in a line how many bytes were dropped, then gives the tail', async () => {
    const output = `${'a'.repeat(20)}${'b'.repeat(60)}${'c'.repeat(20)}`;
    const uuid = running(output);
    const { text, total } = await logs(uuid, '?since=20');
    expect(total).toBe('100');
    expect(text).toBe(`[drover: 16 bytes of output, from byte 20 to 36, were dropped before they were read; the daemon keeps the last 64]\n${output.slice(36)}`);
    // Inside the tail, nothing is dropped.
    expect((await logs(uuid, '?since=90')).text).toBe('c'.repeat(10));
  });

  it('counts bytes, and never starts a piece inside a character', async () => {
    const uuid = running('é€x');
    expect(await logs(uuid, '?since=2')).toMatchObject({ text: '€x', total: '6' });
    // Byte 3 is inside '€' (bytes 2 to 4), which the piece ending at byte 3 held the start of.
    expect((await logs(uuid, '?since=3')).text).toBe('x');
  });

  it('leaves a live read ending inside a character out of the text and the count, so the next read gives the character whole', async () => {
    // printf 'a\342\202', then later printf '\254b\n': the euro sign is split across two reads.
    const uuid = running(bytes('a', [0xe2, 0x82]));
    expect(await logs(uuid, '?since=0')).toMatchObject({ text: 'a', total: '1' });
    expect(await logs(uuid)).toMatchObject({ text: 'a', total: '1' });
    outputs.set(uuid, bytes('a', [0xe2, 0x82, 0xac], 'b\n'));
    expect(await logs(uuid, '?since=1')).toMatchObject({ text: '€b\n', total: '6' });
  });

  it('does the same past the kept tail, where the count comes from the runner', async () => {
    // 100 bytes, then the first two of a three-byte character: the runner counts 102.
    const uuid = running(bytes('x'.repeat(100), [0xe2, 0x82]));
    expect(await logs(uuid, '?since=90')).toMatchObject({ text: 'x'.repeat(10), total: '100' });
    outputs.set(uuid, bytes('x'.repeat(100), [0xe2, 0x82, 0xac], 'b\n'));
    expect(await logs(uuid, '?since=100')).toMatchObject({ text: '€b\n', total: '105' });

    // The kept tail also starts inside a character: 40 euro signs (120 bytes) and half of another.
    const euros = running(bytes('€'.repeat(40), [0xe2, 0x82]));
    expect(await logs(euros, '?since=117')).toMatchObject({ text: '€', total: '120' });
    outputs.set(euros, bytes('€'.repeat(41), 'b\n'));
    expect(await logs(euros, '?since=120')).toMatchObject({ text: '€b\n', total: '125' });
  });

  it("keeps a finished container's last U+FFFD: its output will not grow", async () => {
    const uuid = running('');
    outputs.delete(uuid);
    queue.complete(uuid, 0, bytes('a', [0xe2, 0x82]).toString('utf8'));
    expect(await logs(uuid, '?since=1')).toMatchObject({ text: '\uFFFD', total: '4' });
  });

  it('names the attempt the output belongs to', async () => {
    const uuid = running('one\n');
    const first = await app.inject({ method: 'GET', url: `/containers/${uuid}/logs?since=0`, headers: { authorization: `Bearer ${token}` } });
    expect(first.headers['drover-attempt']).toBe('1');
    queue.requeueOrFail(uuid, 'instance i-1 was lost');
    queue.lock(uuid, 'i-2', 'small');
    queue.markRunning(uuid, 'i-2', 'small');
    const second = await app.inject({ method: 'GET', url: `/containers/${uuid}/logs`, headers: { authorization: `Bearer ${token}` } });
    expect(second.headers['drover-attempt']).toBe('2');
  });

  it('refuses a since that is no byte count', async () => {
    const uuid = running('x');
    for (const since of ['-1', 'abc', '1.5']) {
      const { status, text } = await logs(uuid, `?since=${since}`);
      expect(status).toBe(400);
      expect(text).toContain('querystring/since');
    }
  });

  it("reads a finished container's stored tail the same way", async () => {
    const uuid = running('');
    outputs.delete(uuid);
    queue.complete(uuid, 0, runnerTail(`${'y'.repeat(90)}end\n`, tailBytes));
    expect(await logs(uuid, '?since=80')).toMatchObject({ text: `${'y'.repeat(10)}end\n`, total: '94' });
  });
});

describe('drover logs --follow', () => {
  it('prints the output so far, then each new byte once, says what the tail dropped, and ends when the container is final', async () => {
    const server = await startServer(deps, { address: '127.0.0.1', port: 0 });
    const uuid = running('first\n');
    const big = `${'m'.repeat(99)}\n`;
    const dropped = `[drover: 36 bytes of output, from byte 13 to 49, were dropped before they were read; the daemon keeps the last 64]\n`;
    // Each step waits for the CLI to print what came before, so every poll sees at most one change.
    const steps: [string, () => void][] = [
      ['first\n', () => outputs.set(uuid, 'first\nsecond\n')],
      ['second\n', () => outputs.set(uuid, `first\nsecond\n${big}`)],
      [
        big.slice(-64),
        () => {
          // The last output comes as it ends: only the stored tail has it.
          queue.complete(uuid, 3, runnerTail(`first\nsecond\n${big}last\n`, tailBytes));
          outputs.delete(uuid);
        },
      ],
    ];
    try {
      const result = await runDrover(['logs', uuid, '--follow'], { ...process.env, DROVER_URL: server.url, DROVER_TOKEN: token }, {
        onStdout: inTurn(steps),
      });
      expect(result.stdout).toBe(`first\nsecond\n${dropped}${big.slice(-64)}last\n`);
      expect(result.stderr).toBe(`drover: ${uuid} complete, exit code 3\n`);
      expect(result.code).toBe(exitCodes.ok);
    } finally {
      await server.close();
    }
  });

  it('starts afresh, after a line saying so, when the container is started again', async () => {
    const server = await startServer(deps, { address: '127.0.0.1', port: 0 });
    const uuid = running('attempt one\n');
    const steps: [string, () => void][] = [
      [
        'attempt one\n',
        () => {
          queue.requeueOrFail(uuid, 'instance i-1 was lost');
          queue.lock(uuid, 'i-2', 'small');
          queue.markRunning(uuid, 'i-2', 'small');
          outputs.set(uuid, 'attempt two\n');
        },
      ],
      ['attempt two\n', () => queue.complete(uuid, 0, 'attempt two\n')],
    ];
    try {
      const result = await runDrover(['logs', uuid, '-f'], { ...process.env, DROVER_URL: server.url, DROVER_TOKEN: token }, {
        onStdout: inTurn(steps),
      });
      expect(result.stdout).toBe('attempt one\n[drover: attempt 2 started; its output follows]\nattempt two\n');
      expect(result.stderr).toBe(`drover: ${uuid} complete, exit code 0\n`);
      expect(result.code).toBe(exitCodes.ok);
    } finally {
      await server.close();
    }
  });

  it('prints a new attempt once when it starts between reading the state and reading the output', async () => {
    // Runs `between` once, right after the next read of a container, so what the CLI reads next
    // (the output) already belongs to the attempt that read did not see.
    let between: (() => void) | undefined;
    const racing = new Proxy(queue, {
      get(target, key) {
        if (key === 'get') {
          return (uuid: string) => {
            const container = target.get(uuid);
            const run = between;
            between = undefined;
            run?.();
            return container;
          };
        }
        const value: unknown = Reflect.get(target, key, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    const server = await startServer({ ...deps, queue: racing }, { address: '127.0.0.1', port: 0 });
    const uuid = running('attempt one\n');
    const second = 'attempt two: a longer line\n';
    const steps: [string, () => void][] = [
      [
        'attempt one\n',
        () => {
          between = () => {
            queue.requeueOrFail(uuid, 'instance i-1 was lost');
            queue.lock(uuid, 'i-2', 'small');
            queue.markRunning(uuid, 'i-2', 'small');
            outputs.set(uuid, second);
          };
        },
      ],
      [second, () => queue.complete(uuid, 0, second)],
    ];
    try {
      const result = await runDrover(['logs', uuid, '-f'], { ...process.env, DROVER_URL: server.url, DROVER_TOKEN: token }, {
        onStdout: inTurn(steps),
      });
      expect(result.stdout).toBe(`attempt one\n[drover: attempt 2 started; its output follows]\n${second}`);
      expect(result.code).toBe(exitCodes.ok);
    } finally {
      await server.close();
    }
  });
});
