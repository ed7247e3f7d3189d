// One dispatcher per queue and per loopback pool: the state lock refuses a second taker, naming the
// holder, and the OS frees it when the holder dies, however it dies. Lock holders are real child
// processes, since a lock's behaviour between two processes is what matters.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { StateLockedError, takeStateLocks } from '../src/daemon/state-lock.js';
import { shippedConfig } from './support/shipped-config.js';
import { droverCli } from './support/cli-command.js';

interface TakeResult {
  taken: boolean;
  pid: number;
  name?: string;
  message?: string;
  key?: string;
  holder?: { pid: number; host: string; since: string; config?: string };
}

// Takes the config's state locks in a process of its own. mode: `hold` drops its handle on them,
// collects garbage (a dropped handle must not let the lock go) and keeps them until stdin closes,
// then exits without releasing them; `release` releases them and exits; `once` exits at once.
const takerScript = `
const { takeStateLocks } = await import(${JSON.stringify(pathToFileURL(resolve('src/daemon/state-lock.ts')).href)});
const { loadConfig } = await import(${JSON.stringify(pathToFileURL(resolve('src/config/load.ts')).href)});
const [configPath, mode] = process.argv.slice(1);
try {
  const lock = takeStateLocks(loadConfig(configPath), configPath);
  if (mode === 'release') lock.release();
  const report = () => process.stdout.write(JSON.stringify({ taken: true, pid: process.pid }) + '\\n');
  if (mode !== 'hold') {
    report();
    process.exit(0);
  }
  setImmediate(() => {
    globalThis.gc();
    report();
  });
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
} catch (err) {
  process.stdout.write(JSON.stringify({ taken: false, pid: process.pid, name: err.name, message: err.message, key: err.key, holder: err.holder }) + '\\n');
  process.exit(0);
}
`;

const children: ChildProcessWithoutNullStreams[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

function spawnTaker(configPath: string, mode: 'hold' | 'release' | 'once'): { child: ChildProcessWithoutNullStreams; result: Promise<TakeResult> } {
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', takerScript, configPath, mode]);
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const result = new Promise<TakeResult>((resolvePromise, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const newline = stdout.indexOf('\n');
      if (newline >= 0) resolvePromise(JSON.parse(stdout.slice(0, newline)) as TakeResult);
    });
    child.on('close', (code, signal) => reject(new Error(`taker ended (${code ?? signal}) without a result: ${stderr}`)));
  });
  return { child, result };
}

async function take(configPath: string, mode: 'release' | 'once' = 'once'): Promise<TakeResult> {
  const { child, result } = spawnTaker(configPath, mode);
  const taken = await result;
  await exited(child);
  return taken;
}

function exited(child: ChildProcessWithoutNullStreams): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolvePromise) => child.once('close', () => resolvePromise()));
}

/** A loopback config whose state lives in `dir` (the queue file may be named apart). */
function writeConfig(dir: string, name: string, options: { queue?: string; port?: number } = {}): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    shippedConfig('loopback.yml', {
      'cloud.loopback.directory': join(dir, 'loopback'),
      'queue.path': join(dir, options.queue ?? 'queue.sqlite'),
      'http.tokenFile': join(dir, 'token'),
      'http.port': options.port ?? 0,
    }),
  );
  return path;
}

