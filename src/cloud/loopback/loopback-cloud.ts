// The loopback cloud: "instances" are sandbox directories on this machine, each reached over a
// real SSH server on 127.0.0.1, so Drover runs real containers without any cloud account.
//
// Layout under `directory` (0700):
//   client_ed25519, client_ed25519.pub     the key the daemon logs in with (the only one accepted)
//   known_hosts.json                       host key pins of executorFor's executors
//   instances/<id>/instance.json           id, providerType, tags, createdAt
//   instances/<id>/ssh_host_ed25519_key    the instance's host key
//   instances/<id>/home/                   the instance's $HOME and the working directory of commands
//   instances/<id>/home/.drover/instance-secret   the create's tags[drover-secret], as an init script would write it
//
// One ssh2 server per instance, each on its own port: the address:port then names the instance,
// as with real VMs, so any SSH client and any username works. Each instance has its own host key,
// so a port reused by another instance after a restart is refused by host key pinning instead of
// silently running commands in the wrong sandbox. Ports are chosen by the OS at every start of
// the daemon; list() reports the current ones and the pool moves its executors there.
import { execFile, spawn } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { access, chmod, link, mkdir, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { Connection, ParsedKey, ServerChannel } from 'ssh2';
import { tagKeys, type CloudDriver, type CloudInstance, type CreateRequest, type Tags } from '../driver.js';
import { instanceSecretFile } from '../init-script.js';
import { CloudError } from '../errors.js';
import type { Executor, ExecutorTarget } from '../../ssh/executor.js';
import { FileHostKeyStore } from '../../ssh/host-keys.js';
import { SshExecutor } from '../../ssh/ssh-executor.js';

// ssh2 is CommonJS and Node cannot see its exports by name from ESM.
const { Server: SshServer, utils } = ssh2;

export interface LoopbackCloudOptions {
  directory: string;
  /** How long after create an instance refuses SSH connections, like a booting VM. Default 0. */
  bootDelayMs?: number;
}

interface InstanceRecord {
  id: string;
  providerType: string;
  tags: Record<string, string>;
  /** ISO 8601. */
  createdAt: string;
}

interface InstanceServer {
  readonly id: string;
  readonly port: number;
  readonly net: NetServer;
  readonly sockets: Set<Socket>;
  readonly connections: Set<Connection>;
}

const ADDRESS = '127.0.0.1';
const ID_PATTERN = /^lo-[0-9a-f]{8}$/;
const TRASH_PREFIX = '.destroying-';
const SYSTEM_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
/** Where the runner keeps its state inside an instance's home (its default DROVER_RUNNER_DIR). */
const RUNNER_STATE = join('.drover', 'containers');

export class LoopbackCloud implements CloudDriver {
  /** Any name is accepted; this is the one executorFor logs in with. */
  readonly username = 'drover';

  private readonly instancesDir: string;
  private readonly bootDelayMs: number;
  private readonly allowedKey: ParsedKey;
  private readonly hostKeyStore: FileHostKeyStore;
  /** Started or starting servers by instance id. */
  private readonly servers = new Map<string, Promise<InstanceServer>>();
  /** Serialises read-modify-write of one instance.json. */
  private readonly tagWrites = new Map<string, Promise<void>>();
  /** Ids destroyed by this process; a list() racing with destroy() must not revive their server. */
  private readonly destroyed = new Set<string>();
  private closed = false;

  private constructor(
    readonly directory: string,
    /** OpenSSH private key accepted by every instance. */
    readonly clientPrivateKey: Buffer,
    /** Its public half, as an OpenSSH public key line. */
    readonly clientPublicKey: string,
    bootDelayMs: number,
  ) {
    this.instancesDir = join(directory, 'instances');
    this.bootDelayMs = bootDelayMs;
    this.allowedKey = parseSingleKey(clientPublicKey, join(directory, 'client_ed25519.pub'));
    this.hostKeyStore = new FileHostKeyStore(join(directory, 'known_hosts.json'));
  }

  static async start(options: LoopbackCloudOptions): Promise<LoopbackCloud> {
    const { directory } = options;
    await mkdir(directory, { recursive: true, mode: 0o700 });
    // It holds the private keys; a directory that already existed may have been created wider.
    await chmod(directory, 0o700);
    const keys = await loadOrCreateKeyPair(join(directory, 'client_ed25519'));
    const cloud = new LoopbackCloud(directory, Buffer.from(keys.private), keys.public, options.bootDelayMs ?? 0);
    await mkdir(cloud.instancesDir, { recursive: true, mode: 0o700 });
    await cloud.finishInterruptedDestroys();
    return cloud;
  }

  async create(request: CreateRequest): Promise<CloudInstance> {
    this.checkOpen();
    let id: string;
    let dir: string;
    for (;;) {
      id = `lo-${randomBytes(4).toString('hex')}`;
      dir = join(this.instancesDir, id);
      try {
        await mkdir(dir, { mode: 0o700 });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    const record: InstanceRecord = {
      id,
      providerType: request.instanceType.providerType,
      tags: { ...request.tags },
      createdAt: new Date().toISOString(),
    };
    try {
      await writeFile(join(dir, 'ssh_host_ed25519_key'), generateKeyPair().private, { mode: 0o600, flag: 'wx' });
      await mkdir(join(dir, 'home'), { mode: 0o700 });
      // What a VM's init script does at first boot (the key needs no installing: every sandbox
      // accepts the client key).
      const secret = request.tags[tagKeys.secret];
      if (secret !== undefined) {
        await mkdir(join(dir, 'home', '.drover'), { mode: 0o700 });
        await writeFile(join(dir, 'home', instanceSecretFile), `${secret}\n`, { mode: 0o600, flag: 'wx' });
      }
      // Written last: list() only sees instances whose instance.json exists, so never a half-made one.
      await writeFileAtomic(join(dir, 'instance.json'), recordText(record));
    } catch (err) {
      // Nothing lists or destroys a directory without instance.json, so it must not stay behind.
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const server = await this.serverFor(record);
    return toCloudInstance(record, server.port);
  }

  async list(tagFilter: Tags): Promise<CloudInstance[]> {
    this.checkOpen();
    const found: Array<{ record: InstanceRecord; server: Promise<InstanceServer> }> = [];
    for (const name of await readdir(this.instancesDir)) {
      if (!ID_PATTERN.test(name)) continue;
      const record = await this.readRecord(name);
      if (record === undefined) continue;
      if (!Object.entries(tagFilter).every(([key, value]) => record.tags[key] === value)) continue;
      // An instance made by an earlier daemon (or another one on this directory) has no server
      // in this process yet; it gets one here so that the reported port answers.
      const server = this.serverFor(record);
      // Awaited below, after the other reads; until then a rejection must not count as unhandled.
      server.catch(() => {});
      found.push({ record, server });
    }
    const instances: CloudInstance[] = [];
    for (const { record, server } of found) {
      let port: number;
      try {
        port = (await server).port;
      } catch (err) {
        // Destroyed while we listed it: gone is the right answer.
        if (this.destroyed.has(record.id)) continue;
        throw err;
      }
      instances.push(toCloudInstance(record, port));
    }
    return instances.sort((a, b) => a.id.localeCompare(b.id));
  }

  async destroy(id: string): Promise<void> {
    this.checkOpen();
    if (!ID_PATTERN.test(id)) return;
    this.destroyed.add(id);
    const trash = join(this.instancesDir, `${TRASH_PREFIX}${id}-${randomBytes(4).toString('hex')}`);
    try {
      // First, so that list() stops reporting it at once, whatever happens next.
      await rename(join(this.instancesDir, id), trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const server = this.servers.get(id);
    this.servers.delete(id);
    if (server !== undefined) await closeServer(await server);
    await removeSandbox(trash);
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    this.checkOpen();
    const previous = this.tagWrites.get(id) ?? Promise.resolve();
    const write = previous.then(async () => {
      const record = ID_PATTERN.test(id) ? await this.readRecord(id) : undefined;
      if (record === undefined) throw new CloudError(`setTags: no instance ${id}`);
      record.tags = { ...record.tags, ...tags };
      await writeFileAtomic(join(this.instancesDir, id, 'instance.json'), recordText(record));
    });
    const settled = write.catch(() => {});
    this.tagWrites.set(id, settled);
    void settled.then(() => {
      if (this.tagWrites.get(id) === settled) this.tagWrites.delete(id);
    });
    return write;
  }

  /** An SSH executor for one of this cloud's instances, pinning host keys in known_hosts.json. */
  executorFor(target: ExecutorTarget): Executor {
    return new SshExecutor({
      target,
      username: this.username,
      privateKey: this.clientPrivateKey,
      hostKeys: this.hostKeyStore,
    });
  }

  /** The instance's home directory on this machine (its $HOME over SSH). */
  homeOf(id: string): string {
    return join(this.instancesDir, id, 'home');
  }

  /**
   * Stops the SSH servers and ends their sessions. Containers keep running: they are detached
   * processes that the next daemon finds again through the runner.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const servers = [...this.servers.values()];
    this.servers.clear();
    await Promise.all(
      servers.map(async (pending) => {
        // A server that failed to start has nothing to close.
        const server = await pending.catch(() => undefined);
        if (server !== undefined) await closeServer(server);
      }),
    );
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('LoopbackCloud is closed');
  }

  /** The record in instance.json, or undefined when the instance does not exist (any more). */
  private async readRecord(id: string): Promise<InstanceRecord | undefined> {
    const path = join(this.instancesDir, id, 'instance.json');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      // No instance.json: being created or destroyed right now.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return parseRecord(text, id, path);
  }

  private serverFor(record: InstanceRecord): Promise<InstanceServer> {
    if (this.destroyed.has(record.id)) return Promise.reject(new CloudError(`instance ${record.id} was destroyed`));
    let server = this.servers.get(record.id);
    if (server === undefined) {
      server = this.startServer(record);
      this.servers.set(record.id, server);
      // A failed start is retried by the next list() rather than remembered.
      server.catch(() => {
        if (this.servers.get(record.id) === server) this.servers.delete(record.id);
      });
    }
    return server;
  }

  private async startServer(record: InstanceRecord): Promise<InstanceServer> {
    const dir = join(this.instancesDir, record.id);
    const home = join(dir, 'home');
    const hostKey = await readFile(join(dir, 'ssh_host_ed25519_key'));
    const env = sandboxEnv(home, this.username);
    const bootAt = Date.parse(record.createdAt) + this.bootDelayMs;
    const sockets = new Set<Socket>();
    const connections = new Set<Connection>();
    const allowed = this.allowedKey;
    const allowedBlob = allowed.getPublicSSH();

    const ssh = new SshServer({ hostKeys: [hostKey] }, (client) => {
      connections.add(client);
      // A client that gives up during the handshake errors out; nothing to do about it here.
      client.on('error', () => {});
      client.on('close', () => connections.delete(client));
      // As in ssh2's README server example: the right key, and a valid signature once one is sent.
      client.on('authentication', (ctx) => {
        if (
          ctx.method !== 'publickey' ||
          ctx.key.algo !== allowed.type ||
          !sameBytes(ctx.key.data, allowedBlob) ||
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
          // Only exec is served; ssh2 refuses pty, shell, env and subsystem requests on its own.
          session.on('exec', (acceptExec, _reject, info) => runExec(acceptExec(), info.command, home, env));
        });
      });
    });

    const net = createServer((socket) => {
      // Like a VM whose sshd is not up yet: the connection is accepted and dropped.
      if (Date.now() < bootAt) {
        socket.destroy();
        return;
      }
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      ssh.injectSocket(socket);
    });
    await new Promise<void>((resolve, reject) => {
      net.once('error', reject);
      net.listen(0, ADDRESS, () => {
        net.off('error', reject);
        resolve();
      });
    });
    // After listening, an error would only concern one connection, which handles its own.
    net.on('error', () => {});
    const server: InstanceServer = { id: record.id, port: (net.address() as AddressInfo).port, net, sockets, connections };
    // destroy() or close() ran while this was starting and could not see it to close it.
    if (this.destroyed.has(record.id) || this.closed) {
      await closeServer(server);
      throw new CloudError(`instance ${record.id} was destroyed`);
    }
    return server;
  }

  // A daemon that stopped in the middle of destroy() left a renamed sandbox behind.
  private async finishInterruptedDestroys(): Promise<void> {
    for (const name of await readdir(this.instancesDir)) {
      if (name.startsWith(TRASH_PREFIX)) await removeSandbox(join(this.instancesDir, name));
    }
  }
}

function runExec(channel: ServerChannel, command: string, home: string, env: NodeJS.ProcessEnv): void {
  let done = false;
  const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
    if (done) return;
    done = true;
    if (signal !== null) channel.exit(signal.replace(/^SIG/, ''), false, '');
    else channel.exit(code ?? 0);
    channel.end();
  };
  const child = spawn('/bin/sh', ['-c', command], { cwd: home, env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.on('error', (err) => {
    channel.stderr.write(`loopback: cannot run the command: ${err.message}\n`);
    finish(127, null);
  });
  // The command may exit without reading its stdin; EPIPE is normal then.
  child.stdin.on('error', () => {});
  channel.on('error', () => {});
  channel.pipe(child.stdin);
  child.stdout.pipe(channel, { end: false });
  child.stderr.pipe(channel.stderr, { end: false });
  child.on('close', finish);
}

async function closeServer(server: InstanceServer): Promise<void> {
  const closed = new Promise<void>((resolve) => server.net.close(() => resolve()));
  for (const connection of server.connections) connection.end();
  // After the disconnect message has gone out; close() waits for every socket.
  for (const socket of server.sockets) socket.destroySoon();
  await closed;
}

/**
 * Kills whatever still runs in a sandbox (every container the runner started there, by process
 * group, or by process tree when the runner could not give it a group), then deletes it.
 */
async function removeSandbox(dir: string): Promise<void> {
  const state = join(dir, 'home', RUNNER_STATE);
  let uuids: string[] = [];
  try {
    uuids = await readdir(state);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await Promise.all(uuids.map((uuid) => killContainer(join(state, uuid), uuid)));
  // A dying wrapper may still write into its directory while it is being deleted.
  await rm(dir, { recursive: true, force: true, maxRetries: 5 });
}

async function killContainer(containerDir: string, uuid: string): Promise<void> {
  if (await exists(join(containerDir, 'exit'))) return;
  const pidText = await readOptional(join(containerDir, 'pid'));
  const pid = pidText === undefined ? NaN : Number(pidText.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  // The pid may belong to someone else by now (after a reboot, say); the runner recorded which
  // process it was, and a different one must not be killed.
  const ident = await readOptional(join(containerDir, 'pid.ident'));
  if (ident !== undefined && ident.trim() !== '' && (await procIdent(pid)) !== ident.trim()) return;
  if (await exists(join(containerDir, 'docker'))) {
    // The docker CLI's death does not stop the container; the docker daemon owns it.
    await new Promise<void>((resolve) => {
      execFile('docker', ['kill', `drover-${uuid}`], { timeout: 30_000 }, () => resolve());
    });
  }
  if (signal(-pid)) return;
  // Not a group leader (the runner had no setsid, as on macOS): the container is the wrapper's
  // child, and whatever that started, so the whole tree goes, found before the wrapper dies and
  // its children are handed to init.
  const tree = [pid, ...(await descendantsOf(pid))];
  for (const target of tree) signal(target);
}

/** SIGKILL to `target` (a pid, or a group when negative); false when there is no such process or group. */
function signal(target: number): boolean {
  try {
    process.kill(target, 'SIGKILL');
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    return false;
  }
}

/** Every process below `pid`, by `pgrep -P` a generation at a time (the same on Linux and macOS). */
async function descendantsOf(pid: number): Promise<number[]> {
  const found: number[] = [];
  let parents = [pid];
  // Bounded, in case pids are reused into a loop while this walks.
  for (let depth = 0; parents.length > 0 && depth < 64; depth++) {
    const children = await new Promise<number[]>((resolve) => {
      execFile('pgrep', ['-P', parents.join(',')], { timeout: 10_000 }, (_error, stdout) => {
        // pgrep exits 1 when nothing matches; no pgrep at all leaves only the pid itself to kill.
        resolve(String(stdout).split(/\s+/).filter((word) => /^\d+$/.test(word)).map(Number));
      });
    });
    parents = children.filter((child) => !found.includes(child) && child !== pid);
    found.push(...parents);
  }
  return found;
}

/** "BOOT_ID START_TIME" as drover-runner.sh records it, or undefined without /proc. */
async function procIdent(pid: number): Promise<string | undefined> {
  const stat = await readOptional(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).trim().split(/\s+/);
  const bootId = ((await readOptional('/proc/sys/kernel/random/boot_id')) ?? '').trim();
  return `${bootId} ${fields[19] ?? ''}`;
}

function sandboxEnv(home: string, username: string): NodeJS.ProcessEnv {
  // The runner's bin directory first, so that `drover-runner` resolves as the default
  // runnerCommand expects; then the daemon's PATH (docker may live in a non-system place).
  const path = [join(home, '.drover', 'bin'), ...(process.env.PATH ?? '').split(':'), ...SYSTEM_PATH].filter(
    (entry, index, all) => entry !== '' && all.indexOf(entry) === index,
  );
  const env: NodeJS.ProcessEnv = {
    HOME: home,
    PATH: path.join(':'),
    USER: username,
    LOGNAME: username,
    SHELL: '/bin/sh',
    // HOME moved, so the docker CLI would miss the user's contexts and registry logins.
    DOCKER_CONFIG: process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'),
  };
  // Only what a login on a VM would plausibly have; the daemon's own settings (DROVER_RUNNER_DIR
  // above all) must not leak into the sandbox.
  for (const name of ['LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'DOCKER_HOST']) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

function toCloudInstance(record: InstanceRecord, port: number): CloudInstance {
  return { id: record.id, providerType: record.providerType, address: ADDRESS, port, tags: { ...record.tags } };
}

function recordText(record: InstanceRecord): string {
  return `${JSON.stringify(record, null, 2)}\n`;
}

function parseRecord(text: string, id: string, path: string): InstanceRecord {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new CloudError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  const record = data as Partial<InstanceRecord> | null;
  const tags = record?.tags;
  if (
    typeof record !== 'object' ||
    record === null ||
    record.id !== id ||
    typeof record.providerType !== 'string' ||
    typeof record.createdAt !== 'string' ||
    typeof tags !== 'object' ||
    tags === null ||
    Array.isArray(tags) ||
    !Object.values(tags).every((value) => typeof value === 'string')
  ) {
    throw new CloudError(`${path} is not an instance record for ${id}`);
  }
  return { id, providerType: record.providerType, tags: { ...tags }, createdAt: record.createdAt };
}

interface KeyPair {
  /** OpenSSH private key text. */
  private: string;
  /** OpenSSH public key line. */
  public: string;
}

// ssh2's keygen strips leading zero bytes from ed25519 public keys, so about 1 key in 256 cannot
// be parsed back (mscdex/ssh2#1390, #1513); draw again until ssh2 itself accepts both halves.
function generateKeyPair(): KeyPair {
  for (;;) {
    const { private: priv, public: pub } = utils.generateKeyPairSync('ed25519');
    if (!(utils.parseKey(pub) instanceof Error) && !(utils.parseKey(priv) instanceof Error)) {
      return { private: priv, public: pub };
    }
  }
}

/** The key pair in `path` (and, for people, `path.pub`), made on first use. */
async function loadOrCreateKeyPair(path: string): Promise<KeyPair> {
  let privateText = await readOptional(path);
  if (privateText === undefined) {
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, generateKeyPair().private, { mode: 0o600, flag: 'wx' });
    try {
      // link() never replaces a file: of two daemons starting at once on a fresh directory, one
      // key wins and both use it.
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await unlink(tmp);
    }
    privateText = await readFile(path, 'utf8');
  }
  // Derived from the private key every time, so the two halves can never disagree.
  const key = parseSingleKey(privateText, path);
  const publicLine = `${key.type} ${key.getPublicSSH().toString('base64')} drover-loopback\n`;
  if ((await readOptional(`${path}.pub`)) !== publicLine) await writeFileAtomic(`${path}.pub`, publicLine, 0o644);
  return { private: privateText, public: publicLine };
}

function parseSingleKey(text: string | Buffer, source: string): ParsedKey {
  const key = utils.parseKey(text);
  if (key instanceof Error) throw new Error(`${source}: not a usable SSH key: ${key.message}`);
  // parseKey returns an array only for multi-key input.
  if (Array.isArray(key)) throw new Error(`${source}: expected one SSH key`);
  return key;
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// Temp file + rename: a reader sees the old content or the new, never a truncated file.
async function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, text, { mode, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
