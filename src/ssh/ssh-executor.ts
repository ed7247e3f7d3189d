// The production Executor: runs commands on an instance over one lazily opened, reused SSH
// connection, refusing any host key other than the one pinned at first contact.
import { timingSafeEqual } from 'node:crypto';
import { finished } from 'node:stream';
import ssh2 from 'ssh2';
import type { Client as SshClient, ClientChannel, ConnectConfig } from 'ssh2';
import type { CommandResult, Executor, ExecutorTarget, RunOptions } from './executor.js';
import { fingerprint, HostKeyMismatchError, type HostKeyStore } from './host-keys.js';
import { InstanceSecretMismatchError, InstanceSecretMissingError } from './instance-secret.js';
import { readInstanceSecretCommand } from '../cloud/init-script.js';
import { shellQuote } from '../shell-quote.js';

// ssh2 is CommonJS and Node cannot see its exports by name from ESM.
const { Client } = ssh2;

export interface SshExecutorOptions {
  target: ExecutorTarget;
  username: string;
  privateKey: Buffer | string;
  hostKeys: HostKeyStore;
  /** Covers TCP connect, handshake and authentication. Default 20000. */
  connectTimeoutMs?: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;
// Without keepalives a connection silently dropped by a NAT or a dead instance would hang every
// later run until the kernel gives up on TCP, which can take many minutes.
const KEEPALIVE_INTERVAL_MS = 15_000;
const KEEPALIVE_COUNT_MAX = 3;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

interface Connection {
  readonly client: SshClient;
  readonly target: ExecutorTarget;
  readonly ready: Promise<void>;
  /** Rejects `ready` early (superseded or closed before the handshake finished). */
  readonly abort: (err: Error) => void;
  isReady: boolean;
  isClosed: boolean;
  /** Runs waiting for or using this connection; a retired connection ends when this reaches 0. */
  users: number;
  /** setTarget moved away from this address after it was ready: drain, then end. */
  retired: boolean;
  /** setTarget moved away before it was ready: its waiters retry on the new address. */
  superseded: boolean;
  /** A reason that must reach the caller as is (a host key mismatch, a failed pin, a wrong or missing secret). */
  failure?: Error;
  /** First contact with a secret to check: the key the handshake accepted, pinned once the secret matches. */
  unpinnedKey?: string;
  lastError?: Error;
}

export class SshExecutor implements Executor {
  private target: ExecutorTarget;
  private readonly username: string;
  private readonly privateKey: Buffer | string;
  private readonly hostKeys: HostKeyStore;
  private readonly connectTimeoutMs: number;
  /** The connection new runs use; undefined until the first run and after it drops. */
  private current: Connection | undefined;
  /** Every connection not yet closed, including retired ones still draining. */
  private readonly connections = new Set<Connection>();
  private closed = false;

