// The loopback cloud end to end: sandboxes on this machine, a real SSH connection, the real runner.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitFor } from './support/fixtures.js';
import type { CloudInstance, InstanceType } from '../src/cloud/driver.js';
import { CloudError } from '../src/cloud/errors.js';
import { LoopbackCloud } from '../src/cloud/loopback/loopback-cloud.js';
import { parseRunnerList, type RunnerListing } from '../src/pool/runner-list.js';
import {
  DEFAULT_RUNNER_PATH,
  ensureRunner,
  listCommand,
  logsCommand,
  removeCommand,
  runnerScript,
  startCommand,
} from '../src/runner/deploy.js';
import type { Executor } from '../src/ssh/executor.js';

const small: InstanceType = {
  name: 'small',
  providerType: 'loopback-small',
  vcpus: 1,
  ramMiB: 512,
  scratchGiB: 1,
  gpus: 0,
  price: 0,
  preemptible: false,
};

let dir: string;
let cloud: LoopbackCloud;
const executors: Executor[] = [];

function connect(target: CloudInstance, via: LoopbackCloud = cloud): Executor {
  const executor = via.executorFor({ id: target.id, address: target.address ?? '', port: target.port ?? 22 });
  executors.push(executor);
  return executor;
}

async function ok(executor: Executor, command: string, stdin?: string): Promise<string> {
  const result = await executor.run(command, stdin === undefined ? {} : { stdin });
  if (result.exitCode !== 0) throw new Error(`${command} exited ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
}

async function containers(executor: Executor): Promise<RunnerListing> {
  return parseRunnerList(await ok(executor, listCommand(DEFAULT_RUNNER_PATH)));
}

function exitCodeOf(executor: Executor, uuid: string): Promise<number> {
  return waitFor(`${uuid} to exit`, async () => (await containers(executor)).exited.get(uuid));
}

/** True once `pid` has ended (a zombie counts as ended: it runs nothing). */
async function processEnded(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  if (!existsSync('/proc/self/stat')) return false;
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(') ') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drover-loopback-'));
  cloud = await LoopbackCloud.start({ directory: dir });
});

afterEach(async () => {
  for (const executor of executors.splice(0)) executor.close();
  await cloud.close();
  // destroy() kills whatever a test left running in its sandboxes.
  const cleaner = await LoopbackCloud.start({ directory: dir });
  for (const instance of await cleaner.list({})) await cleaner.destroy(instance.id);
  await cleaner.close();
  await rm(dir, { recursive: true, force: true });
});

describe('LoopbackCloud', () => {
  it('creates instances, lists them by tag and merges tags', async () => {
    const a = await cloud.create({ instanceType: small, tags: { pool: 'p', role: 'a' } });
    const b = await cloud.create({ instanceType: small, tags: { pool: 'p', role: 'b' } });
    for (const instance of [a, b]) {
      expect(instance.id).toMatch(/^lo-[0-9a-f]{8}$/);
      expect(instance.address).toBe('127.0.0.1');
      expect(instance.providerType).toBe('loopback-small');
      expect(instance.port).toBeGreaterThan(0);
    }
    expect(a.id).not.toBe(b.id);
    expect(a.port).not.toBe(b.port);

    expect((await cloud.list({ pool: 'p' })).map((i) => i.id).sort()).toEqual([a.id, b.id].sort());
    expect(await cloud.list({ role: 'a' })).toEqual([a]);
    expect(await cloud.list({ pool: 'other' })).toEqual([]);

    await cloud.setTags(a.id, { role: 'c', extra: '1' });
    expect((await cloud.list({ extra: '1' }))[0]?.tags).toEqual({ pool: 'p', role: 'c', extra: '1' });
    await expect(cloud.setTags('lo-00000000', { x: 'y' })).rejects.toBeInstanceOf(CloudError);

    const record = JSON.parse(await readFile(join(dir, 'instances', a.id, 'instance.json'), 'utf8')) as Record<string, unknown>;
    expect(record).toMatchObject({ id: a.id, providerType: 'loopback-small', tags: { pool: 'p', role: 'c', extra: '1' } });
    expect(typeof record.createdAt).toBe('string');
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
  });

  it('runs commands over SSH in the instance home', async () => {
    const instance = await cloud.create({ instanceType: small, tags: {} });
    const executor = connect(instance);
    const home = await realpath(cloud.homeOf(instance.id));

    expect(await realpath((await ok(executor, 'pwd')).trim())).toBe(home);
    expect((await ok(executor, 'echo "$HOME"')).trim()).toBe(cloud.homeOf(instance.id));
    expect(await ok(executor, 'cat', 'through stdin')).toBe('through stdin');
    expect(await executor.run('echo oops >&2; exit 7')).toEqual({ stdout: '', stderr: 'oops\n', exitCode: 7 });
    // The daemon's own settings do not leak into the sandbox.
    expect(await ok(executor, 'echo "${DROVER_RUNNER_DIR-unset}"')).toBe('unset\n');
  });

  it('installs the runner once and runs containers through it', async () => {
    const instance = await cloud.create({ instanceType: small, tags: {} });
    const executor = connect(instance);

    expect(await ensureRunner(executor, DEFAULT_RUNNER_PATH)).toBe('installed');
    expect(await ensureRunner(executor, DEFAULT_RUNNER_PATH)).toBe('present');
    expect(await readFile(join(cloud.homeOf(instance.id), DEFAULT_RUNNER_PATH), 'utf8')).toBe(runnerScript());
    // The sandbox PATH finds it by name, as the default runnerCommand expects.
    expect(await ok(executor, 'drover-runner version')).toBe('drover-runner 1\n');

    const uuid = 'job-1';
    const start = startCommand(DEFAULT_RUNNER_PATH, {
      uuid,
      command: ['sh', '-c', 'echo "hello $WHO"; exit 5'],
      env: { WHO: "o'brien" },
      image: null,
      docker: false,
    });
    expect(await ok(executor, start)).toBe('');
    expect(await exitCodeOf(executor, uuid)).toBe(5);
    expect(await ok(executor, logsCommand(DEFAULT_RUNNER_PATH, uuid))).toBe("hello o'brien\n");

    // A changed runner is replaced.
    await ok(executor, `echo '# edited' >> ${DEFAULT_RUNNER_PATH}`);
    expect(await ensureRunner(executor, DEFAULT_RUNNER_PATH)).toBe('installed');

    await ok(executor, removeCommand(DEFAULT_RUNNER_PATH, uuid));
    expect(await ok(executor, listCommand(DEFAULT_RUNNER_PATH))).toBe('');
  });

  it('destroys an instance: its containers are killed and its sandbox removed', async () => {
    const doomed = await cloud.create({ instanceType: small, tags: { pool: 'p' } });
    const kept = await cloud.create({ instanceType: small, tags: { pool: 'p' } });
    const executor = connect(doomed);
    await ensureRunner(executor, DEFAULT_RUNNER_PATH);
    await ok(executor, startCommand(DEFAULT_RUNNER_PATH, { uuid: 'sleeper', command: ['sleep', '60'], env: {}, image: null, docker: false }));
    expect((await containers(executor)).running).toEqual(['sleeper']);
    const pid = Number(await ok(executor, 'cat .drover/containers/sleeper/pid'));
    expect(await processEnded(pid)).toBe(false);

    await cloud.destroy(doomed.id);
    expect(existsSync(join(dir, 'instances', doomed.id))).toBe(false);
    expect((await cloud.list({})).map((i) => i.id)).toEqual([kept.id]);
    await waitFor('the container to be killed', async () => ((await processEnded(pid)) ? true : undefined));
    // Destroying what is gone, or never was, is fine.
    await cloud.destroy(doomed.id);
    await cloud.destroy('lo-ffffffff');
    await expect(executor.run('true')).rejects.toThrow();
  });

  it('destroy kills a container the runner could not give a process group (no setsid), with what it started', async () => {
    const doomed = await cloud.create({ instanceType: small, tags: { pool: 'p' } });
    // As the runner leaves it without setsid: the wrapper's pid recorded, in no group of its own
    // (this one is in the test's group), its command a child and that command's own child.
    const wrapper = spawn('sh', ['-c', 'sh -c "sleep 600 & echo \\$!; wait" & wait'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const grandchild = Number(await new Promise<string>((resolve) => wrapper.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString()))));
    const state = join(cloud.homeOf(doomed.id), '.drover', 'containers', 'no-group');
    await mkdir(state, { recursive: true });
    await writeFile(join(state, 'pid'), `${wrapper.pid}\n`);
    expect(await processEnded(grandchild)).toBe(false);

    await cloud.destroy(doomed.id);
    await waitFor('the wrapper to be killed', async () => ((await processEnded(wrapper.pid!)) ? true : undefined));
    await waitFor('what the container started to be killed', async () => ((await processEnded(grandchild)) ? true : undefined));
  });

  it('hands its instances, containers and host keys over to the next daemon on the same directory', async () => {
    const instance = await cloud.create({ instanceType: small, tags: { pool: 'p' } });
    const first = connect(instance);
    await ensureRunner(first, DEFAULT_RUNNER_PATH);
    // Waits for a file so that it is certainly still running across the restart.
    await ok(
      first,
      startCommand(DEFAULT_RUNNER_PATH, {
        uuid: 'long',
        command: ['sh', '-c', 'while [ ! -f go ]; do sleep 0.02; done; exit 4'],
        env: {},
        image: null,
        docker: false,
      }),
    );
    const pinned = JSON.parse(await readFile(join(dir, 'known_hosts.json'), 'utf8')) as Record<string, string>;
    expect(pinned[instance.id]).toMatch(/^SHA256:/);

    first.close();
    await cloud.close();
    cloud = await LoopbackCloud.start({ directory: dir });

    const [again, ...others] = await cloud.list({ pool: 'p' });
    expect(others).toEqual([]);
    expect(again).toMatchObject({ id: instance.id, address: '127.0.0.1', tags: { pool: 'p' } });
    // A new executor (new pin store read from the file) still accepts the same host key.
    const second = connect(again as CloudInstance);
    expect((await containers(second)).running).toEqual(['long']);
    await ok(second, 'touch .drover/containers/long/work/go');
    expect(await exitCodeOf(second, 'long')).toBe(4);
  });

  it('refuses SSH connections while an instance boots', async () => {
    await cloud.close();
    cloud = await LoopbackCloud.start({ directory: dir, bootDelayMs: 3_600_000 });
    const booting = await cloud.create({ instanceType: small, tags: {} });
    await expect(connect(booting).run('true')).rejects.toThrow(/SSH connection/);
  });
});
