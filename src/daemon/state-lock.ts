// One dispatcher per queue and per loopback pool: a daemon takes an exclusive lock on the state it
// owns before it does anything else, and a second daemon on the same state refuses to start.
//
// Node has no flock, so the lock is SQLite's: a dedicated lock database next to the state, opened
// in exclusive locking mode with an exclusive transaction held open for the process's life. SQLite
// locks it with POSIX fcntl locks, which the OS drops when the process dies, so a crashed or
// SIGKILLed daemon never leaves a stale lock behind. Who holds it is written to a plain JSON
// sidecar (`<lock>.holder`), since a refused daemon cannot read the locked database.
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import type { Config } from '../config/schema.js';
import { makePrivateDirectory } from '../private-directory.js';

/** The daemon that holds a lock, as it recorded itself. */
export interface LockHolder {
  pid: number;
  host: string;
  /** ISO time the lock was taken. */
  since: string;
  /** The config file the holder was started with, when known. */
  config?: string;
}

/** Another daemon holds the lock on state this one would use. */
export class StateLockedError extends Error {
  override readonly name = 'StateLockedError';

  constructor(
    /** The config key naming the locked state, e.g. `queue.path`. */
    readonly key: string,
    /** The locked state (the queue file, the loopback directory). */
    readonly resource: string,
    /** The holder as recorded in the sidecar; undefined when it could not be read. */
    readonly holder: LockHolder | undefined,
    readonly lockPath: string,
  ) {
    super(
      holder
        ? `${key}: ${resource} is in use by drover pid ${holder.pid} on host ${holder.host} since ${holder.since}` +
            `${holder.config ? ` (config ${holder.config})` : ''}; stop it first`
        : `${key}: ${resource} is in use by another drover (lock ${lockPath}; its holder is not recorded); stop it first`,
    );
  }
}

export interface StateLock {
  /** Ends the lock: removes the holder sidecar, then closes the lock database. Idempotent. */
  release(): void;
}

export interface TakeStateLockOptions {
  /** Config key named in the refusal. */
  key: string;
  /** The state being protected, named in the refusal. */
  resource: string;
  /** The lock database file. */
  lockPath: string;
  /** The config file this daemon was started with, recorded for whoever is refused. */
  configPath?: string;
}

// Held connections, so that a lock whose StateLock was dropped without release() is not closed
// by the garbage collector (better-sqlite3 closes unreachable databases) while the process lives.
const held = new Set<Database.Database>();

/** Takes the lock or throws StateLockedError naming its holder. Never waits. */
export function takeStateLock(options: TakeStateLockOptions): StateLock {
  const lockPath = resolve(options.lockPath);
  const holderPath = `${lockPath}.holder`;
  makePrivateDirectory(dirname(lockPath));
  // timeout 0: better-sqlite3 would otherwise wait 5 s for a lock that will not come free.
  const db = new Database(lockPath, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // No journal file beside the lock; the database never holds anything worth rolling back.
    db.pragma('journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if (err instanceof Database.SqliteError && (err.code === 'SQLITE_BUSY' || err.code === 'SQLITE_LOCKED')) {
      throw new StateLockedError(options.key, options.resource, readHolder(holderPath), lockPath);
    }
    throw err;
  }

  const holder: LockHolder = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  if (options.configPath !== undefined) holder.config = options.configPath;
  try {
    // Renamed into place, so a refused daemon never reads half a file.
    const tmp = `${holderPath}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(holder)}\n`, { mode: 0o600 });
    renameSync(tmp, holderPath);
  } catch (err) {
    db.close();
    throw err;
  }

  held.add(db);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      // The sidecar goes while the lock is still held, so this never removes a successor's.
      try {
        unlinkSync(holderPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      } finally {
        held.delete(db);
        db.close();
      }
    },
  };
}

/**
 * Takes every lock the config's state needs: the queue file's and, on the loopback driver, the
 * sandbox directory's (two daemons with different queues must not share one pool either).
 */
export function takeStateLocks(config: Config, configPath?: string): StateLock {
  const wanted: TakeStateLockOptions[] = [
    { key: 'queue.path', resource: resolve(config.queue.path), lockPath: `${resolve(config.queue.path)}.lock`, configPath },
  ];
  if (config.cloud.driver === 'loopback') {
    const directory = resolve(config.cloud.loopback.directory);
    wanted.push({ key: 'cloud.loopback.directory', resource: directory, lockPath: join(directory, '.lock'), configPath });
  }
  const taken: StateLock[] = [];
  try {
    for (const options of wanted) {
      taken.push(takeStateLock(options));
    }
  } catch (err) {
    for (const lock of taken.reverse()) lock.release();
    throw err;
  }
  return {
    release() {
      for (const lock of [...taken].reverse()) lock.release();
    },
  };
}

function readHolder(path: string): LockHolder | undefined {
  try {
    const data = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockHolder>;
    if (typeof data.pid !== 'number' || typeof data.host !== 'string' || typeof data.since !== 'string') return undefined;
    return { pid: data.pid, host: data.host, since: data.since, ...(typeof data.config === 'string' ? { config: data.config } : {}) };
  } catch {
    return undefined;
  }
}