describe('state lock', () => {
  it('refuses a second taker, naming the key, the state and the holder (pid, host, since, config)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const config = writeConfig(dir, 'first.yml');
    const holder = spawnTaker(config, 'hold');
    const held = await holder.result;
    expect(held.taken).toBe(true);

    const second = await take(writeConfig(dir, 'second.yml', { port: 1 }));
    expect(second.taken).toBe(false);
    expect(second.name).toBe('StateLockedError');
    expect(second.key).toBe('queue.path');
    expect(second.holder).toMatchObject({ pid: held.pid, host: hostname(), config });
    expect(second.holder?.since).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    expect(second.message).toBe(
      `queue.path: ${join(dir, 'queue.sqlite')} is in use by drover pid ${held.pid} on host ${hostname()} since ${second.holder?.since} (config ${config}); stop it first`,
    );
    // The sidecar naming the holder is private to its owner.
    expect(statSync(join(dir, 'queue.sqlite.lock.holder')).mode & 0o777).toBe(0o600);
    expect(holder.child.exitCode).toBeNull();
  });

  it('refuses a second daemon on the same loopback directory even with another queue file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const holder = spawnTaker(writeConfig(dir, 'first.yml', { queue: 'a.sqlite' }), 'hold');
    const held = await holder.result;
    expect(held.taken).toBe(true);

    const second = await take(writeConfig(dir, 'second.yml', { queue: 'b.sqlite' }));
    expect(second.taken).toBe(false);
    expect(second.key).toBe('cloud.loopback.directory');
    expect(second.message).toContain(`cloud.loopback.directory: ${join(dir, 'loopback')} is in use by drover pid ${held.pid}`);
    // Refused whole: the queue lock it took first is let go again.
    holder.child.stdin.end();
    await exited(holder.child);
    expect((await take(writeConfig(dir, 'third.yml', { queue: 'b.sqlite' }))).taken).toBe(true);
  });

  it('is free again once the holder exits normally, even without releasing it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const config = writeConfig(dir, 'drover.yml');
    const holder = spawnTaker(config, 'hold');
    expect((await holder.result).taken).toBe(true);
    holder.child.stdin.end();
    await exited(holder.child);
    expect(holder.child.exitCode).toBe(0);

    const next = await take(config);
    expect(next.taken).toBe(true);
  });

  it('is free again once the holder is SIGKILLed: a crashed daemon leaves no stale lock', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const config = writeConfig(dir, 'drover.yml');
    const holder = spawnTaker(config, 'hold');
    const held = await holder.result;
    expect(held.taken).toBe(true);
    holder.child.kill('SIGKILL');
    await exited(holder.child);
    expect(holder.child.signalCode).toBe('SIGKILL');
    // The dead holder's sidecar is still there; it does not matter.
    expect(JSON.parse(readFileSync(join(dir, 'queue.sqlite.lock.holder'), 'utf8'))).toMatchObject({ pid: held.pid });

    const next = spawnTaker(config, 'hold');
    const taken = await next.result;
    expect(taken.taken).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'queue.sqlite.lock.holder'), 'utf8'))).toMatchObject({ pid: taken.pid });
    // ...and the new holder is as exclusive as the first.
    expect((await take(config)).holder?.pid).toBe(taken.pid);
  });

  it('release removes the holder sidecar and frees the lock', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const config = writeConfig(dir, 'drover.yml');
    expect((await take(config, 'release')).taken).toBe(true);
    expect(existsSync(join(dir, 'queue.sqlite.lock.holder'))).toBe(false);
    expect(existsSync(join(dir, 'loopback', '.lock.holder'))).toBe(false);
    expect((await take(config)).taken).toBe(true);
  });

  it('also refuses a second taker in the same process (as two in-process daemons would be)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const config = loadConfig(writeConfig(dir, 'drover.yml'));
    const lock = takeStateLocks(config);
    try {
      expect(() => takeStateLocks(config)).toThrow(StateLockedError);
    } finally {
      lock.release();
    }
    takeStateLocks(config).release();
  });
});

describe('drover run with a daemon already on its state', () => {
  it('exits with code 2 naming queue.path and the first daemon, which keeps running', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lock-'));
    const first = spawn(process.execPath, [...droverCli, 'run', '--config', writeConfig(dir, 'first.yml')]);
    children.push(first);
    let firstOut = '';
    let firstErr = '';
    first.stderr.on('data', (chunk: Buffer) => (firstErr += chunk.toString()));
    const firstUrl = await new Promise<string>((resolvePromise, reject) => {
      first.stdout.on('data', (chunk: Buffer) => {
        firstOut += chunk.toString();
        const started = firstOut.split('\n').find((line) => line.includes('"drover started"'));
        if (started) resolvePromise((JSON.parse(started) as { url: string }).url);
      });
      first.on('close', (code) => reject(new Error(`first daemon ended (${code}): ${firstErr}`)));
    });

    // The case: the same config but for http.port.
    const port = await freePort();
    const second = spawn(process.execPath, [...droverCli, 'run', '--config', writeConfig(dir, 'second.yml', { port })]);
    children.push(second);
    let secondOut = '';
    let secondErr = '';
    second.stdout.on('data', (chunk: Buffer) => {
      secondOut += chunk.toString();
      // On code without the lock it starts; stop it so the test fails instead of hanging.
      if (secondOut.includes('"drover started"')) second.kill('SIGINT');
    });
    second.stderr.on('data', (chunk: Buffer) => (secondErr += chunk.toString()));
    const code = await new Promise<number | null>((resolvePromise) => second.on('close', resolvePromise));

    expect(secondOut).not.toContain('drover started');
    expect(code).toBe(2);
    expect(secondErr).toContain('drover: queue.path:');
    expect(secondErr).toContain(`is in use by drover pid ${first.pid}`);
    expect(secondErr).toContain('stop it first');

    // The first is untouched: still running and serving its API.
    expect(first.exitCode).toBeNull();
    expect((await fetch(`${firstUrl}/healthz`)).status).toBe(200);

    first.kill('SIGINT');
    const firstCode = await new Promise<number | null>((resolvePromise) => first.on('close', resolvePromise));
    expect(firstCode).toBe(0);
    // A clean stop removes the holder sidecar.
    expect(existsSync(join(dir, 'queue.sqlite.lock.holder'))).toBe(false);
  });
});

function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePromise(port));
    });
  });
}
