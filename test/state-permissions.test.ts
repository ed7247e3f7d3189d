// The daemon's state is private: a new queue file is 0600 in a 0700 directory whatever the umask,
// and start-up refuses state that group or others can read or write, naming the key, the path,
// its mode and the fix, without changing the operator's file.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { ensurePrivateState, StatePermissionError } from '../src/daemon/state-permissions.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { spec } from './support/dispatch-harness.js';
import { runDrover } from './support/run-drover.js';
import { shippedConfig } from './support/shipped-config.js';

const modeOf = (path: string) => statSync(path).mode & 0o777;

// A umask that would make SQLite's own files 0644 and mkdir's directories 0755, as on most machines.
let savedUmask: number;
beforeEach(() => {
  savedUmask = process.umask(0o022);
});
afterEach(() => {
  process.umask(savedUmask);
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'drover-perm-'));
}

/** A config file with the daemon's state under `dir`; the stub driver unless `loopback`. */
function writeConfig(dir: string, state: { queue: string; token: string; loopback?: string }): string {
  const path = join(dir, 'config.yml');
  const settings = { 'queue.path': state.queue, 'http.tokenFile': state.token, 'http.port': 0 };
  writeFileSync(
    path,
    state.loopback
      ? shippedConfig('loopback.yml', { ...settings, 'cloud.loopback.directory': state.loopback })
      : shippedConfig('stub.yml', settings),
  );
  return path;
}

function refusal(fn: () => void): StatePermissionError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StatePermissionError);
    return err as StatePermissionError;
  }
  throw new Error('expected a StatePermissionError');
}

describe('a new queue file', () => {
  it('is created 0600 in a 0700 directory, and its -wal and -shm 0600, whatever the umask', () => {
    const dir = join(tempDir(), 'state', 'drover');
    const path = join(dir, 'queue.sqlite');
    const queue = new SqliteQueue({ path, maxAttempts: 3 });
    try {
      queue.submit(spec({ env: { SECRET: 'hunter2' } }));
      expect(modeOf(dir)).toBe(0o700);
      expect(modeOf(join(dir, '..'))).toBe(0o700);
      expect(modeOf(path)).toBe(0o600);
      // WAL mode: both exist while the queue is open.
      for (const sidecar of [`${path}-wal`, `${path}-shm`]) {
        expect(existsSync(sidecar)).toBe(true);
        expect(modeOf(sidecar)).toBe(0o600);
      }
    } finally {
      queue.close();
    }
  });

  it('leaves an existing file as the operator made it', () => {
    const dir = tempDir();
    const path = join(dir, 'queue.sqlite');
    writeFileSync(path, '');
    chmodSync(path, 0o640);
    new SqliteQueue({ path, maxAttempts: 3 }).close();
    expect(modeOf(path)).toBe(0o640);
  });
});

describe('the start-up check', () => {
  it('refuses a 0644 queue file, naming the key, the path, the mode and the fix, and does not chmod it', () => {
    const dir = tempDir();
    const queue = join(dir, 'queue.sqlite');
    writeFileSync(queue, '');
    chmodSync(queue, 0o644);
    const config = loadConfig(writeConfig(dir, { queue, token: join(dir, 'token') }));
    const error = refusal(() => ensurePrivateState(config));
    expect(error.key).toBe('queue.path');
    expect(error.path).toBe(queue);
    expect(error.mode).toBe(0o644);
    expect(error.message).toBe(
      `queue.path: ${queue} is mode 0644 (readable by other users, and it holds submitted env values); run chmod 600 ${queue}`,
    );
    expect(modeOf(queue)).toBe(0o644);
  });

  it('refuses a queue directory others can read', () => {
    const root = tempDir();
    const dir = join(root, 'state');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const config = loadConfig(writeConfig(root, { queue: join(dir, 'queue.sqlite'), token: join(root, 'token') }));
    const error = refusal(() => ensurePrivateState(config));
    expect(error.key).toBe('queue.path');
    expect(error.path).toBe(dir);
    expect(error.message).toContain(`is mode 0755`);
    expect(error.message).toContain(`run chmod 700 ${dir}`);
    expect(modeOf(dir)).toBe(0o755);
  });

  it('refuses a token file and a loopback directory others can read or write, naming their keys', () => {
    const dir = tempDir();
    const token = join(dir, 'token');
    writeFileSync(token, 'secret\n');
    chmodSync(token, 0o660);
    const loopback = join(dir, 'loopback');
    const configPath = writeConfig(dir, { queue: join(dir, 'queue.sqlite'), token, loopback });
    let error = refusal(() => ensurePrivateState(loadConfig(configPath)));
    expect(error.key).toBe('http.tokenFile');
    expect(error.message).toContain(`${token} is mode 0660 (readable and writable by other users`);

    chmodSync(token, 0o600);
    mkdirSync(loopback);
    chmodSync(loopback, 0o757);
    error = refusal(() => ensurePrivateState(loadConfig(configPath)));
    expect(error.key).toBe('cloud.loopback.directory');
    expect(error.message).toContain(`${loopback} is mode 0757`);
  });

  it('refuses a queue -wal others can read', () => {
    const dir = tempDir();
    const queue = join(dir, 'queue.sqlite');
    writeFileSync(queue, '', { mode: 0o600 });
    writeFileSync(`${queue}-wal`, '');
    chmodSync(`${queue}-wal`, 0o644);
    const error = refusal(() => ensurePrivateState(loadConfig(writeConfig(dir, { queue, token: join(dir, 'token') }))));
    expect(error.path).toBe(`${queue}-wal`);
  });

  it('passes a 0600 queue file in a 0700 directory, and creates a missing queue directory 0700', () => {
    const dir = tempDir();
    const queue = join(dir, 'queue.sqlite');
    writeFileSync(queue, '');
    chmodSync(queue, 0o600);
    chmodSync(dir, 0o700);
    expect(() => ensurePrivateState(loadConfig(writeConfig(dir, { queue, token: join(dir, 'token') })))).not.toThrow();

    const fresh = join(dir, 'fresh', 'drover');
    ensurePrivateState(loadConfig(writeConfig(dir, { queue: join(fresh, 'queue.sqlite'), token: join(dir, 'token') })));
    expect(modeOf(fresh)).toBe(0o700);
    expect(modeOf(join(dir, 'fresh'))).toBe(0o700);
  });
});

describe('drover run', () => {
  it('exits 2 on a queue file others can read, naming queue.path, and starts nothing', async () => {
    const dir = tempDir();
    const queue = join(dir, 'queue.sqlite');
    const token = join(dir, 'token');
    writeFileSync(queue, '');
    chmodSync(queue, 0o644);
    const configPath = writeConfig(dir, { queue, token });
    const { code, stdout, stderr } = await runDrover(['run', '--config', configPath], process.env, { timeoutMs: 20_000 });
    expect(code).toBe(2);
    expect(stderr).toBe(
      `drover: queue.path: ${queue} is mode 0644 (readable by other users, and it holds submitted env values); run chmod 600 ${queue}\n`,
    );
    expect(stdout).toBe('');
    expect(existsSync(token)).toBe(false);
    expect(existsSync(`${queue}.lock`)).toBe(false);
    expect(modeOf(queue)).toBe(0o644);
  });
});
