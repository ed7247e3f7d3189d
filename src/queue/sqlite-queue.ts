// The embedded container queue: one SQLite file (WAL) that survives restarts of the daemon.

import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { systemClock, type Clock } from '../clock.js';
import { Notifier } from '../pool/notifier.js';
import {
  ContainerNotFoundError,
  ContainerStateError,
  logTailBytes,
  type Constraints,
  type Container,
  type ContainerQueue,
  type ContainerSpec,
  type ContainerState,
} from './types.js';

/** A submitted spec the queue refuses; the message names the offending field. */
export class InvalidContainerSpecError extends Error {
  // Set explicitly so callers that match by name (the HTTP API avoids importing this module) and logs see it.
  override readonly name = 'InvalidContainerSpecError';

  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export interface SqliteQueueOptions {
  path: string;
  /** Starts of one container (lost ones included) before requeueOrFail fails it. */
  maxAttempts: number;
  clock?: Clock;
}

// Bump when the schema changes and add a migration step from the previous version in migrate().
const schemaVersion = 1;

const schema = `
CREATE TABLE IF NOT EXISTS containers (
  uuid TEXT PRIMARY KEY NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued', 'locked', 'running', 'complete', 'failed', 'cancelled')),
  image TEXT,
  command TEXT NOT NULL,
  env TEXT NOT NULL,
  constraints TEXT NOT NULL,
  priority INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  instance_id TEXT,
  instance_type TEXT,
  log_tail TEXT NOT NULL DEFAULT '',
  reason TEXT,
  submitted_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  updated_at INTEGER NOT NULL
);
-- Partial and on the very expression pending() sorts by, so the scheduler's frequent pending()
-- reads only live rows, already in order, however many finished containers the table keeps.
CREATE INDEX IF NOT EXISTS containers_pending
  ON containers ((state = 'queued'), priority DESC, submitted_at, uuid)
  WHERE state IN ('queued', 'locked', 'running');
CREATE INDEX IF NOT EXISTS containers_newest ON containers (submitted_at DESC, uuid DESC);
`;

const pendingSql = `
SELECT * FROM containers
WHERE state IN ('queued', 'locked', 'running')
ORDER BY (state = 'queued'), priority DESC, submitted_at, uuid`;

interface Row {
  uuid: string;
  state: ContainerState;
  image: string | null;
  command: string;
  env: string;
  constraints: string;
  priority: number;
  attempts: number;
  exit_code: number | null;
  instance_id: string | null;
  instance_type: string | null;
  log_tail: string;
  reason: string | null;
  submitted_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
}

type Params = Record<string, string | number | null>;

const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class SqliteQueue implements ContainerQueue {
  private readonly db: Database.Database;
  private readonly clock: Clock;
  private readonly maxAttempts: number;
  private readonly notifier = new Notifier();
  private readonly statements;

  constructor(options: SqliteQueueOptions) {
    if (!Number.isSafeInteger(options.maxAttempts) || options.maxAttempts < 1) {
      throw new RangeError(`maxAttempts must be an integer >= 1, got ${options.maxAttempts}`);
    }
    this.maxAttempts = options.maxAttempts;
    this.clock = options.clock ?? systemClock;
    mkdirSync(dirname(options.path), { recursive: true });
    this.db = new Database(options.path);
    try {
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('journal_mode = WAL');
      // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
      this.db.pragma('synchronous = NORMAL');
      this.migrate();
    } catch (err) {
      this.db.close();
      throw err;
    }
    const db = this.db;
    this.statements = {
      insert: db.prepare<Params>(`
        INSERT INTO containers (uuid, state, image, command, env, constraints, priority, submitted_at, updated_at)
        VALUES (@uuid, 'queued', @image, @command, @env, @constraints, @priority, @now, @now)`),
      get: db.prepare<[string], Row>('SELECT * FROM containers WHERE uuid = ?'),
      pending: db.prepare<[], Row>(pendingSql),
      list: db.prepare<Params, Row>(`
        SELECT * FROM containers
        WHERE @states IS NULL OR state IN (SELECT value FROM json_each(@states))
        ORDER BY submitted_at DESC, uuid DESC
        LIMIT @limit`),
      lock: db.prepare<Params>(`
        UPDATE containers SET state = 'locked', updated_at = @now
        WHERE uuid = @uuid AND state = 'queued'`),
      unlock: db.prepare<Params>(`
        UPDATE containers SET state = 'queued', reason = @reason, updated_at = @now
        WHERE uuid = @uuid AND state = 'locked'`),
      markRunning: db.prepare<Params>(`
        UPDATE containers SET state = 'running', attempts = attempts + 1, instance_id = @instanceId,
          instance_type = @instanceType, started_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state = 'locked'`),
      complete: db.prepare<Params>(`
        UPDATE containers SET state = 'complete', exit_code = @exitCode, log_tail = @logTail,
          finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('running', 'locked')`),
      requeue: db.prepare<Params>(`
        UPDATE containers SET state = 'queued', instance_id = NULL, instance_type = NULL, started_at = NULL,
          reason = @reason, updated_at = @now
        WHERE uuid = @uuid AND state IN ('running', 'locked')`),
      failLost: db.prepare<Params>(`
        UPDATE containers SET state = 'failed', reason = @reason, finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('running', 'locked')`),
      fail: db.prepare<Params>(`
        UPDATE containers SET state = 'failed', reason = @reason, log_tail = coalesce(@logTail, log_tail),
          finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('queued', 'locked', 'running')`),
      cancel: db.prepare<Params>(`
        UPDATE containers SET state = 'cancelled', reason = 'cancelled by user', finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('queued', 'locked', 'running')`),
    };
  }

  submit(spec: ContainerSpec): Container {
    const valid = validateSpec(spec);
    const uuid = randomUUID();
    this.statements.insert.run({
      uuid,
      image: valid.image,
      command: JSON.stringify(valid.command),
      env: JSON.stringify(valid.env),
      constraints: JSON.stringify(valid.constraints),
      priority: valid.priority,
      now: this.clock.now(),
    });
    this.notifier.notify();
    return this.mustGet(uuid);
  }

  get(uuid: string): Container | undefined {
    const row = this.statements.get.get(uuid);
    return row === undefined ? undefined : fromRow(row);
  }

  list(filter: { states?: ContainerState[]; limit?: number } = {}): Container[] {
    const { states, limit } = filter;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
      throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
    }
    return this.statements.list
      .all({ states: states === undefined ? null : JSON.stringify(states), limit: limit ?? -1 })
      .map(fromRow);
  }

