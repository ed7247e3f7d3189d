// The HTTP API over a real socket and a real SQLite queue: auth, JSON errors, containers, instances, launch configs, health and metrics.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { IdleBehavior } from '../machines/instance.js';
import { tagKeys, type CloudInstance } from '../src/cloud/driver.js';
import { maxBodyBytes, startServer, type ApiDeps, type InstancesResponse, type LaunchConfigsResponse, type PoolControl } from '../src/http/server.js';
import { MAX_COMMAND_ARGS, MAX_START_COMMAND_BYTES } from '../src/http/submit-limits.js';
import { ensureToken, tokensMatch } from '../src/http/token.js';
import { LaunchConfigStateError, UnknownLaunchConfigError, type LaunchConfigView } from '../src/pool/launch-config-view.js';
import { UnknownInstanceError, type InstanceView } from '../src/pool/pool.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { startCommand } from '../src/runner/deploy.js';
import type { Container } from '../src/queue/types.js';
import { FakeLaunchConfigs, launchConfigView } from './support/api-fixture.js';
import { createStub, instanceTypes, PoolHarness, poolTags } from './support/pool-harness.js';

const token = 'test-token-0123456789';

/** A pool of fixed instances that records what the API asked of it. */
class FakePool implements PoolControl {
  readonly views = new Map<string, InstanceView>();
  readonly orphanInstances: CloudInstance[] = [];
  readonly kills: string[] = [];

  add(instanceId: string): InstanceView {
    const view: InstanceView = {
      workerId: `w-${instanceId}`,
      instanceId,
      instanceType: 'small',
      providerType: 'stub.small',
      price: 0.01,
      address: '10.0.0.1',
      state: 'idle',
      idleBehavior: 'run',
      running: [],
      appearedAt: 0,
      createdByPool: false,
      lastError: null,
      history: [],
    };
    this.views.set(instanceId, view);
    return view;
  }

  instances(): InstanceView[] {
    return [...this.views.values()];
  }

  orphans(): CloudInstance[] {
    return [...this.orphanInstances];
  }

  instance(id: string): InstanceView | undefined {
    return this.views.get(id);
  }

  setIdleBehavior(id: string, b: IdleBehavior): void {
    const view = this.views.get(id);
    if (!view) throw new UnknownInstanceError(id);
    view.idleBehavior = b;
  }

  shutdown(target: { instanceId: string }): boolean {
    const view = this.views.get(target.instanceId);
    if (!view) throw new UnknownInstanceError(target.instanceId);
    this.kills.push(target.instanceId);
    view.state = 'shutdown';
    return true;
  }
}

let dir: string;
let queue: SqliteQueue;
let pool: FakePool;
let launchConfigs: FakeLaunchConfigs;
let registry: Registry;
let server: { url: string; close(): Promise<void> } | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'drover-http-'));
  queue = new SqliteQueue({ path: join(dir, 'queue.sqlite'), maxAttempts: 3 });
  pool = new FakePool();
  launchConfigs = new FakeLaunchConfigs();
  registry = new Registry();
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  queue.close();
  rmSync(dir, { recursive: true, force: true });
});

async function start(overrides: Partial<ApiDeps> = {}): Promise<string> {
  server = await startServer(
    { queue, pool, launchConfigs, token, registry, logger: pino({ level: 'silent' }), ...overrides },
    { address: '127.0.0.1', port: 0 },
  );
  return server.url;
}

interface Call {
  body?: unknown;
  rawBody?: string;
  authorization?: string | null;
}

async function call(
  url: string,
  method: string,
  path: string,
  options: Call = {},
): Promise<{ status: number; type: string; challenge: string | null; text: string; json: () => unknown }> {
  const headers: Record<string, string> = {};
  const authorization = options.authorization === undefined ? `Bearer ${token}` : options.authorization;
  if (authorization !== null) headers.authorization = authorization;
  let body: string | undefined;
  if (options.rawBody !== undefined || options.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = options.rawBody ?? JSON.stringify(options.body);
  }
  const response = await fetch(`${url}${path}`, { method, headers, body });
  const text = await response.text();
  return {
    status: response.status,
    type: response.headers.get('content-type') ?? '',
    challenge: response.headers.get('www-authenticate'),
    text,
    json: () => JSON.parse(text),
  };
}

