// Bad storage under the queue: a full disk makes it unhealthy (503 from /healthz and from a submit)
// until a write succeeds, with memory never ahead of the file, and a start it could not record is
// decided by the runner's list; a corrupt file is unhealthy for good and written no more; a file
// that cannot be used at all stops start-up, naming queue.path, the file and what is wrong.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { pino, type Logger } from 'pino';
import { SimulatedClock } from 'xstate';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parse, stringify } from 'yaml';
import { parseConfig } from '../src/config/load.js';
import { startDaemon } from '../src/daemon/daemon.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { QueueStorageError, QueueUnavailableError } from '../src/queue/storage.js';
import type { Container } from '../src/queue/types.js';
import type { Executor } from '../src/ssh/executor.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';
import { createStub, useFakeClock, type LogLine } from './support/pool-harness.js';
import { runDrover } from './support/run-drover.js';

// Every temp directory a test makes goes when it ends.
const made: string[] = [];
afterEach(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'drover-storage-'));
  made.push(dir);
  return dir;
}

function queuePath(): string {
  return join(tempDir(), 'queue.sqlite');
}

/**
 * Fills the disk under the queue, as far as the queue's own connection can tell: SQLite itself
 * raises SQLITE_FULL ("database or disk is full") from the queue's statements. `PRAGMA
 * max_page_count` pins the file at its current page count, so any write that needs a new page
 * fails. An UPDATE in place needs none (a real full disk fails it too, at the WAL append), so
 * TEMP triggers, on this connection only, make every insert and update of a container also write
 * a few pages of ballast. Returns what frees the disk again.
 */
function fillDisk(queue: SqliteQueue): () => void {
  const db = queue['db'];
  db.exec(`
    CREATE TABLE IF NOT EXISTS ballast (b BLOB);
    CREATE TEMP TRIGGER full_on_insert AFTER INSERT ON main.containers BEGIN INSERT INTO ballast VALUES (zeroblob(8192)); END;
    CREATE TEMP TRIGGER full_on_update AFTER UPDATE ON main.containers BEGIN INSERT INTO ballast VALUES (zeroblob(8192)); END;`);
  db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
  return () => {
    db.pragma('max_page_count = 4294967294');
    db.exec('DROP TRIGGER temp.full_on_insert; DROP TRIGGER temp.full_on_update;');
  };
}

/** Overwrites the root page of the containers table in the file with garbage, as a bad disk might. */
function corruptContainersTable(path: string, db: Database.Database): void {
  db.pragma('wal_checkpoint(TRUNCATE)');
  const { rootpage } = db.prepare<[], { rootpage: number }>("SELECT rootpage FROM sqlite_master WHERE name = 'containers'").get()!;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(pageSize, 0x5a), 0, pageSize, (rootpage - 1) * pageSize);
  closeSync(fd);
}

function logCapture(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

/** What the file holds live, in scheduling order, read over a connection of its own. */
function liveInFile(path: string): Array<{ uuid: string; state: string }> {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare<[], { uuid: string; state: string }>(
        "SELECT uuid, state FROM containers WHERE state IN ('queued', 'locked', 'running') ORDER BY (state = 'queued'), priority DESC, submitted_at, uuid",
      )
      .all();
  } finally {
    db.close();
  }
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected it to throw');
}

