// `drover teardown`: every instance with the pool's tag destroyed (orphans too), with the
// containers running on them, which the queue then records as failed; refused while a daemon
// holds the state; bounded retries; nothing destroyed without a confirmation.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { tagKeys, type CloudInstance } from '../src/cloud/driver.js';
import { cloudFromConfig } from '../src/cloud/from-config.js';
import { LoopbackCloud } from '../src/cloud/loopback/loopback-cloud.js';
import { loadConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { StateLockedError, takeStateLocks } from '../src/daemon/state-lock.js';
import { everythingGone, teardown, type TeardownOptions } from '../src/daemon/teardown.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import type { ContainerSpec } from '../src/queue/types.js';
import { DEFAULT_RUNNER_PATH, ensureRunner, startCommand } from '../src/runner/deploy.js';
import { instanceTypeFixture, waitFor } from './support/fixtures.js';

const poolName = 'teardown-test';
const local = instanceTypeFixture('local', { providerType: 'loopback' });
const gpu = instanceTypeFixture('gpu', { providerType: 'loopback-gpu' });

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drover-teardown-'));
});

afterEach(async () => {
  // Whatever a failed test left running goes with its sandbox.
  if (existsSync(join(dir, 'loopback'))) {
    const cleaner = await LoopbackCloud.start({ directory: join(dir, 'loopback') });
    for (const instance of await cleaner.list({})) await cleaner.destroy(instance.id);
    await cleaner.close();
  }
  await rm(dir, { recursive: true, force: true });
});

/** A config file in the temp directory, its state there too; `driver` picks loopback or stub. */
async function writeConfig(driver: 'loopback' | 'stub', extra = ''): Promise<string> {
  const path = join(dir, `${driver}.yml`);
  await writeFile(
    path,
    `poolName: ${poolName}
cloud:
  driver: ${driver}
  loopback: { directory: ${join(dir, 'loopback')} }
${extra}
queue: { path: ${join(dir, 'state', 'queue.sqlite')} }
http: { port: 0, tokenFile: ${join(dir, 'state', 'token')} }
instanceTypes:
  local: { providerType: loopback, vcpus: 2, ramMiB: 4096, scratchGiB: 20, price: 0.1 }
`,
  );
  return path;
}

function tags(instanceType: string, pool = poolName): Record<string, string> {
  return { [tagKeys.pool]: pool, [tagKeys.instanceType]: instanceType, [tagKeys.idleBehavior]: 'run' };
}