function submitted(url: string, body: unknown = { command: ['echo', 'hi'] }) {
  return call(url, 'POST', '/containers', { body });
}

// The contract (RFC 6750 / 7235): a missing, malformed or wrong token is 401 with a Bearer challenge; never 403.
describe('auth', () => {
  const challenge = 'Bearer realm="drover"';
  const invalidTokenChallenge = 'Bearer realm="drover", error="invalid_token"';

  it('refuses a request without an Authorization header with 401 and a Bearer challenge', async () => {
    const url = await start();
    const response = await call(url, 'GET', '/containers', { authorization: null });
    expect(response.status).toBe(401);
    expect(response.challenge).toBe(challenge);
    expect(response.json()).toEqual({ error: 'missing bearer token' });
  });

  it('refuses a Bearer header without a token with 401 and no error code', async () => {
    const url = await start();
    for (const authorization of ['Bearer', 'Bearer   ']) {
      const response = await call(url, 'POST', '/containers', { authorization, body: { command: ['true'] } });
      expect(response.status).toBe(401);
      expect(response.challenge).toBe(challenge);
      expect(response.json()).toEqual({ error: 'missing bearer token' });
    }
    expect(queue.list({ limit: 10 })).toEqual([]);
  });

  it('refuses a wrong token with 401 and error="invalid_token", not 403', async () => {
    const url = await start();
    for (const authorization of ['Bearer not-the-token', `Bearer ${token}x`, `bearer ${token.slice(1)}`]) {
      const response = await call(url, 'GET', '/containers', { authorization });
      expect(response.status).toBe(401);
      expect(response.challenge).toBe(invalidTokenChallenge);
      expect(response.json()).toEqual({ error: 'invalid token' });
    }
  });

  it('refuses another scheme, or the token without a scheme, with 401 and a Bearer challenge', async () => {
    const url = await start();
    for (const authorization of [`Basic ${Buffer.from(`drover:${token}`).toString('base64')}`, token, `Token ${token}`, `Bearer${token}`]) {
      const response = await call(url, 'GET', '/instances', { authorization });
      expect(response.status).toBe(401);
      expect(response.challenge).toBe(challenge);
      expect(response.json()).toEqual({ error: 'expected an Authorization: Bearer <token> header' });
    }
  });

  it('accepts the token whatever the case of the scheme', async () => {
    const url = await start();
    for (const authorization of [`Bearer ${token}`, `bearer ${token}`, `BEARER  ${token} `]) {
      const response = await call(url, 'GET', '/instances', { authorization });
      expect(response.status).toBe(200);
      expect(response.challenge).toBeNull();
    }
  });

  it('refuses everything with 401 when the configured token is empty, even an empty bearer', async () => {
    const url = await start({ token: '' });
    for (const authorization of ['Bearer ', 'Bearer', null]) {
      const response = await call(url, 'GET', '/instances', { authorization });
      expect(response.status).toBe(401);
      expect(response.challenge).toBe(challenge);
      expect(response.json()).toEqual({ error: 'missing bearer token' });
    }
    const guessed = await call(url, 'GET', '/instances', { authorization: 'Bearer anything' });
    expect(guessed.status).toBe(401);
    expect(guessed.challenge).toBe(invalidTokenChallenge);
    expect(guessed.json()).toEqual({ error: 'the API token is empty; every request is refused' });
  });

  it('asks for no token on /healthz, nor on /metrics with publicMetrics', async () => {
    const url = await start({ publicMetrics: true });
    for (const path of ['/healthz', '/metrics']) {
      const response = await call(url, 'GET', path, { authorization: 'Bearer not-the-token' });
      expect(response.status).toBe(200);
      expect(response.challenge).toBeNull();
    }
  });

  it('asks for the token on /metrics by default', async () => {
    const url = await start();
    const missing = await call(url, 'GET', '/metrics', { authorization: null });
    expect(missing.status).toBe(401);
    expect(missing.challenge).toBe(challenge);
    expect(missing.json()).toEqual({ error: 'missing bearer token' });
    const wrong = await call(url, 'GET', '/metrics', { authorization: 'Bearer not-the-token' });
    expect(wrong.status).toBe(401);
    expect(wrong.challenge).toBe(invalidTokenChallenge);
    expect((await call(url, 'GET', '/metrics')).status).toBe(200);
  });
});