describe('the queue on a full disk', () => {
  it('refuses changes with QueueUnavailableError, memory staying as the file is; unhealthy (logged once) until a change commits', () => {
    const path = queuePath();
    const { logger, lines } = logCapture();
    const queue = new SqliteQueue({ path, maxAttempts: 3, logger });
    const a = queue.submit(spec());
    const b = queue.submit(spec({ priority: 5 }));
    queue.lock(a.uuid, 'i-1', 'small');
    const before = queue.pending();
    const free = fillDisk(queue);

    const refusals = [
      () => queue.submit(spec()),
      () => queue.submitMany([spec(), spec()]),
      () => queue.lockMany([{ uuid: b.uuid, instanceId: 'i-1', instanceType: 'small' }]),
      () => queue.markRunning(a.uuid, 'i-1', 'small'),
      () => queue.cancel(b.uuid),
    ];
    for (const refusal of refusals) expect(thrown(refusal)).toBeInstanceOf(QueueUnavailableError);
    const health = queue.health();
    expect(health.ok).toBe(false);
    expect(!health.ok && health.error).toBe(
      `queue file ${path}: the disk is full (SQLite: database or disk is full); containers cannot be submitted or change state until a write succeeds; free some space on its disk`,
    );
    expect(lines.filter((line) => line.msg === 'queue file refuses changes')).toHaveLength(1);
    // Nothing in memory moved: the same array, and the file holds just what it says.
    expect(queue.pending()).toBe(before);
    expect(queue.pending().map(({ uuid, state }) => ({ uuid, state }))).toEqual(liveInFile(path));
    expect(queue.liveOn('i-1').map((container) => container.uuid)).toEqual([a.uuid]);

    free();
    const c = queue.submit(spec());
    expect(queue.health()).toEqual({ ok: true });
    expect(lines.filter((line) => line.msg === 'queue file takes changes again')).toHaveLength(1);
    expect(queue.pending().map(({ uuid, state }) => ({ uuid, state }))).toEqual(liveInFile(path));
    expect(queue.get(c.uuid)?.state).toBe('queued');
    queue.close();
  });

  it('corruption found at run time: unhealthy for good, logged once, and the file is not written again', () => {
    const path = queuePath();
    const { logger, lines } = logCapture();
    const queue = new SqliteQueue({ path, maxAttempts: 3, logger });
    const a = queue.submit(spec());
    corruptContainersTable(path, queue['db']);
    // The page cache still holds the good page; a release of memory makes SQLite read the file again.
    queue['db'].pragma('shrink_memory');

    expect(thrown(() => queue.submit(spec()))).toBeInstanceOf(QueueUnavailableError);
    const files = () => [path, `${path}-wal`].map((file) => (existsSync(file) ? readFileSync(file).toString('base64') : ''));
    const found = files();
    for (const refusal of [() => queue.submit(spec()), () => queue.cancel(a.uuid), () => queue.lock(a.uuid, 'i-1', 'small')]) {
      expect(thrown(refusal)).toBeInstanceOf(QueueUnavailableError);
    }
    expect(files()).toEqual(found);
    const health = queue.health();
    expect(!health.ok && health.error).toBe(
      `queue file ${path}: the file is corrupt (SQLite: database disk image is malformed); nothing more is written to it; stop the daemon, then restore the file from a backup or move it aside`,
    );
    expect(lines.filter((line) => line.msg === 'queue file is corrupt; nothing more is written to it')).toHaveLength(1);
    // What is live is still served from memory.
    expect(queue.pending().map((container) => container.uuid)).toEqual([a.uuid]);
    queue.close();
  });
});

/** config/stub.yml with its state under `dir`, the queue at `queue` and the API on a free port. */
function stubConfigText(dir: string, queue: string): string {
  const config = parse(readFileSync('config/stub.yml', 'utf8')) as Record<string, Record<string, unknown> | undefined>;
  return stringify({ ...config, queue: { path: queue }, http: { ...config.http, port: 0, tokenFile: join(dir, 'token') } });
}