  pending(): Container[] {
    return this.statements.pending.all().map(fromRow);
  }

  lock(uuid: string): boolean {
    const locked = this.db
      .transaction(() => {
        if (this.statements.lock.run({ uuid, now: this.clock.now() }).changes > 0) return true;
        this.mustGet(uuid);
        return false;
      })
      .immediate();
    if (locked) this.notifier.notify();
    return locked;
  }

  unlock(uuid: string, reason: string): void {
    this.mutate(uuid, 'unlock', this.statements.unlock, { reason });
  }

  markRunning(uuid: string, instanceId: string, instanceType: string): void {
    this.mutate(uuid, 'mark running', this.statements.markRunning, { instanceId, instanceType });
  }

  complete(uuid: string, exitCode: number, logTail: string): void {
    if (!Number.isSafeInteger(exitCode)) throw new RangeError(`exit code must be an integer, got ${exitCode}`);
    this.mutate(uuid, 'complete', this.statements.complete, { exitCode, logTail: truncateLogTail(logTail) });
  }

  requeueOrFail(uuid: string, reason: string): ContainerState {
    const state = this.db
      .transaction((): ContainerState => {
        const container = this.mustGet(uuid);
        if (container.state !== 'running' && container.state !== 'locked') {
          throw new ContainerStateError(uuid, container.state, 'requeue');
        }
        const now = this.clock.now();
        if (container.attempts < this.maxAttempts) {
          this.statements.requeue.run({ uuid, reason, now });
          return 'queued';
        }
        const times = container.attempts === 1 ? 'time' : 'times';
        this.statements.failLost.run({
          uuid,
          reason: `lost ${container.attempts} ${times} (maxAttempts ${this.maxAttempts}); last: ${reason}`,
          now,
        });
        return 'failed';
      })
      .immediate();
    this.notifier.notify();
    return state;
  }

  fail(uuid: string, reason: string, logTail?: string): void {
    this.mutate(uuid, 'fail', this.statements.fail, {
      reason,
      logTail: logTail === undefined ? null : truncateLogTail(logTail),
    });
  }

  cancel(uuid: string): Container {
    const { container, changed } = this.db
      .transaction(() => {
        const changed = this.statements.cancel.run({ uuid, now: this.clock.now() }).changes > 0;
        return { container: this.mustGet(uuid), changed };
      })
      .immediate();
    if (changed) this.notifier.notify();
    return container;
  }