describe('errors', () => {
  it('answers malformed JSON with 400 and a JSON reason', async () => {
    const url = await start();
    const response = await call(url, 'POST', '/containers', { rawBody: '{"command": [' });
    expect(response.status).toBe(400);
    expect(response.type).toContain('application/json');
    expect(response.json()).toEqual({ error: expect.stringContaining('JSON') });
  });

  it('answers schema violations with 400 naming the field', async () => {
    const url = await start();
    const cases: Array<[unknown, string]> = [
      [{}, 'body/command is required'],
      [{ command: [] }, 'body/command must NOT have fewer than 1 items'],
      [{ command: ['true'], priority: 1.5 }, 'body/priority must be integer'],
      [{ command: ['true'], priority: '5' }, 'body/priority must be integer'],
      [{ command: ['true'], colour: 'red' }, 'body/colour is not a known property'],
      [{ command: ['true'], constraints: { vcpus: 0 } }, 'body/constraints/vcpus must be >= 1'],
    ];
    for (const [body, reason] of cases) {
      const response = await submitted(url, body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.json()).toEqual({ error: reason });
    }
    const query = await call(url, 'GET', '/containers?limit=0');
    expect(query.status).toBe(400);
    expect(query.json()).toEqual({ error: 'querystring/limit must be >= 1' });
  });

  it("passes the queue's own validation errors on as 400", async () => {
    const url = await start();
    const response = await submitted(url, { command: ['true'], env: { 'NOT VALID': 'x' } });
    expect(response.status).toBe(400);
    expect(response.json()).toEqual({ error: expect.stringContaining('NOT VALID') });
  });

  it('matches the validation error by class: an error merely named InvalidContainerSpecError is a 500', async () => {
    const impostor = Object.assign(new Error('not a spec problem'), { name: 'InvalidContainerSpecError' });
    const url = await start({
      pool: {
        ...pool,
        instances: () => {
          throw impostor;
        },
        orphans: () => [],
        instance: () => undefined,
        setIdleBehavior: () => undefined,
        shutdown: () => false,
      },
    });
    const response = await call(url, 'GET', '/instances');
    expect(response.status).toBe(500);
    expect(response.json()).toEqual({ error: 'internal error; see the daemon log' });
  });

  it('answers an unknown container with 404', async () => {
    const url = await start();
    const uuid = '00000000-0000-4000-8000-000000000000';
    for (const [method, path] of [
      ['GET', `/containers/${uuid}`],
      ['POST', `/containers/${uuid}/cancel`],
      ['GET', `/containers/${uuid}/logs`],
    ] as const) {
      const response = await call(url, method, path);
      expect(response.status, path).toBe(404);
      expect(response.json()).toEqual({ error: `no container ${uuid}` });
    }
  });

  it('answers an unknown instance with 404', async () => {
    const url = await start();
    const kill = await call(url, 'POST', '/instances/i-nope/kill');
    expect(kill.status).toBe(404);
    expect(kill.json()).toEqual({ error: expect.stringContaining('i-nope') });
    const hold = await call(url, 'POST', '/instances/i-nope/idle-behavior', { body: { behavior: 'hold' } });
    expect(hold.status).toBe(404);
  });

  it('answers an unknown route with a JSON 404', async () => {
    const url = await start();
    const response = await call(url, 'GET', '/nothing-here');
    expect(response.status).toBe(404);
    expect(response.json()).toEqual({ error: 'no route GET /nothing-here' });
  });

  it('answers an unexpected failure with 500 and a JSON reason', async () => {
    const url = await start({
      pool: {
        ...pool,
        instances: () => {
          throw new Error('boom');
        },
        orphans: () => [],
        instance: () => undefined,
        setIdleBehavior: () => undefined,
        shutdown: () => false,
      },
    });
    const response = await call(url, 'GET', '/instances');
    expect(response.status).toBe(500);
    expect(response.json()).toEqual({ error: expect.any(String) });
  });
});

