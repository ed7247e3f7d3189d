// The drover client commands as an operator runs them: the real CLI process against a real API server and SQLite queue.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdleBehavior } from '../machines/instance.js';
import { tagKeys, type CloudInstance } from '../src/cloud/driver.js';
import { exitCodes } from '../src/cli/exit-codes.js';
import { startServer, type PoolControl } from '../src/http/server.js';
import { UnknownInstanceError, type InstanceView } from '../src/pool/pool.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import type { ContainerSpec } from '../src/queue/types.js';
import { noLaunchConfigs } from './support/api-fixture.js';
import { closedUrl, runDrover } from './support/run-drover.js';

const token = 'cli-test-token';

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
/** The instances the pool was told to shut down. */
const shutdowns: string[] = [];

const pool: PoolControl = {
  instances: () => [instance],
  orphans: () => orphans,
  instance: (id) => (id === instance.instanceId ? instance : undefined),
  setIdleBehavior: (id: string, b: IdleBehavior) => {
    if (id !== instance.instanceId) throw new UnknownInstanceError(id);
    instance.idleBehavior = b;
  },
  shutdown: (target) => {
    shutdowns.push(target.instanceId);
    return true;
  },
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
    { queue, pool, launchConfigs: noLaunchConfigs, token, registry: new Registry(), logger: pino({ level: 'silent' }) },
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
  return onNextSubmitted((uuid) => {
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    queue.complete(uuid, exitCode, logTail);
  });
}