describe('/healthz and POST /containers on a full disk, through the daemon', () => {
  it('503 with the reason while the queue cannot be written, 200 again once a write succeeds', async () => {
    const dir = tempDir();
    const config = parseConfig(stubConfigText(dir, join(dir, 'queue.sqlite')), 'config/stub.yml (test copy)');
    // Nothing moves on this clock: no pass, probe or sync interferes.
    const daemon = await startDaemon(config, { clock: new SimulatedClock(), logger: pino({ level: 'silent' }) });
    try {
      const token = readFileSync(join(dir, 'token'), 'utf8').trim();
      const call = async (method: string, path: string, body?: unknown) => {
        const response = await fetch(`${daemon.url}${path}`, {
          method,
          headers: body === undefined ? { authorization: `Bearer ${token}` } : { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: response.status, text: await response.text() };
      };
      expect(await call('GET', '/healthz')).toEqual({ status: 200, text: '{"ok":true}' });

      const free = fillDisk(daemon.queue);
      const refused = await call('POST', '/containers', { command: ['true'] });
      expect(refused.status).toBe(503);
      expect(JSON.parse(refused.text)).toEqual({
        error: `the queue file ${config.queue.path} cannot be used: the disk is full (SQLite: database or disk is full)`,
      });
      const health = await call('GET', '/healthz');
      expect(health.status).toBe(503);
      expect(JSON.parse(health.text)).toEqual({ ok: false, error: expect.stringContaining(`queue file ${config.queue.path}: the disk is full`) });
      expect((await call('GET', '/metrics')).text).toContain('drover_queue_healthy 0');
      expect(JSON.parse((await call('GET', '/containers')).text)).toEqual({ containers: [] });

      free();
      expect((await call('POST', '/containers', { command: ['true'] })).status).toBe(201);
      expect(await call('GET', '/healthz')).toEqual({ status: 200, text: '{"ok":true}' });
      expect((await call('GET', '/metrics')).text).toContain('drover_queue_healthy 1');
    } finally {
      await daemon.stop();
    }
  });
});

describe('a start the queue could not record, on the stub cloud', () => {
  beforeEach(useFakeClock);
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A harness whose disk fills the moment a runner answers a start, before the pool hears of it. */
  function fullOnStart(containerRunMs: number): { h: DispatchHarness; free: () => void } {
    let free: (() => void) | null = null;
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 }, containerRunMs });
    const h: DispatchHarness = new DispatchHarness(stub, {
      queuePath: queuePath(),
      wrapExecutor: (executor): Executor => ({
        run: async (command, options) => {
          const result = await executor.run(command, options);
          if (/ start /.test(command) && free === null) free = fillDisk(h.queue);
          return result;
        },
        setTarget: (target) => executor.setTarget(target),
        close: () => executor.close(),
      }),
    });
    return {
      h,
      free: () => {
        free?.();
        free = () => {};
      },
    };
  }

  type Row = Pick<Container, 'state' | 'attempts' | 'exitCode' | 'startedAt'>;
  const row = (h: DispatchHarness, uuid: string): Row => {
    const { state, attempts, exitCode, startedAt } = h.queue.get(uuid)!;
    return { state, attempts, exitCode, startedAt };
  };

  /**
   * Runs `around` at the container's first exit record, which follows a new try at its start record
   * (the attempt writes both on an exit): the disk was full for the start until then. Returns the
   * rows the queue held right before and right after each exit record, and whether it was healthy.
   */
  function atFirstExit(h: DispatchHarness, around: (recordExit: () => void) => void): Array<{ before: Row; healthy: boolean; after: Row }> {
    const recordExit = h.queue.recordExit.bind(h.queue);
    const exits: Array<{ before: Row; healthy: boolean; after: Row }> = [];
    h.queue.recordExit = (uuid, exitCode, instanceId) => {
      const before = row(h, uuid);
      const healthy = h.queue.health().ok;
      try {
        if (exits.length > 0) recordExit(uuid, exitCode, instanceId);
        else around(() => recordExit(uuid, exitCode, instanceId));
      } finally {
        exits.push({ before, healthy, after: row(h, uuid) });
      }
    };
    return exits;
  }

  it('is an uncertain start: the runner list decides, and records it running once the disk has room', async () => {
    const { h, free } = fullOnStart(10 * 60_000);
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => h.starts.get(container.uuid) === 1, 30_000, 100)).toBe(true);
    // Lists come every second and show it running; the queue cannot say so yet.
    await h.runUntil(() => false, 5_000, 100);
    expect(h.queue.get(container.uuid)).toMatchObject({ state: 'locked', attempts: 0 });
    expect(h.queue.health().ok).toBe(false);

    free();
    // The next runner list decides it, and this time the record is written.
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 3_000, 100)).toBe(true);
    expect(h.queue.get(container.uuid)).toMatchObject({ attempts: 1, instanceId: expect.any(String) });
    expect(h.queue.health()).toEqual({ ok: true });
    expect(h.starts.get(container.uuid)).toBe(1);
    h.stop();
  });

  it('a disk full until after its exit: completed with its exit code once there is room, never run again', async () => {
    const { h, free } = fullOnStart(5_000);
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => h.starts.get(container.uuid) === 1, 30_000, 100)).toBe(true);
    const states = new Set<string>();
    await h.runUntil(() => false, 30_000, 500, () => states.add(h.queue.get(container.uuid)!.state));
    expect([...states]).toEqual(['locked']);

    free();
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', 60_000, 500)).toBe(true);
    expect(h.queue.get(container.uuid)).toMatchObject({ exitCode: 0, attempts: 1 });
    expect(h.starts.get(container.uuid)).toBe(1);
    h.stop();
  });

  it('a disk full across its start and free by its exit: the exit is recorded with the start (attempts 1, a start time)', async () => {
    const { h, free } = fullOnStart(3_000);
    const exits = atFirstExit(h, (recordExit) => {
      free();
      recordExit();
    });
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => exits.length > 0, 60_000, 100)).toBe(true);
    // The start was refused by the full disk, so the queue still had it locked.
    expect(exits[0]).toMatchObject({ before: { state: 'locked', attempts: 0 }, healthy: false });
    expect(exits[0]?.after).toEqual({ state: 'running', attempts: 1, exitCode: 0, startedAt: expect.any(Number) });

    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', 30_000, 500)).toBe(true);
    expect(row(h, container.uuid)).toEqual({ state: 'complete', attempts: 1, exitCode: 0, startedAt: exits[0]?.after.startedAt });
    expect(h.starts.get(container.uuid)).toBe(1);
    h.stop();
  });

  it('its instance vanishing after an exit recorded while the queue had it locked: completed with that exit, never run again', async () => {
    const { h, free } = fullOnStart(3_000);
    const vanished = { instanceId: '', refill: (): void => {} };
    const exits = atFirstExit(h, (recordExit) => {
      // Room for the exit alone: the disk is full again for the completion, and the instance goes
      // with the container's output before the disk has room again.
      free();
      try {
        recordExit();
      } finally {
        vanished.refill = fillDisk(h.queue);
        vanished.instanceId = h.stub.liveInstances()[0]?.id ?? '';
        h.stub.vanish(vanished.instanceId);
      }
    });
    h.start();
    const container = h.queue.submit(spec());
    expect(await h.runUntil(() => exits.length > 0, 60_000, 100)).toBe(true);
    expect(exits[0]).toMatchObject({ before: { state: 'locked', attempts: 0 }, healthy: false, after: { state: 'running', attempts: 1, exitCode: 0 } });
    // The pool forgets the instance and the attempt ends, all while the disk is full.
    expect(await h.runUntil(() => h.pool.isGone(vanished.instanceId) && !h.pool.hasContainer(container.uuid), 120_000, 1_000)).toBe(true);
    expect(h.queue.get(container.uuid)?.state).toBe('running');

    vanished.refill();
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state !== 'running', 30_000, 1_000)).toBe(true);
    // Whatever the next minute brings, it is not a second run.
    await h.runUntil(() => false, 60_000, 1_000);
    expect(h.queue.get(container.uuid)).toMatchObject({
      state: 'complete',
      exitCode: 0,
      attempts: 1,
      reason: expect.stringMatching(/^exited with 0; its output was not collected: instance \S+ is gone$/),
    });
    expect(h.starts.get(container.uuid)).toBe(1);
    h.stop();
  });
});