/** True once `pid` has ended (a zombie counts: it runs nothing). */
async function processEnded(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(') ') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function recorder(answer: boolean): Pick<TeardownOptions, 'confirm' | 'print'> & { questions: string[]; lines: string[] } {
  const questions: string[] = [];
  const lines: string[] = [];
  return {
    questions,
    lines,
    confirm: async (question) => {
      questions.push(question);
      return answer;
    },
    print: (line) => lines.push(line),
  };
}

/**
 * What a stopped loopback daemon leaves: two sandboxes of the pool, one (`busy`) with container
 * `uuid` running (a shell and the sleep it waits for), an orphan of a type the config lacks, and
 * another pool's sandbox. Returns their ids and the container's pids.
 */
async function leftBehind(uuid = 'c-1'): Promise<{ ours: string[]; busy: string; idle: string; other: string; pids: number[] }> {
  const cloud = await LoopbackCloud.start({ directory: join(dir, 'loopback') });
  try {
    const busy = await cloud.create({ instanceType: local, tags: tags('local') });
    const idle = await cloud.create({ instanceType: local, tags: tags('local') });
    const orphan = await cloud.create({ instanceType: gpu, tags: tags('gpu') });
    const other = await cloud.create({ instanceType: local, tags: tags('local', 'another-pool') });
    const executor = cloud.executorFor({ id: busy.id, address: busy.address ?? '', port: busy.port ?? 22 });
    try {
      await ensureRunner(executor, DEFAULT_RUNNER_PATH);
      const start = startCommand(DEFAULT_RUNNER_PATH, {
        uuid,
        command: ['sh', '-c', 'sleep 600 & echo $! > sleep.pid; wait'],
        env: {},
        image: null,
        docker: false,
      });
      expect((await executor.run(start)).exitCode).toBe(0);
      const read = async (file: string) => {
        const result = await executor.run(`cat .drover/containers/${uuid}/${file}`);
        return result.exitCode === 0 && result.stdout.trim() !== '' ? Number(result.stdout) : undefined;
      };
      const pids = [await waitFor('the wrapper pid', () => read('pid')), await waitFor('the sleep pid', () => read('work/sleep.pid'))];
      for (const pid of pids) expect(await processEnded(pid)).toBe(false);
      return { ours: [busy.id, idle.id, orphan.id].sort(), busy: busy.id, idle: idle.id, other: other.id, pids };
    } finally {
      executor.close();
    }
  } finally {
    // The daemon is gone; its sandboxes and the container are not.
    await cloud.close();
  }
}

async function listLoopback(): Promise<CloudInstance[]> {
  const cloud = await LoopbackCloud.start({ directory: join(dir, 'loopback') });
  try {
    return await cloud.list({});
  } finally {
    await cloud.close();
  }
}

describe('teardown on the loopback driver', () => {
  it("destroys every sandbox with the pool's tag, orphans included, and kills the containers running in them", async () => {
    const { ours, other, pids } = await leftBehind();
    const config = loadConfig(await writeConfig('loopback'));
    const operator = recorder(true);

    const report = await teardown({ config, ...operator, retryDelayMs: 0 });

    expect(operator.questions).toEqual([`destroy 3 instances of pool ${poolName}? [y/N]`]);
    expect(report.listed.map((instance) => instance.id).sort()).toEqual(ours);
    expect([...report.destroyed].sort()).toEqual(ours);
    expect(report.remaining).toEqual([]);
    expect(everythingGone(report)).toBe(true);
    // Printed before the question: each instance, the orphan marked as such.
    expect(operator.lines.filter((line) => /orphan \(type "gpu" not in the config/.test(line))).toHaveLength(1);
    expect(operator.lines.at(-1)).toBe(`destroyed 3 of 3 instances of pool ${poolName}`);

    expect((await listLoopback()).map((instance) => instance.id)).toEqual([other]);
    for (const id of ours) expect(existsSync(join(dir, 'loopback', 'instances', id))).toBe(false);
    for (const pid of pids) await waitFor(`process ${pid} to be killed`, async () => ((await processEnded(pid)) ? true : undefined));
  });

  const sample: ContainerSpec = {
    image: null,
    command: ['true'],
    env: {},
    constraints: { vcpus: 1, ramMiB: 64, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
  };

  it('fails the containers the queue has on the destroyed sandboxes; queued ones stay queued', async () => {
    const config = loadConfig(await writeConfig('loopback'));
    // The queue as a stopped daemon left it, the running container's process still in its sandbox.
    let queue = new SqliteQueue({ path: config.queue.path, maxAttempts: 3 });
    const running = queue.submit(sample).uuid;
    const locked = queue.submit(sample).uuid;
    const exited = queue.submit(sample).uuid;
    const elsewhere = queue.submit(sample).uuid;
    const queued = queue.submit(sample).uuid;
    const { busy, idle, other, pids } = await leftBehind(running);
    queue.lock(running, busy, 'local');
    queue.markRunning(running, busy, 'local');
    // A start whose answer never came, and one whose exit was recorded before its logs were read.
    queue.lock(locked, idle, 'local');
    queue.lock(exited, idle, 'local');
    queue.markRunning(exited, idle, 'local');
    queue.recordExit(exited, 3);
    // Recorded on an instance teardown does not destroy (another pool's sandbox here): left as it is.
    queue.lock(elsewhere, other, 'local');
    queue.markRunning(elsewhere, other, 'local');
    queue.close();
    const operator = recorder(true);

    const report = await teardown({ config, ...operator, retryDelayMs: 0 });

    expect(everythingGone(report)).toBe(true);
    expect([...report.endedContainers].sort()).toEqual([running, locked, exited].sort());
    expect(report).toMatchObject({ queuedContainers: 1, queueProblem: null });
    expect(operator.lines.slice(-3)).toEqual([
      'failed 2 containers locked or running on the destroyed instances: torn down with its instance by drover teardown',
      'completed 1 container whose exit was recorded before its instance was destroyed',
      '1 queued container stays queued and runs at the next drover run',
    ]);
    queue = new SqliteQueue({ path: config.queue.path, maxAttempts: 3 });
    try {
      expect(queue.get(running)).toMatchObject({ state: 'failed', reason: `torn down with its instance ${busy} by drover teardown` });
      expect(queue.get(locked)).toMatchObject({ state: 'failed', reason: `torn down with its instance ${idle} by drover teardown` });
      expect(queue.get(exited)).toMatchObject({
        state: 'complete',
        exitCode: 3,
        reason: `exited with 3; its output was not collected: torn down with its instance ${idle} by drover teardown`,
      });
      expect(queue.get(elsewhere)).toMatchObject({ state: 'running', instanceId: other });
      expect(queue.get(queued)).toMatchObject({ state: 'queued', attempts: 0 });
      // What a restarted daemon schedules: the queued one, and what runs on another pool's instance.
      expect(queue.pending().map((container) => container.uuid).sort()).toEqual([elsewhere, queued].sort());
    } finally {
      queue.close();
    }
    for (const pid of pids) await waitFor(`process ${pid} to be killed`, async () => ((await processEnded(pid)) ? true : undefined));
  });

  it('a queue file it cannot use: reported, after the sandboxes are destroyed', async () => {
    const config = loadConfig(await writeConfig('loopback'));
    mkdirSync(join(dir, 'state'), { recursive: true, mode: 0o700 });
    writeFileSync(config.queue.path, randomBytes(8192), { mode: 0o600 });
    const { ours } = await leftBehind();
    const operator = recorder(true);

    const report = await teardown({ config, ...operator, retryDelayMs: 0 });

    expect([...report.destroyed].sort()).toEqual(ours);
    expect(report.queueProblem).toBe(
      `queue.path: ${config.queue.path}: not a SQLite database (SQLite: file is not a database); move it aside or point queue.path at another file`,
    );
    expect(operator.lines.at(-1)).toBe(
      `the queue was not updated: ${report.queueProblem}; the containers it has on the destroyed instances run again at the next drover run`,
    );
  });

  it('refuses while a daemon holds the state locks, naming it, and destroys nothing', async () => {
    const { ours, other } = await leftBehind();
    const configPath = await writeConfig('loopback');
    const config = loadConfig(configPath);
    const daemon = takeStateLocks(config, configPath);
    const operator = recorder(true);
    try {
      const refused = teardown({ config, ...operator, retryDelayMs: 0 });
      await expect(refused).rejects.toThrow(StateLockedError);
      await expect(refused).rejects.toThrow(new RegExp(`drover pid ${process.pid} .*\\(config ${configPath}\\); stop it first`));
    } finally {
      daemon.release();
    }
    expect(operator.questions).toEqual([]);
    expect((await listLoopback()).map((instance) => instance.id).sort()).toEqual([...ours, other].sort());
  });

  it('destroys nothing when the operator says no', async () => {
    const { ours, other, pids } = await leftBehind();
    const operator = recorder(false);
    const report = await teardown({ config: loadConfig(await writeConfig('loopback')), ...operator, retryDelayMs: 0 });
    expect(report).toMatchObject({ confirmed: false, destroyed: [] });
    expect(everythingGone(report)).toBe(false);
    expect(operator.lines.at(-1)).toBe('nothing was destroyed');
    expect((await listLoopback()).map((instance) => instance.id).sort()).toEqual([...ours, other].sort());
    for (const pid of pids) expect(await processEnded(pid)).toBe(false);
  });
});

describe('teardown on the stub cloud', () => {
  async function stubCloud(config: Config) {
    const cloud = await cloudFromConfig(config, systemClock, new Registry());
    const stub = cloud.stub!;
    const orphan = stub.addInstance({ instanceType: gpu, tags: tags('gpu') });
    const other = stub.addInstance({ instanceType: local, tags: tags('local', 'another-pool') });
    return { cloud, stub, orphan, other };
  }

  const seeded = '  stub: { seedInstances: [{ instanceType: local, count: 2 }] }';

  it('retries failed destroys a bounded number of times: what fails once goes on the next round', async () => {
    const config = loadConfig(await writeConfig('stub', seeded));
    const { cloud, stub, orphan, other } = await stubCloud(config);
    stub.faults.destroyErrorRate = 1;
    const operator = recorder(true);
    const print = (line: string) => {
      operator.lines.push(line);
      // The first round's failures are reported; then the cloud recovers.
      if (line.startsWith('not yet destroyed')) stub.faults.destroyErrorRate = 0;
    };

    const report = await teardown({ config, confirm: operator.confirm, print, cloud, retryDelayMs: 0 });

    expect(report.listed).toHaveLength(3);
    expect(report.listed.map((instance) => instance.id)).toContain(orphan.id);
    expect(report.destroyed).toHaveLength(3);
    expect(everythingGone(report)).toBe(true);
    expect(operator.lines.filter((line) => line.startsWith('not yet destroyed'))).toHaveLength(3);
    expect(operator.lines.some((line) => /round 1 of 3\): destroy failed: destroy of stub-\d+ failed; trying again/.test(line))).toBe(true);
    expect(stub.liveInstances().map((instance) => instance.id)).toEqual([other.id]);
  });

  it('gives up after maxAttempts rounds and reports what is left, with the reason', async () => {
    const config = loadConfig(await writeConfig('stub', seeded));
    const { cloud, stub } = await stubCloud(config);
    stub.faults.destroyErrorRate = 1;
    const operator = recorder(true);

    const report = await teardown({ config, ...operator, cloud, retryDelayMs: 0, maxAttempts: 2 });

    expect(stub.callCounts.destroy).toBe(6);
    expect(report.destroyed).toEqual([]);
    expect(report.remaining).toHaveLength(3);
    expect(report.remaining[0]?.reason).toMatch(/^destroy failed: destroy of stub-\d+ failed$/);
    expect(everythingGone(report)).toBe(false);
    expect(operator.lines.filter((line) => line.startsWith('NOT destroyed: '))).toHaveLength(3);
    expect(stub.liveCount()).toBe(4);
  });

  it('asks nothing and succeeds when the pool has no instances', async () => {
    const config = loadConfig(await writeConfig('stub'));
    const operator = recorder(true);
    const report = await teardown({ config, ...operator, retryDelayMs: 0 });
    expect(operator.questions).toEqual([]);
    expect(operator.lines.at(-1)).toBe(`pool ${poolName} has no instances`);
    expect(everythingGone(report)).toBe(true);
  });
});

describe('drover teardown (command line)', () => {
  // main.ts registers the command too; this registers it alone on a fresh program.
  const script = `
const { Command } = await import('commander');
const { registerTeardownCommand } = await import(${JSON.stringify(pathToFileURL(resolve('src/cli/teardown-command.ts')).href)});
const program = new Command('drover');
registerTeardownCommand(program);
await program.parseAsync(process.argv.slice(1), { from: 'user' });
`;

  function runTeardown(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolvePromise, reject) => {
      // stdin is not a terminal here, as in a script or CI job.
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, 'teardown', ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      child.stdin.end();
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
    });
  }

  it('without a terminal and without --yes: lists, refuses naming --yes, exits 2 and destroys nothing', async () => {
    const { ours, other, pids } = await leftBehind();
    const result = await runTeardown(['--config', await writeConfig('loopback')]);
    expect(result.stderr).toContain('run it again with --yes');
    expect(result.code).toBe(2);
    for (const id of ours) expect(result.stdout).toContain(id);
    expect(result.stdout).not.toContain(other);
    expect((await listLoopback()).map((instance) => instance.id).sort()).toEqual([...ours, other].sort());
    for (const pid of pids) expect(await processEnded(pid)).toBe(false);
  });

  it('with --yes: destroys them all and exits 0', async () => {
    const { other } = await leftBehind();
    const result = await runTeardown(['--yes', '--config', await writeConfig('loopback')]);
    expect(result.stderr).toBe('');
    expect(result.stdout).toContain(`destroyed 3 of 3 instances of pool ${poolName}`);
    expect(result.code).toBe(0);
    expect((await listLoopback()).map((instance) => instance.id)).toEqual([other]);
  });
});
