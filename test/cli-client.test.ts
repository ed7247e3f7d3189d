// The drover client commands as an operator runs them: the real CLI process against a real API server and SQLite queue.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdleBehavior } from '../machines/instance.js';
import { tagKeys, type CloudInstance } from '../src/cloud/driver.js';
import { startServer, type PoolControl } from '../src/http/server.js';
import { UnknownInstanceError, type InstanceView } from '../src/pool/pool.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import type { ContainerSpec } from '../src/queue/types.js';

const cli = ['--import', 'tsx', 'src/cli/main.ts'];
const token = 'cli-test-token';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs drover; `onStderr` sees the diagnostics so far (the uuid, with --wait) and may signal the child. */
function runDrover(args: string[], env: NodeJS.ProcessEnv, onStderr?: (stderr: string, child: { kill(signal: NodeJS.Signals): void }) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const instance: InstanceView = {
  workerId: 'w-1',
  instanceId: 'i-1',
  instanceType: 'small',
  providerType: 'stub.small',
  price: 0.01,
  address: null,
  state: 'idle',
  idleBehavior: 'run',
  running: [],
  appearedAt: 0,
  createdByPool: false,
  lastError: null,
  history: [],
};

/** What the pool's orphans() answers; a test puts orphans here and takes them out again. */
const orphans: CloudInstance[] = [];

const pool: PoolControl = {
  instances: () => [instance],
  orphans: () => orphans,
  instance: (id) => (id === instance.instanceId ? instance : undefined),
  setIdleBehavior: (id: string, b: IdleBehavior) => {
    if (id !== instance.instanceId) throw new UnknownInstanceError(id);
    instance.idleBehavior = b;
  },
  shutdown: () => false,
};

const spec: ContainerSpec = {
  image: null,
  command: ['sleep', '100'],
  env: {},
  constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
  priority: 0,
};

let dir: string;
let queue: SqliteQueue;
let server: { url: string; close(): Promise<void> };
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'drover-cli-client-'));
  queue = new SqliteQueue({ path: join(dir, 'queue.sqlite'), maxAttempts: 3 });
  server = await startServer(
    { queue, pool, token, registry: new Registry(), logger: pino({ level: 'silent' }) },
    { address: '127.0.0.1', port: 0 },
  );
  env = { ...process.env, DROVER_URL: server.url, DROVER_TOKEN: token };
});