  subscribe(listener: () => void): () => void {
    // A notification queued just before close() must not reach a listener that would read a closed database.
    return this.notifier.subscribe(() => {
      if (this.db.open) listener();
    });
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  // Runs a guarded UPDATE; when it touched nothing, tells "unknown uuid" from "wrong state".
  private mutate(uuid: string, action: string, statement: Database.Statement<[Params]>, params: Params): void {
    this.db
      .transaction(() => {
        if (statement.run({ ...params, uuid, now: this.clock.now() }).changes > 0) return;
        throw new ContainerStateError(uuid, this.mustGet(uuid).state, action);
      })
      .immediate();
    this.notifier.notify();
  }

  private mustGet(uuid: string): Container {
    const container = this.get(uuid);
    if (container === undefined) throw new ContainerNotFoundError(uuid);
    return container;
  }

  private migrate(): void {
    this.db
      .transaction(() => {
        const version = this.db.pragma('user_version', { simple: true }) as number;
        if (version > schemaVersion) {
          throw new Error(
            `queue database schema version ${version} is newer than this Drover understands (${schemaVersion})`,
          );
        }
        this.db.exec(schema);
        if (version < schemaVersion) this.db.pragma(`user_version = ${schemaVersion}`);
      })
      .immediate();
  }
}

/** The last `logTailBytes` bytes of `text` in UTF-8, starting on a character boundary. */
export function truncateLogTail(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= logTailBytes) return text;
  let start = bytes.length - logTailBytes;
  // Skip continuation bytes (10xxxxxx) so the tail does not start with half a character.
  while (start < bytes.length && ((bytes[start] ?? 0) & 0xc0) === 0x80) start++;
  return bytes.subarray(start).toString('utf8');
}

function fromRow(row: Row): Container {
  return {
    uuid: row.uuid,
    state: row.state,
    image: row.image,
    command: JSON.parse(row.command) as string[],
    env: JSON.parse(row.env) as Record<string, string>,
    constraints: JSON.parse(row.constraints) as Constraints,
    priority: row.priority,
    attempts: row.attempts,
    exitCode: row.exit_code,
    instanceId: row.instance_id,
    instanceType: row.instance_type,
    logTail: row.log_tail,
    reason: row.reason,
    submittedAt: row.submitted_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    updatedAt: row.updated_at,
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(field: string, message: string): InvalidContainerSpecError {
  return new InvalidContainerSpecError(field, `${field} ${message}`);
}

// Checks the spec as untrusted input (it arrives from the API as JSON) and returns a copy holding
// only the known fields, so stray properties never reach the database.
function validateSpec(spec: unknown): ContainerSpec {
  if (!isRecord(spec)) throw invalid('spec', 'must be an object');
  const { image, command, env, constraints, priority } = spec;

  if (image !== null && (typeof image !== 'string' || image === '')) {
    throw invalid('image', 'must be a non-empty string or null');
  }

  if (!Array.isArray(command) || command.length === 0) {
    throw invalid('command', 'must be a non-empty array of strings');
  }
  command.forEach((arg: unknown, i) => {
    if (typeof arg !== 'string') throw invalid(`command[${i}]`, 'must be a string');
    // execve cannot pass a NUL inside an argument.
    if (arg.includes('\0')) throw invalid(`command[${i}]`, 'must not contain a NUL character');
  });
  if (command[0] === '') throw invalid('command[0]', 'must name a program, got an empty string');

  if (!isRecord(env)) throw invalid('env', 'must be an object of strings');
  const envCopy: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (!envName.test(key)) throw invalid('env', `key ${JSON.stringify(key)} is not a valid variable name`);
    if (typeof value !== 'string') throw invalid(`env.${key}`, 'must be a string');
    if (value.includes('\0')) throw invalid(`env.${key}`, 'must not contain a NUL character');
    envCopy[key] = value;
  }

  if (!isRecord(constraints)) throw invalid('constraints', 'must be an object');
  const count = (name: keyof Constraints, min: number): number => {
    const value = constraints[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw invalid(`constraints.${name}`, `must be an integer >= ${min}, got ${JSON.stringify(value)}`);
    }
    return value;
  };
  const constraintsCopy: Constraints = {
    vcpus: count('vcpus', 1),
    ramMiB: count('ramMiB', 1),
    scratchGiB: count('scratchGiB', 0),
    gpus: count('gpus', 0),
    preemptible: (() => {
      const value = constraints.preemptible;
      if (typeof value !== 'boolean') throw invalid('constraints.preemptible', 'must be true or false');
      return value;
    })(),
  };

  if (typeof priority !== 'number' || !Number.isSafeInteger(priority)) {
    throw invalid('priority', `must be an integer, got ${JSON.stringify(priority)}`);
  }

  return {
    image,
    command: [...(command as string[])],
    env: envCopy,
    constraints: constraintsCopy,
    priority,
  };
}
