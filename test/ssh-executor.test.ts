// SshExecutor and host key pinning against a real ssh2 server on 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ExecutorTarget } from '../src/ssh/executor.js';
import {
  FileHostKeyStore,
  fingerprint,
  HostKeyMismatchError,
  MemoryHostKeyStore,
  type HostKeyStore,
} from '../src/ssh/host-keys.js';
import { InstanceSecretMismatchError, InstanceSecretMissingError } from '../src/ssh/instance-secret.js';
import { SshExecutor } from '../src/ssh/ssh-executor.js';
import { instanceSecretFile } from '../src/cloud/init-script.js';
import { generateKeyPair, startSshServer, type KeyPair, type TestSshServer } from './support/ssh-server.js';

const clientKey = generateKeyPair();

let cleanups: (() => unknown)[] = [];
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ssh-executor-test-'));
  cleanups = [() => rmSync(dir, { recursive: true, force: true })];
});

afterEach(async () => {
  // Reverse order: executors close before the servers they talk to.
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function server(hostKey?: KeyPair): Promise<TestSshServer> {
  const s = await startSshServer({ clientPublicKey: clientKey.public, ...(hostKey ? { hostKey } : {}) });
  cleanups.push(() => s.close());
  return s;
}

function target(s: { port: number }, id = 'i-1'): ExecutorTarget {
  return { id, address: '127.0.0.1', port: s.port };
}

function executor(t: ExecutorTarget, hostKeys: HostKeyStore = new MemoryHostKeyStore()): SshExecutor {
  const e = new SshExecutor({ target: t, username: 'drover', privateKey: clientKey.private, hostKeys });
  cleanups.push(() => e.close());
  return e;
}

function publicBlob(key: KeyPair): Buffer {
  const parsed = ssh2.utils.parseKey(key.public);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('bad test key');
  return parsed.getPublicSSH();
}

describe('SshExecutor', () => {
  it('returns stdout, stderr and the exit code', async () => {
    const s = await server();
    const e = executor(target(s));
    await expect(e.run('echo out; echo err >&2; exit 3')).resolves.toEqual({
      stdout: 'out\n',
      stderr: 'err\n',
      exitCode: 3,
    });
  });

  it('reports a null exit code when the command is killed by a signal', async () => {
    const s = await server();
    const e = executor(target(s));
    const result = await e.run('kill -9 $$');
    expect(result.exitCode).toBeNull();
  });

  it('passes stdin to the command and always ends it', async () => {
    const s = await server();
    const e = executor(target(s));
    expect((await e.run('cat', { stdin: 'hello\nworld' })).stdout).toBe('hello\nworld');
    expect((await e.run('cat', { stdin: Buffer.from('bytes') })).stdout).toBe('bytes');
    // Without stdin, cat only returns because EOF was sent.
    expect((await e.run('cat')).stdout).toBe('');
  });

  it('applies env values verbatim, quotes and spaces included', async () => {
    const s = await server();
    const e = executor(target(s));
    const value = `it's a "test" $HOME \`x\` \\n`;
    // printf, not echo: dash's echo would expand the backslash sequence itself.
    const result = await e.run(`printf '%s\\n' "$FOO" "$BAR"`, { env: { FOO: value, BAR: "'" } });
    expect(result.stdout).toBe(`${value}\n'\n`);
  });

  it('rejects invalid env names without running anything', async () => {
    const s = await server();
    const e = executor(target(s));
    await expect(e.run('true', { env: { 'A;B': 'x' } })).rejects.toThrow(/Invalid environment variable name/);
    await expect(e.run('true', { env: { '1A': 'x' } })).rejects.toThrow(/Invalid environment variable name/);
    expect(s.connectionCount).toBe(0);
  });

  it('uses one connection for sequential and concurrent runs', async () => {
    const s = await server();
    const e = executor(target(s));
    expect((await e.run('echo 1')).stdout).toBe('1\n');
    expect((await e.run('echo 2')).stdout).toBe('2\n');
    await Promise.all([0, 1, 2, 3, 4].map((i) => e.run(`echo ${i}`)));
    expect(s.connectionCount).toBe(1);
    expect(s.execCount).toBe(7);

    // A fresh executor: all five start while the connection is still being opened.
    const s2 = await server();
    const e2 = executor(target(s2));
    const results = await Promise.all([0, 1, 2, 3, 4].map((i) => e2.run(`echo ${i}`)));
    expect(results.map((r) => r.stdout)).toEqual(['0\n', '1\n', '2\n', '3\n', '4\n']);
    expect(s2.connectionCount).toBe(1);
    expect(s2.execCount).toBe(5);
  });

  it('reconnects on the next run after the server drops the connection', async () => {
    const s = await server();
    const e = executor(target(s));
    await e.run('true');
    s.dropAllConnections();
    await s.waitForOpenConnections(0);
    expect((await e.run('echo again')).stdout).toBe('again\n');
    expect(s.connectionCount).toBe(2);
  });

  it('rejects a running command whose connection dies', async () => {
    const s = await server();
    const e = executor(target(s));
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // Blocks until someone writes the fifo, which nobody does.
    const running = e.run(`cat ${fifo}`);
    const rejection = expect(running).rejects.toThrow(/connection was lost/);
    await waitFor(() => s.execCount === 1);
    s.dropAllConnections();
    await rejection;
    // Unblock the orphaned cat on the server side.
    writeFileSync(fifo, '');
  });

  it('fails a run with a clear error when nothing listens', async () => {
    const port = await freePort();
    const e = executor({ id: 'i-9', address: '127.0.0.1', port });
    await expect(e.run('true')).rejects.toThrow(`SSH connection to i-9 (127.0.0.1:${port}) failed`);
  });

  it('refuses a changed host key and does not run the command', async () => {
    const a = await server();
    const hostKeys = new MemoryHostKeyStore();
    const e = executor(target(a), hostKeys);
    await e.run('true');
    const pinned = fingerprint(publicBlob(a.hostKey));
    expect(hostKeys.get('i-1')).toBe(pinned);

    const impostor = await server();
    e.setTarget(target(impostor));
    const marker = join(dir, 'ran');
    const err: unknown = await e.run(`touch ${marker}`).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(HostKeyMismatchError);
    const mismatch = err as HostKeyMismatchError;
    expect(mismatch.targetId).toBe('i-1');
    expect(mismatch.expected).toBe(pinned);
    expect(mismatch.actual).toBe(fingerprint(publicBlob(impostor.hostKey)));
    expect(mismatch.message).toContain('i-1');
    expect(mismatch.message).toContain(mismatch.expected);
    expect(mismatch.message).toContain(mismatch.actual);
    expect(existsSync(marker)).toBe(false);
    expect(impostor.execCount).toBe(0);

    // Never re-pinned: a second attempt is refused the same way.
    await expect(e.run(`touch ${marker}`)).rejects.toBeInstanceOf(HostKeyMismatchError);
    expect(hostKeys.get('i-1')).toBe(pinned);
    expect(existsSync(marker)).toBe(false);
  });

  it('keeps the connection when setTarget repeats the address, follows a new address otherwise', async () => {
    const a = await server();
    const b = await server(a.hostKey);
    const e = executor(target(a));
    await e.run('true');
    e.setTarget(target(a));
    e.setTarget({ ...target(a) });
    await e.run('true');
    expect(a.connectionCount).toBe(1);
    expect(a.execCount).toBe(2);

    e.setTarget(target(b));
    await e.run('true');
    expect(b.connectionCount).toBe(1);
    expect(b.execCount).toBe(1);
    expect(a.execCount).toBe(2);
    // The old connection is ended since nothing was running on it.
    await a.waitForOpenConnections(0);
  });

  it('lets commands running on the old address finish before ending that connection', async () => {
    const a = await server();
    const b = await server(a.hostKey);
    const e = executor(target(a));
    await e.run('true');
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const running = e.run(`cat ${fifo}`);
    await waitFor(() => a.execCount === 2);

    e.setTarget(target(b));
    expect((await e.run('echo b')).stdout).toBe('b\n');
    expect(a.openConnections).toBe(1);

    await writeFile(fifo, 'done\n');
    expect((await running).stdout).toBe('done\n');
    await a.waitForOpenConnections(0);
  });

  it('moves runs still waiting for a connection to the new address', async () => {
    // Accepts TCP but never speaks SSH, so the handshake would hang until the timeout.
    const silent = await silentServer();
    const b = await server();
    const e = executor({ id: 'i-1', address: '127.0.0.1', port: silent.port });
    const pending = e.run('echo moved');
    await silent.connected;
    e.setTarget(target(b));
    expect((await pending).stdout).toBe('moved\n');
    expect(b.connectionCount).toBe(1);
  });

  it('rejects runs after close, and runs that were in flight', async () => {
    const s = await server();
    const e = executor(target(s));
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const running = e.run(`cat ${fifo}`);
    const rejection = expect(running).rejects.toThrow(/closed/);
    await waitFor(() => s.execCount === 1);
    e.close();
    await rejection;
    await expect(e.run('true')).rejects.toThrow('SSH executor for i-1 is closed');
    await s.waitForOpenConnections(0);
    writeFileSync(fifo, '');
  });
});

describe('instance secret on first contact', () => {
  const secret = 'a1'.repeat(32);

  /** A server whose $HOME holds `written` as its instance secret (none when undefined). */
  async function serverHolding(written: string | undefined): Promise<TestSshServer> {
    const home = join(dir, 'home');
    mkdirSync(join(home, '.drover'), { recursive: true });
    if (written !== undefined) writeFileSync(join(home, instanceSecretFile), `${written}\n`, { mode: 0o600 });
    const s = await startSshServer({ clientPublicKey: clientKey.public, home });
    cleanups.push(() => s.close());
    return s;
  }

  it('pins the host key and runs the command when the instance holds the secret', async () => {
    const s = await serverHolding(secret);
    const hostKeys = new MemoryHostKeyStore();
    const e = executor({ ...target(s), secret }, hostKeys);
    expect((await e.run('echo hi')).stdout).toBe('hi\n');
    expect(hostKeys.get('i-1')).toBe(fingerprint(publicBlob(s.hostKey)));
    // The read-back, then the command, on one connection.
    expect(s.execCount).toBe(2);
    expect(s.connectionCount).toBe(1);
  });

  it('refuses an instance with another secret: nothing pinned, nothing run, connection closed', async () => {
    const other = 'b2'.repeat(32);
    const s = await serverHolding(other);
    const hostKeys = new MemoryHostKeyStore();
    const e = executor({ ...target(s), secret }, hostKeys);
    const marker = join(dir, 'ran');
    const err: unknown = await e.run(`touch ${marker}`).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(InstanceSecretMismatchError);
    expect((err as InstanceSecretMismatchError).instanceId).toBe('i-1');
    expect((err as Error).message).toContain('i-1');
    expect((err as Error).message).not.toContain(secret);
    expect((err as Error).message).not.toContain(other);
    expect(hostKeys.get('i-1')).toBeUndefined();
    expect(existsSync(marker)).toBe(false);
    expect(s.execCount).toBe(1);
    await s.waitForOpenConnections(0);
  });

  it('does not pin while the secret is not there yet, and pins once it is', async () => {
    const s = await serverHolding(undefined);
    const hostKeys = new MemoryHostKeyStore();
    const e = executor({ ...target(s), secret }, hostKeys);
    const err: unknown = await e.run('true').catch((x: unknown) => x);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(InstanceSecretMismatchError);
    expect(hostKeys.get('i-1')).toBeUndefined();

    writeFileSync(join(dir, 'home', instanceSecretFile), `${secret}\n`, { mode: 0o600 });
    await s.waitForOpenConnections(0);
    await e.run('true');
    expect(hostKeys.get('i-1')).toBe(fingerprint(publicBlob(s.hostKey)));
  });

  it('with requireSecret, refuses a target without a secret: nothing pinned, nothing run, every time', async () => {
    const s = await serverHolding(secret);
    const hostKeys = new MemoryHostKeyStore();
    const e = executor({ ...target(s), requireSecret: true }, hostKeys);
    const marker = join(dir, 'ran');
    for (let attempt = 0; attempt < 2; attempt++) {
      const err: unknown = await e.run(`touch ${marker}`).catch((x: unknown) => x);
      expect(err).toBeInstanceOf(InstanceSecretMissingError);
      expect((err as Error).message).toMatch(/i-1 .*no instance secret in its tags: not pinning its host key/);
      expect(hostKeys.get('i-1')).toBeUndefined();
    }
    expect(existsSync(marker)).toBe(false);
    expect(s.execCount).toBe(0);
  });

  it('with requireSecret, still trusts a key pinned before', async () => {
    const s = await serverHolding(undefined);
    const hostKeys = new MemoryHostKeyStore();
    hostKeys.pin('i-1', fingerprint(publicBlob(s.hostKey)));
    const e = executor({ ...target(s), requireSecret: true }, hostKeys);
    expect((await e.run('echo hi')).stdout).toBe('hi\n');
  });

  it('checks no secret once a key is pinned', async () => {
    const s = await serverHolding('b2'.repeat(32));
    const hostKeys = new MemoryHostKeyStore();
    hostKeys.pin('i-1', fingerprint(publicBlob(s.hostKey)));
    const e = executor({ ...target(s), secret }, hostKeys);
    await e.run('true');
    expect(s.execCount).toBe(1);
  });
});

describe('host keys', () => {
  it('fingerprints like OpenSSH', () => {
    const key = generateKeyPair();
    const file = join(dir, 'key.pub');
    writeFileSync(file, key.public);
    const expected = fingerprint(publicBlob(key));
    expect(expected).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    let sshKeygen: string;
    try {
      sshKeygen = execFileSync('ssh-keygen', ['-lf', file], { encoding: 'utf8' });
    } catch {
      return; // ssh-keygen not installed; the format check above still holds.
    }
    expect(sshKeygen.split(' ')[1]).toBe(expected);
  });

  it('FileHostKeyStore survives a reload and keeps the file private', async () => {
    const path = join(dir, 'nested', 'known-hosts.json');
    expect(new FileHostKeyStore(path).get('i-1')).toBeUndefined();

    const a = await server();
    const e = executor(target(a), new FileHostKeyStore(path));
    await e.run('true');

    const reloaded = new FileHostKeyStore(path);
    expect(reloaded.get('i-1')).toBe(fingerprint(publicBlob(a.hostKey)));
    expect(statSync(path).mode & 0o777).toBe(0o600);

    reloaded.pin('i-2', 'SHA256:other');
    const again = new FileHostKeyStore(path);
    expect(again.get('i-1')).toBe(fingerprint(publicBlob(a.hostKey)));
    expect(again.get('i-2')).toBe('SHA256:other');
    expect(statSync(path).mode & 0o777).toBe(0o600);

    // A reloaded store still refuses an impostor.
    const impostor = await server();
    const e2 = executor(target(impostor), new FileHostKeyStore(path));
    await expect(e2.run('true')).rejects.toBeInstanceOf(HostKeyMismatchError);
  });

  it('FileHostKeyStore refuses a corrupt file instead of forgetting every pin', () => {
    const path = join(dir, 'known-hosts.json');
    writeFileSync(path, '{ not json');
    expect(() => new FileHostKeyStore(path)).toThrow(/not valid JSON/);
    writeFileSync(path, '{"i-1": 3}');
    expect(() => new FileHostKeyStore(path)).toThrow(/not a string/);
  });
});

// Polls on the event loop (setImmediate), not on a timer: for conditions that real I/O makes true.
async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function silentServer(): Promise<{ port: number; connected: Promise<void> }> {
  const sockets = new Set<Socket>();
  let onConnected: () => void = () => {};
  const connected = new Promise<void>((resolve) => {
    onConnected = resolve;
  });
  const srv: NetServer = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    onConnected();
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => srv.close(resolve));
  });
  return { port: (srv.address() as AddressInfo).port, connected };
}