describe('containers', () => {
  it('submits, gets, lists and cancels (twice) a container', async () => {
    const url = await start();
    const created = await submitted(url, { command: ['sh', '-c', 'true'], priority: 5, constraints: { vcpus: 2 }, env: { A: 'b' } });
    expect(created.status).toBe(201);
    const container = created.json() as Container;
    expect(container).toMatchObject({
      state: 'queued',
      command: ['sh', '-c', 'true'],
      image: null,
      env: { A: 'b' },
      priority: 5,
      constraints: { vcpus: 2, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
    });

    const got = await call(url, 'GET', `/containers/${container.uuid}`);
    expect(got.status).toBe(200);
    expect(got.json()).toEqual(container);

    const listed = await call(url, 'GET', '/containers?state=queued&limit=10');
    expect(listed.status).toBe(200);
    expect((listed.json() as { containers: Container[] }).containers.map((c) => c.uuid)).toEqual([container.uuid]);
    const none = await call(url, 'GET', '/containers?state=running');
    expect(none.json()).toEqual({ containers: [] });

    const cancelled = await call(url, 'POST', `/containers/${container.uuid}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.json()).toMatchObject({ uuid: container.uuid, state: 'cancelled' });
    const again = await call(url, 'POST', `/containers/${container.uuid}/cancel`);
    expect(again.status).toBe(200);
    expect(again.json()).toMatchObject({ state: 'cancelled' });
  });

  it("returns a completed container's log tail as text", async () => {
    const url = await start();
    const { uuid } = (await submitted(url)).json() as Container;
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    queue.complete(uuid, 0, 'hi\nthere\n');
    const logs = await call(url, 'GET', `/containers/${uuid}/logs`);
    expect(logs.status).toBe(200);
    expect(logs.type).toMatch(/^text\/plain/);
    expect(logs.text).toBe('hi\nthere\n');
  });

  it("returns a running container's live output from liveLogs", async () => {
    const url = await start({ liveLogs: async (container) => `live output of ${container.uuid}\n` });
    const { uuid } = (await submitted(url)).json() as Container;
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    const logs = await call(url, 'GET', `/containers/${uuid}/logs`);
    expect(logs.text).toBe(`live output of ${uuid}\n`);
  });
});

// What the runner could never start is refused at submit, naming the limit; nothing is queued.
describe('submit limits', () => {
  const runnerPath = '.drover/bin/drover-runner';
  const uuid = '00000000-0000-4000-8000-000000000000';

  it('refuses a 40,000-character argument with 400 naming the byte limit and the measured size', async () => {
    const url = await start();
    const response = await submitted(url, { command: ['echo', 'x'.repeat(40_000)] });
    expect(response.status).toBe(400);
    const line = startCommand(runnerPath, { uuid, command: ['echo', 'x'.repeat(40_000)], env: {}, image: null, docker: false });
    expect(response.json()).toEqual({
      error: `command and env take ${Buffer.byteLength(line)} bytes once quoted for the runner; the limit is ${MAX_START_COMMAND_BYTES} (one SSH exec)`,
    });
    expect(queue.list()).toEqual([]);
  });

  it('counts quoting and env: a line of exactly the limit is accepted, one byte more is refused', async () => {
    const url = await start();
    const env = { GREETING: "it's" };
    const base = Buffer.byteLength(startCommand(runnerPath, { uuid, command: ['echo', ''], env, image: null, docker: false }));
    const fits = await submitted(url, { command: ['echo', 'x'.repeat(MAX_START_COMMAND_BYTES - base)], env });
    expect(fits.status, fits.text).toBe(201);
    // Each ' becomes '\'' (four bytes) once quoted, so a quote where an x was adds three.
    const over = await submitted(url, { command: ['echo', `'${'x'.repeat(MAX_START_COMMAND_BYTES - base - 3)}`], env });
    expect(over.status).toBe(400);
    expect(over.json()).toEqual({ error: expect.stringContaining(`take ${MAX_START_COMMAND_BYTES + 1} bytes`) });
    expect(queue.list()).toHaveLength(1);
  });

  it('refuses 150,000 arguments with 400 naming the argument limit, queues nothing and keeps answering', async () => {
    const url = await start();
    const response = await submitted(url, { command: Array.from({ length: 150_000 }, () => 'x') });
    expect(response.status).toBe(400);
    expect(response.json()).toEqual({ error: `command has 150000 arguments; the limit is ${MAX_COMMAND_ARGS}` });
    expect(queue.list()).toEqual([]);
    expect((await submitted(url)).status).toBe(201);
  });

  it('answers a body over the limit with 413 and a JSON reason, and keeps answering', async () => {
    const url = await start();
    const response = await submitted(url, { command: ['echo', 'x'.repeat(maxBodyBytes)] });
    expect(response.status).toBe(413);
    expect(response.json()).toEqual({ error: expect.any(String) });
    expect(queue.list()).toEqual([]);
    expect((await call(url, 'GET', '/healthz')).status).toBe(200);
  });

  it('refuses an image when the runner runs plain commands (runner.docker false, the default)', async () => {
    const url = await start({ docker: false });
    const response = await submitted(url, { command: ['true'], image: 'ubuntu:24.04' });
    expect(response.status).toBe(400);
    expect(response.json()).toEqual({
      error: 'image: this daemon runs plain commands (runner.docker is false); submit without an image or enable runner.docker',
    });
    expect(queue.list()).toEqual([]);
  });

  it('refuses a spec without an image when the runner runs docker, and accepts one with an image', async () => {
    const url = await start({ docker: true });
    const response = await submitted(url, { command: ['true'] });
    expect(response.status).toBe(400);
    expect(response.json()).toEqual({ error: expect.stringMatching(/^image: .*runner\.docker is true/) });
    expect(queue.list()).toEqual([]);
    const created = await submitted(url, { command: ['true'], image: 'ubuntu:24.04' });
    expect(created.status).toBe(201);
    expect(created.json()).toMatchObject({ image: 'ubuntu:24.04', command: ['true'] });
  });
});

describe('instances', () => {
  it('lists instances and sets an idle behaviour, returning the changed view', async () => {
    const url = await start();
    pool.add('i-1');
    const listed = await call(url, 'GET', '/instances');
    expect((listed.json() as { instances: InstanceView[] }).instances.map((i) => i.instanceId)).toEqual(['i-1']);

    const held = await call(url, 'POST', '/instances/i-1/idle-behavior', { body: { behavior: 'hold' } });
    expect(held.status).toBe(200);
    expect(held.json()).toMatchObject({ instanceId: 'i-1', idleBehavior: 'hold' });
    expect(pool.instance('i-1')?.idleBehavior).toBe('hold');

    const bad = await call(url, 'POST', '/instances/i-1/idle-behavior', { body: { behavior: 'nap' } });
    expect(bad.status).toBe(400);
    expect(bad.json()).toEqual({ error: 'body/behavior must be one of run, hold, drain' });
  });

  it('lists an orphan, marked orphan: true with only what the cloud says of it, after the instances marked orphan: false', async () => {
    const url = await start();
    const view = pool.add('i-1');
    pool.orphanInstances.push({
      id: 'i-orphan',
      providerType: 'stub.large',
      address: '10.0.0.9',
      tags: { [tagKeys.pool]: 'test-pool', [tagKeys.instanceType]: 'retired-type', [tagKeys.idleBehavior]: 'hold' },
    });
    pool.orphanInstances.push({ id: 'i-untagged', providerType: 'stub.small', address: null, tags: { [tagKeys.pool]: 'test-pool' } });
    const listed = await call(url, 'GET', '/instances');
    expect(listed.status).toBe(200);
    expect(listed.json()).toEqual({
      instances: [
        { ...view, orphan: false },
        { orphan: true, instanceId: 'i-orphan', providerType: 'stub.large', address: '10.0.0.9', instanceTypeTag: 'retired-type' },
        { orphan: true, instanceId: 'i-untagged', providerType: 'stub.small', address: null, instanceTypeTag: null },
      ],
    });
    // The pool does not manage an orphan, so the routes that act on an instance do not know it.
    expect((await call(url, 'POST', '/instances/i-orphan/kill')).status).toBe(404);
  });

  it("lists a real pool's orphan from the stub cloud next to its instance", async () => {
    const stub = createStub();
    const known = stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small') });
    const orphan = stub.addInstance({ instanceType: instanceTypes.large!, tags: poolTags('retired-type') });
    const harness = new PoolHarness(stub);
    harness.pool.start();
    try {
      for (let i = 0; i < 200 && !harness.pool.status().loaded; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(harness.pool.status().loaded).toBe(true);
      const url = await start({ pool: harness.pool });
      const { instances } = (await call(url, 'GET', '/instances')).json() as InstancesResponse;
      expect(instances).toHaveLength(2);
      expect(instances[0]).toMatchObject({ orphan: false, instanceId: known.id, instanceType: 'small', providerType: 'stub.small' });
      expect(instances[1]).toEqual({ orphan: true, instanceId: orphan.id, providerType: orphan.providerType, address: orphan.address, instanceTypeTag: 'retired-type' });
    } finally {
      harness.pool.stop();
    }
  });

  it('kills an instance and returns its view', async () => {
    const url = await start();
    pool.add('i-2');
    const killed = await call(url, 'POST', '/instances/i-2/kill');
    expect(killed.status).toBe(200);
    expect(killed.json()).toMatchObject({ instanceId: 'i-2', state: 'shutdown' });
    expect(pool.kills).toEqual(['i-2']);
  });
});

describe('launch configs', () => {
  it('lists every launch config with createsFrozen null while creates are not frozen', async () => {
    const url = await start();
    const a = launchConfigs.add(launchConfigView({ id: 'small-a', weight: 2, effectiveWeight: 1.5, instances: 3, recent: { successes: 4, failures: 1, windowMs: 600_000 } }));
    const b = launchConfigs.add(launchConfigView({ id: 'small-b', state: 'broken', lastError: { at: 1_000, message: 'boot probe failed' }, nextTrialAt: 61_000 }));
    const listed = await call(url, 'GET', '/launch-configs');
    expect(listed.status).toBe(200);
    expect(listed.json()).toEqual({ launchConfigs: [a, b], createsFrozen: null } satisfies LaunchConfigsResponse);
  });

  it('lists why every create is frozen while it is', async () => {
    const url = await start();
    launchConfigs.frozen = '20 boot failures in a row across the pool';
    const listed = await call(url, 'GET', '/launch-configs');
    expect(listed.status).toBe(200);
    expect(listed.json()).toEqual({ launchConfigs: [], createsFrozen: '20 boot failures in a row across the pool' });
  });

  it('pauses, resumes and archives a config, answering it as it is after each change', async () => {
    const url = await start();
    launchConfigs.add(launchConfigView({ id: 'small-a' }));
    for (const [action, state] of [
      ['pause', 'paused'],
      ['resume', 'active'],
      ['archive', 'archived'],
    ] as const) {
      const response = await call(url, 'POST', `/launch-configs/small-a/${action}`);
      expect(response.status, action).toBe(200);
      expect((response.json() as LaunchConfigView).state).toBe(state);
      expect(response.json()).toEqual(launchConfigs.views.get('small-a'));
    }
    expect(launchConfigs.calls.filter((c) => c.method === 'changeLaunchConfig')).toEqual([
      { method: 'changeLaunchConfig', id: 'small-a', action: 'pause' },
      { method: 'changeLaunchConfig', id: 'small-a', action: 'resume' },
      { method: 'changeLaunchConfig', id: 'small-a', action: 'archive' },
    ]);
  });

  it('passes an id that needs escaping through whole', async () => {
    const url = await start();
    launchConfigs.add(launchConfigView({ id: 'small a/b' }));
    const response = await call(url, 'POST', `/launch-configs/${encodeURIComponent('small a/b')}/pause`);
    expect(response.status).toBe(200);
    expect(response.json()).toMatchObject({ id: 'small a/b', state: 'paused' });
  });

  it('answers an unknown launch config with 404 naming it', async () => {
    const url = await start();
    const response = await call(url, 'POST', '/launch-configs/small-nope/pause');
    expect(response.status).toBe(404);
    expect(response.json()).toEqual({ error: 'no launch config small-nope in this pool' });
  });

  it('answers an action the state does not allow with 409 and the reason, changing nothing', async () => {
    const url = await start();
    launchConfigs.add(launchConfigView({ id: 'small-a', state: 'archived' }));
    const response = await call(url, 'POST', '/launch-configs/small-a/resume');
    expect(response.status).toBe(409);
    expect(response.json()).toEqual({ error: 'launch config small-a is archived; it cannot resume' });
    expect(launchConfigs.views.get('small-a')?.state).toBe('archived');
  });

  it('answers an action that is not pause, resume or archive with 400, without asking the pool', async () => {
    const url = await start();
    launchConfigs.add(launchConfigView({ id: 'small-a' }));
    for (const action of ['delete', 'Pause', 'broken']) {
      const response = await call(url, 'POST', `/launch-configs/small-a/${action}`);
      expect(response.status, action).toBe(400);
      expect(response.json()).toEqual({ error: 'params/action must be one of pause, resume, archive' });
    }
    expect(launchConfigs.calls).toEqual([]);
  });

  it('matches the launch config errors by class: errors merely named or worded like them are 500s', async () => {
    const named = Object.assign(new Error('no launch config small-a in this pool'), { name: 'UnknownLaunchConfigError' });
    const alike = Object.assign(new Error('launch config small-a is archived'), { name: 'LaunchConfigStateError', launchConfigId: 'small-a' });
    for (const impostor of [named, alike]) {
      launchConfigs.changeLaunchConfig = () => {
        throw impostor;
      };
      const url = await start();
      const response = await call(url, 'POST', '/launch-configs/small-a/pause');
      expect(response.status, impostor.name).toBe(500);
      expect(response.json()).toEqual({ error: 'internal error; see the daemon log' });
      await server?.close();
      server = undefined;
    }
    // The real classes, subclassed as a pool might, keep their statuses.
    launchConfigs.changeLaunchConfig = (id) => {
      throw new (class extends LaunchConfigStateError {})(id, 'still booting a trial');
    };
    const url = await start();
    expect((await call(url, 'POST', '/launch-configs/small-a/pause')).status).toBe(409);
    launchConfigs.changeLaunchConfig = (id) => {
      throw new UnknownLaunchConfigError(id);
    };
    expect((await call(url, 'POST', '/launch-configs/small-a/pause')).status).toBe(404);
  });

  it('resumes frozen creates once: resumed true, then false', async () => {
    const url = await start();
    launchConfigs.frozen = '20 boot failures in a row across the pool';
    const first = await call(url, 'POST', '/pool/resume');
    expect(first.status).toBe(200);
    expect(first.json()).toEqual({ resumed: true });
    expect(launchConfigs.frozen).toBeNull();
    const second = await call(url, 'POST', '/pool/resume');
    expect(second.status).toBe(200);
    expect(second.json()).toEqual({ resumed: false });
    expect(launchConfigs.calls.filter((c) => c.method === 'resumeCreates')).toHaveLength(2);
  });

  it('refuses every launch config route and pool resume without a token (401), asking the pool nothing', async () => {
    const url = await start();
    launchConfigs.add(launchConfigView({ id: 'small-a' }));
    launchConfigs.frozen = 'frozen';
    for (const [method, path] of [
      ['GET', '/launch-configs'],
      ['POST', '/launch-configs/small-a/pause'],
      ['POST', '/launch-configs/small-a/archive'],
      ['POST', '/pool/resume'],
    ] as const) {
      const missing = await call(url, method, path, { authorization: null });
      expect(missing.status, path).toBe(401);
      expect(missing.challenge).toBe('Bearer realm="drover"');
      expect(missing.json()).toEqual({ error: 'missing bearer token' });
      const wrong = await call(url, method, path, { authorization: 'Bearer not-the-token' });
      expect(wrong.status, path).toBe(401);
    }
    expect(launchConfigs.calls).toEqual([]);
    expect(launchConfigs.views.get('small-a')?.state).toBe('active');
    expect(launchConfigs.frozen).toBe('frozen');
  });
});

describe('health and metrics', () => {
  it('serves /healthz without a token, and /metrics with it', async () => {
    new Counter({ name: 'drover_test_total', help: 'a counter for the test', registers: [registry] }).inc(2);
    const url = await start();
    const health = await call(url, 'GET', '/healthz', { authorization: null });
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({ ok: true });
    const metrics = await call(url, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.type).toBe(registry.contentType);
    expect(metrics.text).toContain('drover_test_total 2');
  });

  it('serves /metrics without a token with publicMetrics, and still nothing else', async () => {
    const url = await start({ publicMetrics: true });
    const metrics = await call(url, 'GET', '/metrics', { authorization: null });
    expect(metrics.status).toBe(200);
    expect(metrics.type).toBe(registry.contentType);
    expect((await call(url, 'GET', '/instances', { authorization: null })).status).toBe(401);
    expect((await call(url, 'GET', '/containers', { authorization: null })).status).toBe(401);
  });
});

describe('token', () => {
  it('matches only the same non-empty token', () => {
    expect(tokensMatch('abc', 'abc')).toBe(true);
    expect(tokensMatch('abd', 'abc')).toBe(false);
    expect(tokensMatch('abcd', 'abc')).toBe(false);
    expect(tokensMatch('', '')).toBe(false);
  });

  it('creates the token file with mode 0600 once and reads the same token after', () => {
    const path = join(dir, 'nested', 'token');
    const first = ensureToken(path);
    expect(first).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'nested')).mode & 0o777).toBe(0o700);
    expect(ensureToken(path)).toBe(first);
    expect(readFileSync(path, 'utf8').trim()).toBe(first);
  });
});

