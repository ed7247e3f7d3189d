// What can be wrong with the queue's file, in words an operator acts on: a file the daemon cannot
// use stops start-up; at run time the queue is unhealthy while the file refuses writes.
import Database from 'better-sqlite3';

/** What `/healthz` reports of the queue. */
export type QueueHealth = { ok: true } | { ok: false; error: string };

export interface StorageProblem {
  /** Corruption is for good: the file is written no more. The others pass once a write succeeds. */
  kind: 'full' | 'read-only' | 'io' | 'corrupt';
  /** What is wrong, to follow the file's path: "the disk is full (SQLite: database or disk is full)". */
  text: string;
  /** What the operator should do about it. */
  fix: string;
}

/** The queue file cannot be used, so the daemon does not start. The message names queue.path, the file, what is wrong and the fix. */
export class QueueStorageError extends Error {
  override readonly name = 'QueueStorageError';

  constructor(
    readonly path: string,
    readonly problem: string,
    options?: ErrorOptions,
  ) {
    super(`queue.path: ${path}: ${problem}`, options);
  }
}

/** A read or change the queue file refused at run time; nothing in the queue changed. */
export class QueueUnavailableError extends Error {
  override readonly name = 'QueueUnavailableError';

  constructor(
    readonly path: string,
    readonly problem: StorageProblem,
    options?: ErrorOptions,
  ) {
    super(`the queue file ${path} cannot be used: ${problem.text}`, options);
  }
}

/** What a SQLite error says about the file, or undefined when it is not the file's fault (a bug, a constraint, a busy lock). */
export function storageProblem(error: unknown): StorageProblem | undefined {
  if (!(error instanceof Database.SqliteError)) return undefined;
  // Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED, ...) start with their primary code.
  const is = (primary: string) => error.code === primary || error.code.startsWith(`${primary}_`);
  const said = `(SQLite: ${error.message})`;
  if (is('SQLITE_FULL')) return { kind: 'full', text: `the disk is full ${said}`, fix: 'free some space on its disk' };
  if (is('SQLITE_READONLY')) {
    return { kind: 'read-only', text: `the file is read-only ${said}`, fix: 'make it, its -wal and -shm files and its directory writable by the daemon' };
  }
  if (is('SQLITE_NOTADB')) {
    return { kind: 'corrupt', text: `not a SQLite database ${said}`, fix: 'move it aside or point queue.path at another file' };
  }
  if (is('SQLITE_CORRUPT')) {
    return { kind: 'corrupt', text: `the file is corrupt ${said}`, fix: 'stop the daemon, then restore the file from a backup or move it aside' };
  }
  if (is('SQLITE_IOERR') || is('SQLITE_CANTOPEN')) return { kind: 'io', text: `cannot be read or written ${said}`, fix: 'check the file and its disk' };
  return undefined;
}

/** Why a queue file could not be opened or created, as a QueueStorageError; anything else (a bug) is returned as it is. */
export function openRefusal(path: string, error: unknown): unknown {
  if (error instanceof QueueStorageError) return error;
  const problem = storageProblem(error);
  if (problem !== undefined) return new QueueStorageError(path, `${problem.text}; ${problem.fix}`, { cause: error });
  // The file system refused to create the file or its directory (EACCES, EROFS, ENOSPC, ...).
  if (error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === 'string') {
    return new QueueStorageError(path, `cannot be created (${error.message}); make its directory writable by the daemon`, { cause: error });
  }
  return error;
}