afterAll(async () => {
  await server.close();
  queue.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Plays the dispatcher: runs the next queued container to completion with the given result. */
function completeNextSubmitted(exitCode: number, logTail: string): () => void {
  const timer = setInterval(() => {
    const next = queue.pending().find((c) => c.state === 'queued');
    if (!next) return;
    clearInterval(timer);
    queue.lock(next.uuid, 'i-1', 'small');
    queue.markRunning(next.uuid, 'i-1', 'small');
    queue.complete(next.uuid, exitCode, logTail);
  }, 50);
  return () => clearInterval(timer);
}

const uuidLine = /^([0-9a-f-]{36})\n/;

describe('drover client commands', () => {
  it("submit --wait prints the output (the uuid on stderr), and exits with the container's exit code", async () => {
    const stop = completeNextSubmitted(3, 'hi\n');
    try {
      const result = await runDrover(['submit', '--wait', '--vcpus', '2', '--', 'sh', '-c', 'echo hi; exit 3'], env);
      const uuid = uuidLine.exec(result.stderr)?.[1];
      expect(uuid).toBeDefined();
      expect(result.stderr).toBe(`${uuid}\n`);
      expect(result.stdout).toBe('hi\n');
      expect(result.code).toBe(3);
      expect(queue.get(uuid ?? '')).toMatchObject({ command: ['sh', '-c', 'echo hi; exit 3'], constraints: { vcpus: 2 } });
    } finally {
      stop();
    }
  });

  it('containers lists containers in a table', async () => {
    const container = queue.submit({ ...spec, priority: 7 });
    const result = await runDrover(['containers', '--state', 'queued'], env);
    expect(result.code).toBe(0);
    const [header, ...rows] = result.stdout.trim().split('\n');
    expect(header?.split(/\s+/)).toEqual(['UUID', 'STATE', 'PRIORITY', 'ATTEMPTS', 'EXIT', 'INSTANCE', 'AGE']);
    const row = rows.find((line) => line.startsWith(container.uuid));
    expect(row?.split(/\s+/).slice(0, 6)).toEqual([container.uuid, 'queued', '7', '0', '-', '-']);
    queue.cancel(container.uuid);
  });

  it('instances lists the instances without a hint while there is no orphan', async () => {
    const result = await runDrover(['instances'], env);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const [header, ...rows] = result.stdout.trim().split('\n');
    expect(header?.split(/\s+/)).toEqual(['INSTANCE', 'TYPE', 'STATE', 'IDLE', 'RUNNING']);
    expect(rows.map((row) => row.split(/\s+/))).toEqual([['i-1', 'small', 'idle', 'run', '0']]);
  });

  it('instances shows an orphan marked orphan, and a hint to destroy it or add its type to the config', async () => {
    orphans.push({ id: 'i-orphan', providerType: 'stub.large', address: '10.0.0.9', tags: { [tagKeys.pool]: 'p', [tagKeys.instanceType]: 'retired-type' } });
    try {
      const result = await runDrover(['instances'], env);
      expect(result.code).toBe(0);
      const [header, ...rows] = result.stdout.trim().split('\n');
      expect(header?.split(/\s+/)).toEqual(['INSTANCE', 'TYPE', 'STATE', 'IDLE', 'RUNNING']);
      expect(rows.map((row) => row.split(/\s+/))).toEqual([
        ['i-1', 'small', 'idle', 'run', '0'],
        ['i-orphan', 'retired-type', 'orphan', '-', '-'],
      ]);
      expect(result.stderr).toBe(
        "hint: 1 orphan carries this pool's tag but an instance type the config does not define (its TYPE above); " +
          'the pool neither counts nor manages it, and `drover kill` cannot reach it. ' +
          "Destroy it with the cloud's own tools, or add its type to instanceTypes in the config.\n",
      );
    } finally {
      orphans.length = 0;
    }
  });

  it('says where the token file should be and who writes it when it is missing', async () => {
    const config = join(dir, 'client.yml');
    const tokenFile = join(dir, 'missing', 'token');
    writeFileSync(
      config,
      [
        'cloud: { driver: stub }',
        'instanceTypes: { small: { providerType: s, vcpus: 1, ramMiB: 512, price: 0.01 } }',
        `http: { tokenFile: ${JSON.stringify(tokenFile)} }`,
      ].join('\n'),
    );
    const { DROVER_URL: _url, DROVER_TOKEN: _token, ...withoutDrover } = env;
    const result = await runDrover(['containers', '--config', config], withoutDrover);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`drover: no API token file at ${tokenFile}`);
    expect(result.stderr).toContain('the daemon writes it on its first start');
    expect(result.stdout).toBe('');
  });

  it('Ctrl-C during --wait stops waiting without cancelling the container', async () => {
    let uuid: string | undefined;
    const result = await runDrover(['submit', '--wait', '--', 'sleep', '100'], env, (stderr, child) => {
      if (uuid === undefined && (uuid = uuidLine.exec(stderr)?.[1]) !== undefined) child.kill('SIGINT');
    });
    expect(result.code).toBe(130);
    expect(result.stderr).toContain('not cancelled');
    expect(queue.get(uuid ?? '')?.state).toBe('queued');
    queue.cancel(uuid ?? '');
  });

  it('Ctrl-C during --wait --cancel-on-interrupt cancels the container', async () => {
    let uuid: string | undefined;
    const result = await runDrover(['submit', '--wait', '--cancel-on-interrupt', '--', 'sleep', '100'], env, (stderr, child) => {
      if (uuid === undefined && (uuid = uuidLine.exec(stderr)?.[1]) !== undefined) child.kill('SIGINT');
    });
    expect(result.code).toBe(130);
    expect(queue.get(uuid ?? '')?.state).toBe('cancelled');
  });

  it('hold, then run INSTANCE, set the idle behaviour through the API', async () => {
    const held = await runDrover(['hold', 'i-1'], env);
    expect(held).toMatchObject({ code: 0, stdout: 'i-1: idle behaviour hold (idle)\n' });
    expect(instance.idleBehavior).toBe('hold');
    const resumed = await runDrover(['run', 'i-1'], env);
    expect(resumed).toMatchObject({ code: 0, stdout: 'i-1: idle behaviour run (idle)\n' });
    expect(instance.idleBehavior).toBe('run');
  });

  it('says the daemon refused a wrong DROVER_TOKEN, with exit code 1', async () => {
    const result = await runDrover(['containers'], { ...env, DROVER_TOKEN: 'not-the-token' });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('drover: the daemon refused the token: check DROVER_TOKEN (the daemon says: invalid token)\n');
    expect(result.stdout).toBe('');
  });

  it('names the token file when the token read from it is refused', async () => {
    const config = join(dir, 'wrong-token.yml');
    const tokenFile = join(dir, 'wrong-token');
    writeFileSync(tokenFile, 'stale-token\n');
    writeFileSync(
      config,
      [
        'cloud: { driver: stub }',
        'instanceTypes: { small: { providerType: s, vcpus: 1, ramMiB: 512, price: 0.01 } }',
        `http: { tokenFile: ${JSON.stringify(tokenFile)} }`,
      ].join('\n'),
    );
    const { DROVER_TOKEN: _token, ...withoutToken } = env;
    const result = await runDrover(['cancel', 'some-uuid', '--config', config], withoutToken);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`drover: the daemon refused the token: check DROVER_TOKEN or ${tokenFile} (the daemon says: invalid token)\n`);
  });

  it('reports an API error as drover: <error> with exit code 1', async () => {
    const result = await runDrover(['cancel', 'no-such-uuid'], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('drover: no container no-such-uuid\n');
  });
});
