// A real SSH server on 127.0.0.1 for executor tests: accepts one client key and runs each exec
// request with `sh -c`, so tests exercise ssh2 end to end without an sshd.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import ssh2 from 'ssh2';
import type { Connection, ParsedKey } from 'ssh2';

const { Server, utils } = ssh2;

export interface KeyPair {
  /** OpenSSH private key text. */
  private: string;
  /** OpenSSH public key line. */
  public: string;
}

// ssh2's keygen strips leading zero bytes from ed25519 public keys, so about 1 key in 256 cannot
// be parsed back (mscdex/ssh2#1390, #1513); such a key would make a test fail at random, so draw
// again until ssh2 itself accepts both halves.
export function generateKeyPair(): KeyPair {
  for (;;) {
    const { private: priv, public: pub } = utils.generateKeyPairSync('ed25519');
    if (!(utils.parseKey(pub) instanceof Error) && !(utils.parseKey(priv) instanceof Error)) {
      return { private: priv, public: pub };
    }
  }
}

export interface TestSshServer {
  port: number;
  hostKey: KeyPair;
  /** Connections accepted since start, including ones that never authenticated. */
  readonly connectionCount: number;
  /** Connections currently open. */
  readonly openConnections: number;
  /** Exec requests received from authenticated clients. */
  readonly execCount: number;
  /** Resolves once exactly `n` connections are open (real I/O, no timers). */
  waitForOpenConnections(n: number): Promise<void>;
  dropAllConnections(): void;
  close(): Promise<void>;
}

function parsePublic(text: string): ParsedKey {
  const key = utils.parseKey(text);
  if (key instanceof Error) throw key;
  // parseKey returns an array only for multi-key input, which we never pass.
  if (Array.isArray(key)) throw new Error('expected a single key');
  return key;
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface SshServerOptions {
  clientPublicKey: string;
  hostKey?: KeyPair;
  /** $HOME of the commands it runs (where an instance secret would be); the test process's own by default. */
  home?: string;
}

export async function startSshServer(options: SshServerOptions): Promise<TestSshServer> {
  const hostKey = options.hostKey ?? generateKeyPair();
  const allowed = parsePublic(options.clientPublicKey);
  const allowedSsh = allowed.getPublicSSH();
  const open = new Set<Connection>();
  const changes = new EventEmitter();
  let connectionCount = 0;
  let execCount = 0;

  const server = new Server({ hostKeys: [hostKey.private] }, (client) => {
    connectionCount += 1;
    open.add(client);
    changes.emit('change');
    // A client refused during key exchange errors out; that is an expected outcome here.
    client.on('error', () => {});
    client.on('close', () => {
      open.delete(client);
      changes.emit('change');
    });

    // As in ssh2's README server example: right key, and a valid signature when one is sent.
    client.on('authentication', (ctx) => {
      if (
        ctx.method !== 'publickey' ||
        ctx.key.algo !== allowed.type ||
        !sameBytes(ctx.key.data, allowedSsh) ||
        (ctx.signature !== undefined &&
          (ctx.blob === undefined || allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true))
      ) {
        ctx.reject(['publickey']);
        return;
      }
      ctx.accept();
    });

    client.on('ready', () => {
      client.on('session', (acceptSession) => {
        const session = acceptSession();
        session.on('exec', (acceptExec, _reject, info) => {
          execCount += 1;
          const channel = acceptExec();
          const env = options.home === undefined ? process.env : { ...process.env, HOME: options.home };
          const child = spawn('sh', ['-c', info.command], { env, stdio: ['pipe', 'pipe', 'pipe'] });
          // The command may exit without reading stdin; EPIPE then is normal.
          child.stdin.on('error', () => {});
          channel.pipe(child.stdin);
          child.stdout.on('data', (chunk: Buffer) => channel.write(chunk));
          child.stderr.on('data', (chunk: Buffer) => channel.stderr.write(chunk));
          child.on('close', (code, signal) => {
            if (signal !== null) channel.exit(signal.replace(/^SIG/, ''), false, '');
            else channel.exit(code ?? 0);
            channel.end();
          });
        });
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    hostKey,
    get connectionCount() {
      return connectionCount;
    },
    get openConnections() {
      return open.size;
    },
    get execCount() {
      return execCount;
    },
    waitForOpenConnections(n) {
      return new Promise((resolve) => {
        const check = (): void => {
          if (open.size !== n) return;
          changes.off('change', check);
          resolve();
        };
        changes.on('change', check);
        check();
      });
    },
    dropAllConnections() {
      for (const client of open) client.end();
    },
    close() {
      for (const client of open) client.end();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