/**
 * The QueueStorageError message root gets opening the queue at `path` without its capabilities
 * (setpriv drops them all), so file modes bind it as they bind anyone. Still uid 0, so it reads
 * the repository wherever it was cloned.
 */
async function refusalWithoutRootPowers(path: string): Promise<string> {
  const script = `
    const { SqliteQueue } = await import(${JSON.stringify(pathToFileURL(resolve('src/queue/sqlite-queue.ts')).href)});
    const { QueueStorageError } = await import(${JSON.stringify(pathToFileURL(resolve('src/queue/storage.ts')).href)});
    try { new SqliteQueue({ path: ${JSON.stringify(path)}, maxAttempts: 3 }); process.stdout.write('opened'); }
    catch (error) { process.stdout.write(error instanceof QueueStorageError ? error.message : 'other: ' + error); }`;
  const child = spawn('setpriv', ['--bounding-set=-all', '--inh-caps=-all', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: tmpdir() },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((done, reject) => {
    child.on('error', reject);
    child.on('close', done);
  });
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  return stdout;
}

describe('a queue file that cannot be used stops start-up', () => {
  const tempQueue = (content?: Buffer): string => {
    const path = queuePath();
    if (content) writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  const refusal = (path: string): QueueStorageError => {
    const error = thrown(() => new SqliteQueue({ path, maxAttempts: 3 }));
    expect(error).toBeInstanceOf(QueueStorageError);
    return error as QueueStorageError;
  };

  it('random bytes: not a SQLite database, naming queue.path and the file', () => {
    const path = tempQueue(randomBytes(8192));
    const error = refusal(path);
    expect(error.path).toBe(path);
    expect(error.message).toBe(`queue.path: ${path}: not a SQLite database (SQLite: file is not a database); move it aside or point queue.path at another file`);
  });

  it('a damaged table: corrupt', () => {
    const path = tempQueue();
    const queue = new SqliteQueue({ path, maxAttempts: 3 });
    queue.submit(spec());
    corruptContainersTable(path, queue['db']);
    queue.close();
    expect(refusal(path).message).toBe(
      `queue.path: ${path}: the file is corrupt (SQLite: database disk image is malformed); stop the daemon, then restore the file from a backup or move it aside`,
    );
  });

  // Root writes through file modes, so as root the queue is opened by a child without root's capabilities.
  it('a read-only file: read-only', async () => {
    const path = tempQueue();
    new SqliteQueue({ path, maxAttempts: 3 }).close();
    chmodSync(path, 0o444);
    const message = process.getuid?.() === 0 ? await refusalWithoutRootPowers(path) : refusal(path).message;
    expect(message).toMatch(new RegExp(`^queue\\.path: ${path}: the file is read-only \\(SQLite: .*\\); make it, its -wal`));
  });

  it('startDaemon throws it before the token or the cloud are touched', async () => {
    const path = tempQueue(randomBytes(8192));
    const dir = join(path, '..');
    const config = parseConfig(stubConfigText(dir, path), 'config/stub.yml (test copy)');
    await expect(startDaemon(config, { logger: pino({ level: 'silent' }) })).rejects.toBeInstanceOf(QueueStorageError);
    expect(existsSync(join(dir, 'token'))).toBe(false);
  });

  // Needs QueueStorageError among the errors src/cli/main.ts turns into exit code 2.
  it('drover run: exit code 2 and the reason on stderr', async () => {
    const path = tempQueue(randomBytes(8192));
    const dir = join(path, '..');
    const configPath = join(dir, 'config.yml');
    writeFileSync(configPath, stubConfigText(dir, path));
    const { code, stderr } = await runDrover(['run', '--config', configPath], process.env, { timeoutMs: 20_000 });
    expect(stderr).toBe(`drover: queue.path: ${path}: not a SQLite database (SQLite: file is not a database); move it aside or point queue.path at another file\n`);
    expect(code).toBe(2);
  });
});