/** Plays the dispatcher on the next container submitted from now on: `act` takes it from there. */
function onNextSubmitted(act: (uuid: string) => void): () => void {
  // A container a failed test left queued must not be taken for the one the CLI submits.
  const earlier = new Set(queue.pending().map((c) => c.uuid));
  const timer = setInterval(() => {
    const next = queue.pending().find((c) => c.state === 'queued' && !earlier.has(c.uuid));
    if (!next) return;
    clearInterval(timer);
    act(next.uuid);
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
    try {
      const result = await runDrover(['containers', '--state', 'queued'], env);
      expect(result.code).toBe(0);
      const [header, ...rows] = result.stdout.trim().split('\n');
      expect(header?.split(/\s+/)).toEqual(['UUID', 'STATE', 'PRIORITY', 'ATTEMPTS', 'EXIT', 'INSTANCE', 'AGE', 'REASON']);
      const row = rows.find((line) => line.startsWith(container.uuid))?.split(/\s+/);
      expect(row?.slice(0, 6)).toEqual([container.uuid, 'queued', '7', '0', '-', '-']);
      expect(row?.[7]).toBe('-');
    } finally {
      queue.cancel(container.uuid);
    }
  });

  it("containers shows a failed container's reason on one line, shortened to fit the line width", async () => {
    const container = queue.submit(spec);
    const reason = `no instance type fits: needs 64 vCPUs,\n${'and much more besides '.repeat(10)}`;
    queue.fail(container.uuid, reason);
    const wide = await runDrover(['containers', '--state', 'failed'], { ...env, COLUMNS: '' });
    expect(wide.code).toBe(0);
    const fullRow = wide.stdout.split('\n').find((line) => line.startsWith(container.uuid));
    expect(fullRow).toMatch(/ no instance type fits: needs 64 vCPUs, and much more besides and much .* besides$/);

    const narrow = await runDrover(['containers', '--state', 'failed'], { ...env, COLUMNS: '130' });
    const lines = narrow.stdout.trimEnd().split('\n');
    const row = lines.find((line) => line.startsWith(container.uuid)) ?? '';
    expect(row).toMatch(/ {2}no instance type fits: needs 64 vCPUs, and…$/);
    expect(row.length).toBe(130);
    expect(Math.max(...lines.map((line) => line.length))).toBeLessThanOrEqual(130);
  });

  it('show prints every field of one container, env names without their values; --json the record', async () => {
    const container = queue.submit({
      ...spec,
      command: ['sh', '-c', "echo 'hi'; exit 3"],
      env: { PASSWORD: 's3cret-value', HOME_DIR: '/x' },
      constraints: { ...spec.constraints, vcpus: 2, gpus: 1 },
      priority: 4,
    });
    queue.lock(container.uuid, 'i-1', 'small');
    queue.markRunning(container.uuid, 'i-1', 'small');
    queue.complete(container.uuid, 3, 'hi\n');
    const result = await runDrover(['show', container.uuid], env);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).not.toContain('s3cret-value');
    const fields = Object.fromEntries(result.stdout.trimEnd().split('\n').map((line) => [line.slice(0, 13).trim(), line.slice(13)]));
    expect(fields).toMatchObject({
      uuid: container.uuid,
      state: 'complete',
      'exit code': '3',
      reason: '-',
      attempts: '1',
      instance: 'i-1',
      type: 'small',
      priority: '4',
      constraints: '2 vCPUs, 256 MiB RAM, 0 GiB scratch, 1 GPU, not preemptible',
      image: '-',
      command: `sh -c 'echo '\\''hi'\\''; exit 3'`,
      env: 'HOME_DIR PASSWORD (values not shown)',
    });
    for (const time of ['submitted', 'started', 'finished', 'updated']) expect(fields[time]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z \(\d+s ago\)$/);

    const json = await runDrover(['show', container.uuid, '--json'], env);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ ...queue.get(container.uuid), waitReason: null });
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
          'the pool neither counts nor manages it, and `drover instance kill` cannot reach it. ' +
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
    expect(result.code).toBe(exitCodes.settings);
    expect(result.stderr).toContain(`drover: no daemon has been started with ${config}: there is no API token file at ${tokenFile}`);
    expect(result.stderr).toContain(`which the daemon writes on its first start; start it with \`drover run --config ${config}\``);
    expect(result.stdout).toBe('');
  });

  it('on a DROVER_HOME where no daemon ever ran, says so and how to start one, with the settings code', async () => {
    const home = mkdtempSync(join(dir, 'fresh-home-'));
    const { DROVER_URL: _url, DROVER_TOKEN: _token, ...inherited } = env;
    const result = await runDrover(['containers'], { ...inherited, DROVER_HOME: home });
    expect(result.code).toBe(exitCodes.settings);
    expect(result.stderr).toMatch(
      new RegExp(`^drover: no daemon has been started in DROVER_HOME ${home}: there is no API token file at ${home}/token .*; start it with \`drover run\` \\(\`npm start\` in the repository\\), or set DROVER_TOKEN`),
    );
    expect(result.stdout).toBe('');
  });

  it('Ctrl-C during --wait stops waiting without cancelling the container', async () => {
    let uuid: string | undefined;
    const result = await runDrover(['submit', '--wait', '--', 'sleep', '100'], env, (stderr, child) => {
      if (uuid === undefined && (uuid = uuidLine.exec(stderr)?.[1]) !== undefined) child.kill('SIGINT');
    });
    expect(result.code).toBe(exitCodes.interrupted);
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

  it('instance hold, drain and resume set the idle behaviour through the API; instance kill shuts it down', async () => {
    const held = await runDrover(['instance', 'hold', 'i-1'], env);
    expect(held).toMatchObject({ code: 0, stdout: 'i-1: idle behaviour hold (idle)\n' });
    expect(instance.idleBehavior).toBe('hold');
    const drained = await runDrover(['instance', 'drain', 'i-1'], env);
    expect(drained).toMatchObject({ code: 0, stdout: 'i-1: idle behaviour drain (idle)\n' });
    const resumed = await runDrover(['instance', 'resume', 'i-1'], env);
    expect(resumed).toMatchObject({ code: 0, stdout: 'i-1: idle behaviour run (idle)\n' });
    expect(instance.idleBehavior).toBe('run');
    const killed = await runDrover(['instance', 'kill', 'i-1'], env);
    expect(killed).toMatchObject({ code: 0, stdout: 'i-1: idle\n' });
    expect(shutdowns).toEqual(['i-1']);
    const unknown = await runDrover(['instance', 'hold', 'i-nope'], env);
    expect(unknown).toMatchObject({ code: exitCodes.refused, stderr: 'drover: no instance i-nope in this pool\n' });
  });

  it('the old hold, drain and kill commands are gone: a usage error', async () => {
    const shutdownsBefore = shutdowns.length;
    for (const old of ['hold', 'drain', 'kill']) {
      const result = await runDrover([old, 'i-1'], env);
      expect(result.code).toBe(exitCodes.usage);
      expect(result.stderr).toContain(`unknown command '${old}'`);
    }
    expect(instance.idleBehavior).toBe('run');
    expect(shutdowns).toHaveLength(shutdownsBefore);
  });

  it('a usage error exits with the usage code, never 1; --help exits 0', async () => {
    for (const args of [['submit', '--vcpus', 'many', '--', 'true'], ['containers', '--bogus'], ['show'], ['no-such-command'], ['instance'], []]) {
      const result = await runDrover(args, env);
      expect({ args, code: result.code }).toEqual({ args, code: exitCodes.usage });
      expect(result.stdout).toBe('');
    }
    expect((await runDrover(['--help'], env)).code).toBe(0);
  });

  it('an unreachable daemon exits with the unreachable code at once, without --wait', async () => {
    const url = await closedUrl();
    const result = await runDrover(['containers'], { ...env, DROVER_URL: url });
    expect(result.code).toBe(exitCodes.unreachable);
    expect(result.stderr).toMatch(new RegExp(`^drover: cannot reach the drover daemon at ${url}: .*ECONNREFUSED`));
    expect(result.stderr).not.toContain('retrying');
  });

  it('submit --wait exits with the container-failed code when no instance type fits (a failure with no exit code)', async () => {
    const reason = 'no instance type fits: needs 64 vCPUs';
    const stop = onNextSubmitted((uuid) => queue.fail(uuid, reason));
    try {
      const result = await runDrover(['submit', '--wait', '--vcpus', '64', '--', 'true'], env);
      const uuid = uuidLine.exec(result.stderr)?.[1];
      expect(result.code).toBe(exitCodes.containerFailed);
      expect(result.stderr).toBe(`${uuid}\ndrover: ${uuid} failed: ${reason}\n`);
    } finally {
      stop();
    }
  });

  it('submit --wait passes a failed container\'s own exit code through', async () => {
    const stop = onNextSubmitted((uuid) => {
      queue.lock(uuid, 'i-1', 'small');
      queue.markRunning(uuid, 'i-1', 'small');
      queue.recordExit(uuid, 7);
      queue.fail(uuid, 'its instance was lost after it exited', 'partial\n');
    });
    try {
      const result = await runDrover(['submit', '--wait', '--', 'sh', '-c', 'exit 7'], env);
      expect(result.code).toBe(7);
      expect(result.stdout).toBe('partial\n');
    } finally {
      stop();
    }
  });

  it('submit --wait exits with the cancelled code when someone else cancels the container', async () => {
    const stop = onNextSubmitted((uuid) => queue.cancel(uuid));
    try {
      const result = await runDrover(['submit', '--wait', '--', 'sleep', '100'], env);
      const uuid = uuidLine.exec(result.stderr)?.[1];
      expect(result.code).toBe(exitCodes.cancelled);
      expect(result.stderr).toBe(`${uuid}\ndrover: ${uuid} was cancelled: cancelled by user\n`);
    } finally {
      stop();
    }
  });

  it('says the daemon refused a wrong DROVER_TOKEN, with the refused code', async () => {
    const result = await runDrover(['containers'], { ...env, DROVER_TOKEN: 'not-the-token' });
    expect(result.code).toBe(exitCodes.refused);
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
    expect(result.code).toBe(exitCodes.refused);
    expect(result.stderr).toBe(`drover: the daemon refused the token: check DROVER_TOKEN or ${tokenFile} (the daemon says: invalid token)\n`);
  });

  it('reports an API error as drover: <error> with the refused code', async () => {
    const result = await runDrover(['cancel', 'no-such-uuid'], env);
    expect(result.code).toBe(exitCodes.refused);
    expect(result.stderr).toBe('drover: no container no-such-uuid\n');
  });
});
