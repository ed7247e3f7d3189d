// The instance secret end to end on the loopback cloud: a pool creates an instance, and on first
// SSH contact pins its host key only if the sandbox holds the secret of that create.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { tagKeys, type CloudDriver, type CloudInstance, type CreateRequest } from '../src/cloud/driver.js';
import { instanceSecretFile } from '../src/cloud/init-script.js';
import { LoopbackCloud } from '../src/cloud/loopback/loopback-cloud.js';
import { Pool, secretMismatchReason } from '../src/pool/pool.js';
import { DEFAULT_RUNNER_PATH, ensureRunner } from '../src/runner/deploy.js';
import { instanceTypeFixture, waitFor } from './support/fixtures.js';
import { poolSettings, type LogLine } from './support/pool-harness.js';

const small = instanceTypeFixture('small', { providerType: 'loopback-small' });

let dir: string;
let cloud: LoopbackCloud;
let pool: Pool | undefined;
let logs: LogLine[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drover-instance-secret-'));
  cloud = await LoopbackCloud.start({ directory: dir });
  logs = [];
});

afterEach(async () => {
  pool?.stop();
  pool = undefined;
  await cloud.close();
  await rm(dir, { recursive: true, force: true });
});

interface PoolOptions {
  /** Runs on each sandbox after create, before first contact. */
  tamper?: (home: string) => Promise<void>;
  /** The driver answers every instance without its drover-secret tag. */
  hideSecretTag?: boolean;
  timeoutBooting?: number;
}

function withoutSecretTag(instance: CloudInstance): CloudInstance {
  const { [tagKeys.secret]: _secret, ...tags } = instance.tags;
  return { ...instance, tags };
}

/** A pool on the loopback cloud, with `launch` set as for a real VM cloud. */
function startPool({ tamper, hideSecretTag = false, timeoutBooting }: PoolOptions = {}): Pool {
  const answer = (instance: CloudInstance) => (hideSecretTag ? withoutSecretTag(instance) : instance);
  const driver: CloudDriver = {
    create: async (request: CreateRequest) => {
      const instance = await cloud.create(request);
      await tamper?.(cloud.homeOf(instance.id));
      return answer(instance);
    },
    list: async (filter) => (await cloud.list(filter)).map(answer),
    destroy: (id) => cloud.destroy(id),
    setTags: (id, tags) => cloud.setTags(id, tags),
  };
  const sink = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const p = new Pool({
    poolName: 'secret-test',
    driver,
    executorFor: (target) => cloud.executorFor(target),
    settings: poolSettings({ probeInterval: 50, syncInterval: 200, runnerCommand: DEFAULT_RUNNER_PATH, ...(timeoutBooting !== undefined && { timeoutBooting }) }),
    instanceTypes: { small },
    logger: pino({ level: 'info' }, sink),
    clock: systemClock,
    launch: { username: cloud.username, sshPublicKey: cloud.clientPublicKey },
    prepareInstance: async (executor) => {
      await ensureRunner(executor, DEFAULT_RUNNER_PATH);
    },
  });
  pool = p;
  p.start();
  return p;
}

async function createOne(p: Pool): Promise<string> {
  await waitFor('the first listing', () => Promise.resolve(p.status().loaded ? true : undefined));
  expect(p.create('small')).toBe(true);
  return waitFor('the create to return', () => Promise.resolve(p.instances()[0]?.instanceId ?? undefined));
}

async function pins(): Promise<Record<string, string>> {
  const path = join(dir, 'known_hosts.json');
  return existsSync(path) ? (JSON.parse(await readFile(path, 'utf8')) as Record<string, string>) : {};
}

// Real SSH, a real runner install: allow for a loaded machine.
describe('instance secret', { timeout: 60_000 }, () => {
  it('pins the host key of an instance that holds its secret, and uses it', async () => {
    const p = startPool();
    const id = await createOne(p);
    await waitFor('the instance to be idle', () => Promise.resolve(p.instance(id)?.state === 'idle' ? true : undefined), 30_000);
    expect((await pins())[id]).toMatch(/^SHA256:/);
    expect(logs.filter((line) => line.level === 50)).toEqual([]);
  });

  it('shuts down an instance whose secret was changed before first contact, pinning nothing', async () => {
    const p = startPool({ tamper: (home) => writeFile(join(home, instanceSecretFile), `${'00'.repeat(32)}\n`) });
    const id = await createOne(p);
    await waitFor('the instance to be destroyed', async () => ((await cloud.list({})).length === 0 ? true : undefined), 30_000);
    const errors = logs.filter((line) => line.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ instanceId: id, errorClass: 'InstanceSecretMismatchError' });
    expect(logs.some((line) => line.msg === 'instance state changed' && line.instanceId === id && line.reason === secretMismatchReason)).toBe(true);
    expect((await pins())[id]).toBeUndefined();
  });

  it('never pins the host key of an instance without a secret in its tags, and shuts it down at timeoutBooting', async () => {
    const p = startPool({ hideSecretTag: true, timeoutBooting: 1_500 });
    const id = await createOne(p);
    await waitFor('the instance to be destroyed', async () => ((await cloud.list({})).length === 0 ? true : undefined), 30_000);
    const refusals = logs.filter((line) => line.msg.startsWith('no instance secret in its tags: not pinning its host key'));
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ instanceId: id, errorClass: 'InstanceSecretMissingError' });
    expect(logs.some((line) => line.msg === 'instance state changed' && line.instanceId === id && line.reason === 'boot probe did not pass within timeoutBooting')).toBe(true);
    expect((await pins())[id]).toBeUndefined();
  });
});