describe('wait reasons', () => {
  it("GET /containers and /containers/:uuid give a queued container's wait reason from the last pass, null for others", async () => {
    const waiting = queue.submit({ image: null, command: ['true'], env: {}, priority: 0, constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } });
    const unseen = queue.submit({ image: null, command: ['true'], env: {}, priority: 0, constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } });
    const done = queue.submit({ image: null, command: ['true'], env: {}, priority: 0, constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false } });
    queue.cancel(done.uuid);
    const reasons = new Map([
      [waiting.uuid, 'at maxInstances (3)'],
      [done.uuid, 'stale: not queued'],
    ]);
    const url = await start({ waitReason: (uuid) => reasons.get(uuid) ?? null });
    const { containers } = (await call(url, 'GET', '/containers')).json() as { containers: Array<{ uuid: string; waitReason: string | null }> };
    const byUuid = new Map(containers.map((container) => [container.uuid, container.waitReason]));
    expect(byUuid.get(waiting.uuid)).toBe('at maxInstances (3)');
    expect(byUuid.get(unseen.uuid)).toBeNull();
    expect(byUuid.get(done.uuid)).toBeNull();
    expect((await call(url, 'GET', `/containers/${waiting.uuid}`)).json()).toMatchObject({ uuid: waiting.uuid, waitReason: 'at maxInstances (3)' });
  });
});