  constructor(options: SshExecutorOptions) {
    this.target = { ...options.target };
    this.username = options.username;
    this.privateKey = options.privateKey;
    this.hostKeys = options.hostKeys;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  async run(command: string, options: RunOptions = {}): Promise<CommandResult> {
    const script = withEnv(command, options.env);
    let unsentRetries = 1;
    for (;;) {
      if (this.closed) throw this.closedError();
      const conn = this.acquire();
      conn.users += 1;
      try {
        try {
          await conn.ready;
        } catch (err) {
          // The address changed while we were still connecting to the old one: the command was
          // never sent, so it is safe to send it to the new address instead.
          if (conn.superseded && !this.closed) continue;
          throw err;
        }
        if (this.closed) throw this.closedError();
        return await this.exec(conn, script, options.stdin);
      } catch (err) {
        // The peer closed the connection just before we used it; nothing reached the server, so
        // one retry on a fresh connection cannot run the command twice.
        if (err instanceof NotSentError && unsentRetries > 0 && !this.closed) {
          unsentRetries -= 1;
          continue;
        }
        throw err instanceof NotSentError ? err.reason : err;
      } finally {
        this.release(conn);
      }
    }
  }

  setTarget(target: ExecutorTarget): void {
    const old = this.target;
    if (old.id === target.id && old.address === target.address && old.port === target.port) return;
    this.target = { ...target };
    const conn = this.current;
    if (conn === undefined) return;
    this.current = undefined;
    if (!conn.isReady) {
      conn.superseded = true;
      conn.abort(new Error(`SSH connection to ${describe(conn.target)} superseded by a new address`));
      conn.client.destroy();
      return;
    }
    // Let commands already running on the old connection finish rather than failing them: an
    // open TCP connection often survives an address change (e.g. a new public IP in front of the
    // same VM), and if it does not, those runs fail on their own when it drops.
    conn.retired = true;
    if (conn.users === 0) conn.client.end();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.current = undefined;
    for (const conn of this.connections) {
      conn.abort(this.closedError());
      if (conn.isReady) conn.client.end();
      else conn.client.destroy();
    }
  }

  private acquire(): Connection {
    if (this.current === undefined || this.current.isClosed) this.current = this.open(this.target);
    return this.current;
  }

  private release(conn: Connection): void {
    conn.users -= 1;
    if (conn.retired && conn.users === 0 && !conn.isClosed) conn.client.end();
  }

  private open(target: ExecutorTarget): Connection {
    const client = new Client();
    let rejectReady: (err: Error) => void = () => {};
    const ready = new Promise<void>((resolve, reject) => {
      rejectReady = reject;
      client.once('ready', () => {
        const key = conn.unpinnedKey;
        if (key === undefined) {
          conn.isReady = true;
          resolve();
          return;
        }
        this.checkSecretAndPin(conn, key).then(
          () => {
            conn.isReady = true;
            resolve();
          },
          (err: Error) => {
            conn.failure ??= err instanceof NotSentError ? err.reason : err;
            // The next run opens a new connection and checks again.
            if (this.current === conn) this.current = undefined;
            reject(conn.failure);
            client.end();
          },
        );
      });
    });
    // Waiters handle the rejection; this only keeps an abandoned attempt from being reported as
    // an unhandled rejection.
    ready.catch(() => {});
    const conn: Connection = {
      client,
      target,
      ready,
      abort: (err) => rejectReady(err),
      isReady: false,
      isClosed: false,
      users: 0,
      retired: false,
      superseded: false,
    };
    this.connections.add(conn);

    client.on('error', (err: Error) => {
      conn.lastError ??= err;
      if (!conn.isReady) rejectReady(this.connectError(conn));
    });
    // 'end' (the peer closed its side) already makes the client unusable, and 'close' can come
    // noticeably later; dropping on the first of the two keeps new runs off a dead connection.
    const onGone = (): void => {
      conn.isClosed = true;
      this.connections.delete(conn);
      if (this.current === conn) this.current = undefined;
      if (!conn.isReady) rejectReady(this.connectError(conn));
    };
    client.on('end', onGone);
    client.on('close', onGone);

    const config: ConnectConfig = {
      host: target.address,
      port: target.port,
      username: this.username,
      privateKey: this.privateKey,
      readyTimeout: this.connectTimeoutMs,
      keepaliveInterval: KEEPALIVE_INTERVAL_MS,
      keepaliveCountMax: KEEPALIVE_COUNT_MAX,
      // hostHash is left unset so the verifier gets the raw key blob and we can fingerprint it
      // the way OpenSSH does.
      hostVerifier: (key: Buffer): boolean => this.verifyHostKey(conn, key),
    };
    try {
      client.connect(config);
    } catch (err) {
      // ssh2 throws synchronously on bad configuration, e.g. an unparsable private key.
      conn.lastError = err as Error;
      this.connections.delete(conn);
      conn.isClosed = true;
      rejectReady(this.connectError(conn));
    }
    return conn;
  }

  // Sync on purpose: a store that cannot answer at once must not keep a handshake waiting.
  private verifyHostKey(conn: Connection, key: Buffer): boolean {
    const id = conn.target.id;
    const actual = fingerprint(key);
    const expected = this.hostKeys.get(id);
    if (expected === undefined) {
      // Accepted for this connection only: checkSecretAndPin pins it once the instance proves
      // it holds the secret, so an impostor's key is never remembered.
      if (conn.target.secret !== undefined) {
        conn.unpinnedKey = actual;
        return true;
      }
      // Trust on first use only where instances are not given secrets (stub, loopback).
      if (conn.target.requireSecret === true) {
        conn.failure = new InstanceSecretMissingError(id);
        return false;
      }
      try {
        this.hostKeys.pin(id, actual);
      } catch (err) {
        // Accepting a key we could not remember would make the next connection trust anything.
        conn.failure = new Error(
          `Could not pin the host key of instance ${id} (${actual}): ${(err as Error).message}`,
          { cause: err },
        );
        return false;
      }
      return true;
    }
    if (expected === actual) return true;
    conn.failure = new HostKeyMismatchError(id, expected, actual);
    return false;
  }

  /** Reads the instance secret back over the fresh connection; pins `key` only when it matches. */
  private async checkSecretAndPin(conn: Connection, key: string): Promise<void> {
    const { id, secret } = conn.target;
    if (secret === undefined) throw new Error(`No instance secret to check for ${id}`);
    const result = await this.exec(conn, readInstanceSecretCommand, undefined);
    if (result.exitCode !== 0) {
      // Not a wrong secret: the init script may not have written it yet (a driver that installs
      // the key itself lets us in earlier). The next run tries again on a new connection.
      throw new Error(
        `Instance ${id} has no readable instance secret yet (exit ${String(result.exitCode)}: ${result.stderr.trim()}); ` +
          'its host key was not pinned',
      );
    }
    if (!sameSecret(result.stdout.trim(), secret)) throw new InstanceSecretMismatchError(id);
    try {
      this.hostKeys.pin(id, key);
    } catch (err) {
      throw new Error(`Could not pin the host key of instance ${id} (${key}): ${(err as Error).message}`, { cause: err });
    }
  }

  private exec(conn: Connection, script: string, stdin: string | Buffer | undefined): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const onChannel = (err: Error | undefined, channel: ClientChannel): void => {
        if (err) {
          reject(this.lostError(conn, `could not start the command: ${err.message}`, err));
          return;
        }
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let exitCode: number | null | undefined;
        let channelError: Error | undefined;
        channel.on('data', (chunk: Buffer) => stdout.push(chunk));
        channel.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
        channel.on('exit', (code: number | null) => {
          exitCode ??= typeof code === 'number' ? code : null;
        });
        channel.on('error', (e: Error) => {
          channelError ??= e;
        });
        channel.on('close', () => {
          // stderr is a separate stream whose end may be delivered after the channel's close.
          finished(channel.stderr, () => {
            if (exitCode === undefined) {
              reject(this.lostError(conn, 'the channel closed before the command reported an exit status', channelError));
              return;
            }
            resolve({
              // Decoded once at the end so multi-byte characters split across chunks survive.
              stdout: Buffer.concat(stdout).toString('utf8'),
              stderr: Buffer.concat(stderr).toString('utf8'),
              exitCode,
            });
          });
        });
        // Always send EOF: a command reading stdin would otherwise wait forever.
        if (stdin === undefined || stdin.length === 0) channel.end();
        else channel.end(stdin);
      };
      try {
        conn.client.exec(script, onChannel);
      } catch (err) {
        // ssh2 throws "Not connected" when the socket went away between ready and exec, before
        // sending anything.
        conn.isClosed = true;
        if (this.current === conn) this.current = undefined;
        reject(new NotSentError(this.lostError(conn, 'could not start the command', err as Error)));
      }
    });
  }

  private connectError(conn: Connection): Error {
    if (conn.failure) return conn.failure;
    if (this.closed) return this.closedError();
    const reason = conn.lastError?.message ?? 'the connection closed during the handshake';
    return new Error(`SSH connection to ${describe(conn.target)} failed: ${reason}`, { cause: conn.lastError });
  }

  private lostError(conn: Connection, what: string, cause: Error | undefined): Error {
    if (this.closed) return new Error(`SSH executor for ${conn.target.id} was closed while running a command`);
    const lost = conn.isClosed
      ? `the connection was lost${conn.lastError ? ` (${conn.lastError.message})` : ''}`
      : what;
    return new Error(`Command on ${describe(conn.target)} did not complete: ${lost}`, { cause: cause ?? conn.lastError });
  }

  private closedError(): Error {
    return new Error(`SSH executor for ${this.target.id} is closed`);
  }
}

/** The command never left this process; `reason` is what the caller sees if no retry happens. */
class NotSentError extends Error {
  constructor(readonly reason: Error) {
    super(reason.message);
  }
}

function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function describe(target: ExecutorTarget): string {
  return `${target.id} (${target.address}:${target.port})`;
}

// sshd refuses env requests unless AcceptEnv lists the name, so the environment travels inside
// the command instead.
function withEnv(command: string, env: Readonly<Record<string, string>> | undefined): string {
  if (env === undefined) return command;
  let prefix = '';
  for (const [name, value] of Object.entries(env)) {
    if (!ENV_NAME.test(name)) throw new Error(`Invalid environment variable name: ${JSON.stringify(name)}`);
    // A NUL would silently cut the value short on the remote side.
    if (value.includes('\0')) throw new Error(`Environment variable ${name} contains a NUL byte`);
    prefix += `export ${name}=${shellQuote(value)}; `;
  }
  return prefix + command;
}
