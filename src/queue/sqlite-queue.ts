// The embedded container queue: one SQLite file (WAL) that survives restarts of the daemon.

import { randomUUID } from 'node:crypto';
import { closeSync, fchmodSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import { makePrivateDirectory } from '../private-directory.js';
import type { LaunchConfigAdminState } from '../config/launch-configs.js';
import type { LaunchConfigStateStore } from '../pool/launch-config-view.js';
import { Notifier } from '../pool/notifier.js';
import { openRefusal, QueueStorageError, QueueUnavailableError, storageProblem, type QueueHealth, type StorageProblem } from './storage.js';
import {
  ContainerNotFoundError,
  ContainerStateError,
  finalStates,
  logTailBytes,
  logTailMarker,
  logTailMarkerPattern,
  type Constraints,
  type Container,
  type ContainerQueue,
  type ContainerSpec,
  type ContainerState,
  type LockRequest,
} from './types.js';

/** A submitted spec the queue refuses; the message names the offending field. */
export class InvalidContainerSpecError extends Error {
  // Named for logs; callers match it by class.
  override readonly name = 'InvalidContainerSpecError';

  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** A `path` for a queue held in memory alone (SQLite's own name for one): the simulator's. */
export const inMemoryQueuePath = ':memory:';

export interface SqliteQueueOptions {
  path: string;
  /** Starts of one container (lost ones included) before requeueOrFail fails it. */
  maxAttempts: number;
  clock?: Clock;
  /** Bytes of output a stored log tail keeps, besides its marker line (config `pool.logTailBytes`); default 65536. */
  logTailBytes?: number;
  /** Where a storage failure (disk full, corruption, ...) is logged, once each time it begins. */
  logger?: Logger;
}

// Bump when the schema changes and add a migration step from the previous version in migrate().
// Not bumped for launch_config_states: a table of its own, added by `CREATE TABLE IF NOT EXISTS`
// at every open, so a version 1 file gains it on its first open by this Drover, and an older
// Drover, which knows no launch configs, reads the file as before and leaves the table alone.
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
-- Partial and on the very expression of scheduling order, so loading the live set at open reads
-- only live rows, already in order, however many finished containers the table keeps.
CREATE INDEX IF NOT EXISTS containers_pending
  ON containers ((state = 'queued'), priority DESC, submitted_at, uuid)
  WHERE state IN ('queued', 'locked', 'running');
CREATE INDEX IF NOT EXISTS containers_newest ON containers (submitted_at DESC, uuid DESC);
-- The operator's pause or archive of each launch config (LaunchConfigStateStore), so a restarted
-- daemon keeps it; 'broken' is the pool's own verdict and is never saved.
CREATE TABLE IF NOT EXISTS launch_config_states (
  id TEXT PRIMARY KEY NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('active', 'paused', 'archived')),
  changed_at INTEGER NOT NULL
);
`;

const launchConfigAdminStates: ReadonlySet<string> = new Set<LaunchConfigAdminState>(['active', 'paused', 'archived']);

const liveSql = `
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

// Every column but the JSON ones, which never change after submit: what a transition returns, so
// memory takes the values the database actually wrote without parsing anything.
type Scalars = Omit<Row, 'command' | 'env' | 'constraints'>;
const scalarColumns =
  'uuid, state, image, priority, attempts, exit_code, instance_id, instance_type, log_tail, reason, submitted_at, started_at, finished_at, updated_at';

type Params = Record<string, string | number | null>;
type Update = Database.Statement<[Params], Scalars>;

const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A read of a queue after close(); its memory no longer follows the file. */
export class QueueClosedError extends Error {
  override readonly name = 'QueueClosedError';

  constructor() {
    super('the container queue is closed');
  }
}

export class SqliteQueue implements ContainerQueue, LaunchConfigStateStore {
  private readonly path: string;
  private readonly logger: Logger | undefined;
  private readonly db: Database.Database;
  private readonly clock: Clock;
  private readonly maxAttempts: number;
  private readonly logTailBytes: number;
  private readonly notifier = new Notifier();
  private readonly statements;
  /** update() in an immediate transaction of its own. Built once: db.transaction() makes four wrapper functions per call (~7 µs each time). */
  private readonly updateAlone: (uuid: string, action: string, statement: Update, params: Params) => Scalars;
  // The live set, a mirror of the file's queued, locked and running rows. This queue is the
  // file's only writer, so the mirror stays exact if it changes only after each commit.
  private readonly live = new Map<string, Readonly<Container>>();
  private readonly order: ScheduleOrder;
  private readonly byInstance = new Map<string, Map<string, Readonly<Container>>>();
  /** Why the file last refused a change, until one commits; corruption stays. */
  private problem: StorageProblem | null = null;

  constructor(options: SqliteQueueOptions) {
    if (!Number.isSafeInteger(options.maxAttempts) || options.maxAttempts < 1) {
      throw new RangeError(`maxAttempts must be an integer >= 1, got ${options.maxAttempts}`);
    }
    this.maxAttempts = options.maxAttempts;
    const tailBytes = options.logTailBytes ?? logTailBytes;
    if (!Number.isSafeInteger(tailBytes) || tailBytes < 1) {
      throw new RangeError(`logTailBytes must be an integer >= 1, got ${tailBytes}`);
    }
    this.logTailBytes = tailBytes;
    this.clock = options.clock ?? systemClock;
    this.path = options.path;
    this.logger = options.logger;
    // The file holds submitted env values: a new one is created 0600 (in a 0700 directory) before
    // SQLite opens it, whatever the umask; SQLite gives its -wal and -shm the main file's mode. An
    // existing file is left as it is (the daemon's start-up check refuses one others can read).
    // A file that cannot be used (read-only, not a database, corrupt, ...) is a QueueStorageError.
    try {
      this.db = openDatabase(options.path);
    } catch (err) {
      throw openRefusal(options.path, err);
    }
    try {
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('journal_mode = WAL');
      // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
      this.db.pragma('synchronous = NORMAL');
      this.migrate();
    } catch (err) {
      this.db.close();
      throw openRefusal(options.path, err);
    }
    const db = this.db;
    this.statements = {
      insert: db.prepare<Params>(`
        INSERT INTO containers (uuid, state, image, command, env, constraints, priority, attempts, exit_code,
          instance_id, instance_type, log_tail, reason, submitted_at, started_at, finished_at, updated_at)
        VALUES (@uuid, @state, @image, @command, @env, @constraints, @priority, @attempts, @exit_code,
          @instance_id, @instance_type, @log_tail, @reason, @submitted_at, @started_at, @finished_at, @updated_at)`),
      get: db.prepare<[string], Row>('SELECT * FROM containers WHERE uuid = ?'),
      status: db.prepare<[string], Pick<Row, 'state' | 'attempts' | 'exit_code'>>('SELECT state, attempts, exit_code FROM containers WHERE uuid = ?'),
      live: db.prepare<[], Row>(liveSql),
      list: db.prepare<Params, Row>(`
        SELECT * FROM containers
        WHERE @states IS NULL OR state IN (SELECT value FROM json_each(@states))
        ORDER BY submitted_at DESC, uuid DESC
        LIMIT @limit`),
      lock: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'locked', instance_id = @instanceId, instance_type = @instanceType, updated_at = @now
        WHERE uuid = @uuid AND state = 'queued'
        RETURNING ${scalarColumns}`),
      unlock: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'queued', instance_id = NULL, instance_type = NULL, reason = @reason, updated_at = @now
        WHERE uuid = @uuid AND state = 'locked'
        RETURNING ${scalarColumns}`),
      markRunning: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'running', attempts = attempts + 1, instance_id = @instanceId,
          instance_type = @instanceType, started_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state = 'locked'
        RETURNING ${scalarColumns}`),
      // SET expressions read the row as it was: a locked container's start is counted here.
      complete: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'complete', exit_code = @exitCode, log_tail = @logTail,
          attempts = attempts + (state = 'locked'), started_at = coalesce(started_at, @now),
          finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('running', 'locked')
        RETURNING ${scalarColumns}`),
      // A container still locked on the instance it exited on is marked running with the code:
      // its start is counted as markRunning would. A cancelled one stays cancelled.
      recordExit: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = CASE state WHEN 'locked' THEN 'running' ELSE state END,
          attempts = attempts + (state = 'locked'), started_at = CASE state WHEN 'locked' THEN @now ELSE started_at END,
          exit_code = @exitCode, updated_at = @now
        WHERE uuid = @uuid AND (state = 'running' OR (state = 'locked' AND instance_id = @instanceId)
          OR (state = 'cancelled' AND exit_code IS NULL))
        RETURNING ${scalarColumns}`),
      completeLost: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'complete', reason = @reason, finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state = 'running' AND exit_code IS NOT NULL
        RETURNING ${scalarColumns}`),
      setLogTail: db.prepare<Params, Scalars>(`
        UPDATE containers SET log_tail = @logTail, updated_at = @now
        WHERE uuid = @uuid AND state IN ('complete', 'failed', 'cancelled')
        RETURNING ${scalarColumns}`),
      requeue: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'queued', instance_id = NULL, instance_type = NULL, started_at = NULL,
          reason = @reason, updated_at = @now
        WHERE uuid = @uuid AND state IN ('running', 'locked')
        RETURNING ${scalarColumns}`),
      failLost: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'failed', reason = @reason, finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('running', 'locked')
        RETURNING ${scalarColumns}`),
      fail: db.prepare<Params, Scalars>(`
        UPDATE containers SET state = 'failed', reason = @reason, log_tail = coalesce(@logTail, log_tail),
          finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('queued', 'locked', 'running')
        RETURNING ${scalarColumns}`),
      cancel: db.prepare<Params, Row>(`
        UPDATE containers SET state = 'cancelled', reason = 'cancelled by user', finished_at = @now, updated_at = @now
        WHERE uuid = @uuid AND state IN ('queued', 'locked', 'running')
        RETURNING *`),
      launchConfigStates: db.prepare<[], { id: string; state: LaunchConfigAdminState }>('SELECT id, state FROM launch_config_states ORDER BY id'),
      saveLaunchConfigState: db.prepare<Params>(`
        INSERT INTO launch_config_states (id, state, changed_at) VALUES (@id, @state, @now)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at`),
    };
    this.updateAlone = db.transaction((uuid: string, action: string, statement: Update, params: Params) => this.update(uuid, action, statement, params)).immediate;
    let loaded: Readonly<Container>[];
    try {
      loaded = this.statements.live.all().map((row) => freeze(fromRow(row)));
    } catch (err) {
      this.db.close();
      throw openRefusal(options.path, err);
    }
    for (const container of loaded) {
      this.live.set(container.uuid, container);
      this.index(container);
    }
    this.order = new ScheduleOrder(loaded);
  }

  submit(spec: ContainerSpec): Readonly<Container> {
    const valid = validateSpec(spec);
    const container = this.change(() => this.insert(valid));
    this.remember(container);
    this.committed();
    return container;
  }

  /** submit() of every spec in one transaction, for bulk loads: all are valid and queued, or none. */
  submitMany(specs: readonly ContainerSpec[]): Readonly<Container>[] {
    const valid = specs.map(validateSpec);
    const containers = this.transact(() => valid.map((spec) => this.insert(spec)));
    for (const container of containers) this.remember(container);
    if (containers.length > 0) this.committed();
    return containers;
  }

  get(uuid: string): Readonly<Container> | undefined {
    this.assertOpen();
    const live = this.live.get(uuid);
    if (live !== undefined) return live;
    const row = this.read(() => this.statements.get.get(uuid));
    return row === undefined ? undefined : fromRow(row);
  }

  list(filter: { states?: ContainerState[]; limit?: number } = {}): Container[] {
    const { states, limit } = filter;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
      throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
    }
    const filterParams = { states: states === undefined ? null : JSON.stringify(states), limit: limit ?? -1 };
    return this.read(() => this.statements.list.all(filterParams)).map(fromRow);
  }

  pending(): readonly Readonly<Container>[] {
    this.assertOpen();
    return this.order.containers();
  }

  liveOn(instanceId: string): readonly Readonly<Container>[] {
    this.assertOpen();
    const containers = this.byInstance.get(instanceId);
    return Object.freeze(containers === undefined ? [] : [...containers.values()].sort(compare));
  }

  lock(uuid: string, instanceId: string, instanceType: string): boolean {
    return this.lockMany([{ uuid, instanceId, instanceType }]).length > 0;
  }

  lockMany(requests: ReadonlyArray<LockRequest>): string[] {
    const now = this.clock.now();
    const locked = this.transact(() => {
      const rows: Scalars[] = [];
      for (const { uuid, instanceId, instanceType } of requests) {
        const row = this.statements.lock.get({ uuid, instanceId, instanceType, now });
        // Not queued is an answer; an unknown uuid is a caller's bug, and rolls back the rest.
        if (row === undefined) this.status(uuid);
        else rows.push(row);
      }
      return rows;
    });
    for (const row of locked) this.applied(row);
    if (locked.length > 0) this.committed();
    return locked.map((row) => row.uuid);
  }

  unlock(uuid: string, reason: string): void {
    this.mutate(uuid, 'unlock', this.statements.unlock, { reason });
  }

  markRunning(uuid: string, instanceId: string, instanceType: string): void {
    this.mutate(uuid, 'mark running', this.statements.markRunning, { instanceId, instanceType });
  }

  complete(uuid: string, exitCode: number, logTail: string): void {
    if (!Number.isSafeInteger(exitCode)) throw new RangeError(`exit code must be an integer, got ${exitCode}`);
    this.mutate(uuid, 'complete', this.statements.complete, { exitCode, logTail: truncateLogTail(logTail, this.logTailBytes) });
  }

  recordExit(uuid: string, exitCode: number, instanceId?: string): void {
    if (!Number.isSafeInteger(exitCode)) throw new RangeError(`exit code must be an integer, got ${exitCode}`);
    this.mutate(uuid, 'record exit', this.statements.recordExit, { exitCode, instanceId: instanceId ?? null });
  }

  setLogTail(uuid: string, logTail: string): void {
    this.mutate(uuid, 'set log tail', this.statements.setLogTail, { logTail: truncateLogTail(logTail, this.logTailBytes) });
  }

  requeueOrFail(uuid: string, reason: string): ContainerState {
    const row = this.transact(() => {
      const { state, attempts, exit_code: exitCode } = this.status(uuid);
      if (state !== 'running' && state !== 'locked') throw new ContainerStateError(uuid, state, 'requeue');
      if (state === 'running' && exitCode !== null) {
        return this.update(uuid, 'complete', this.statements.completeLost, {
          reason: `exited with ${exitCode}; its output was not collected: ${reason}`,
        });
      }
      if (attempts < this.maxAttempts) return this.update(uuid, 'requeue', this.statements.requeue, { reason });
      const times = attempts === 1 ? 'time' : 'times';
      return this.update(uuid, 'fail', this.statements.failLost, {
        reason: `lost ${attempts} ${times} (maxAttempts ${this.maxAttempts}); last: ${reason}`,
      });
    });
    this.applied(row);
    this.committed();
    return row.state;
  }

  fail(uuid: string, reason: string, logTail?: string): void {
    this.mutate(uuid, 'fail', this.statements.fail, {
      reason,
      logTail: logTail === undefined ? null : truncateLogTail(logTail, this.logTailBytes),
    });
  }

  cancel(uuid: string): Container {
    const { row, changed } = this.transact(() => {
      const cancelled = this.statements.cancel.get({ uuid, now: this.clock.now() });
      if (cancelled !== undefined) return { row: cancelled, changed: true };
      const row = this.statements.get.get(uuid);
      if (row === undefined) throw new ContainerNotFoundError(uuid);
      return { row, changed: false };
    });
    if (changed) {
      this.applied(row);
      this.committed();
    }
    return fromRow(row);
  }

  /** The launch configs' saved states (LaunchConfigStateStore), by id; a config never saved is not in it. */
  load(): ReadonlyMap<string, LaunchConfigAdminState> {
    this.assertOpen();
    const rows = this.read(() => this.statements.launchConfigStates.all());
    return new Map(rows.map((row) => [row.id, row.state]));
  }

  /**
   * Saves an operator's choice for a launch config, replacing the one saved before. A write the
   * file refuses throws QueueUnavailableError, as every change of the queue does, and counts
   * towards its health the same way; the subscribers hear nothing, since no container changed.
   */
  save(id: string, state: LaunchConfigAdminState): void {
    this.assertOpen();
    if (typeof id !== 'string' || id === '') throw new RangeError(`a launch config id must be a non-empty string, got ${JSON.stringify(id)}`);
    if (!launchConfigAdminStates.has(state)) {
      throw new RangeError(`a launch config's saved state must be active, paused or archived, got ${JSON.stringify(state)}`);
    }
    this.change(() => this.statements.saveLaunchConfigState.run({ id, state, now: this.clock.now() }));
    this.tookWrite();
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

  /** Healthy unless the last change the file refused (disk full, read-only, I/O error) has had no successful one after it, or corruption was found. */
  health(): QueueHealth {
    if (this.problem === null) return { ok: true };
    const consequence =
      this.problem.kind === 'corrupt' ? 'nothing more is written to it' : 'containers cannot be submitted or change state until a write succeeds';
    return { ok: false, error: `queue file ${this.path}: ${this.problem.text}; ${consequence}; ${this.problem.fix}` };
  }

  // Writes a new container; memory is the caller's to update once the write has committed.
  private insert(spec: ContainerSpec): Readonly<Container> {
    const now = this.clock.now();
    const row: Scalars = {
      uuid: randomUUID(),
      state: 'queued',
      image: spec.image,
      priority: spec.priority,
      attempts: 0,
      exit_code: null,
      instance_id: null,
      instance_type: null,
      log_tail: '',
      reason: null,
      submitted_at: now,
      started_at: null,
      finished_at: null,
      updated_at: now,
    };
    this.statements.insert.run({
      ...row,
      command: JSON.stringify(spec.command),
      env: JSON.stringify(spec.env),
      constraints: JSON.stringify(spec.constraints),
    });
    return freeze(fromScalars(row, spec));
  }

  private mutate(uuid: string, action: string, statement: Update, params: Params): void {
    const row = this.change(() => this.updateAlone(uuid, action, statement, params));
    this.applied(row);
    this.committed();
  }

  // Every change to the file goes through here, and memory follows only once it has returned, so
  // a change the file refuses leaves memory as the file is. A storage failure becomes a
  // QueueUnavailableError and makes the queue unhealthy until a change commits; corruption
  // makes it unhealthy for good, and the file is not written again.
  private change<T>(write: () => T): T {
    if (this.problem?.kind === 'corrupt') throw new QueueUnavailableError(this.path, this.problem);
    try {
      return write();
    } catch (err) {
      throw this.refused(err, true);
    }
  }

  // change() of an immediate transaction.
  private transact<T>(body: () => T): T {
    return this.change(() => this.db.transaction(body).immediate());
  }

  // Reads change no health, unless they find the file corrupt.
  private read<T>(query: () => T): T {
    try {
      return query();
    } catch (err) {
      throw this.refused(err, false);
    }
  }

  // A storage failure is logged when it begins, not at every refused write; corruption, once found, stays.
  private refused(err: unknown, writing: boolean): unknown {
    const problem = storageProblem(err);
    if (problem === undefined) return err;
    const counts = writing || problem.kind === 'corrupt';
    if (counts && this.problem?.kind !== 'corrupt' && this.problem?.text !== problem.text) {
      this.problem = problem;
      const message = problem.kind === 'corrupt' ? 'queue file is corrupt; nothing more is written to it' : 'queue file refuses changes';
      this.logger?.error({ queuePath: this.path, problem: problem.text }, message);
    }
    return new QueueUnavailableError(this.path, problem, { cause: err });
  }

  // A change committed: the file takes writes again. Then the subscribers hear of it.
  private committed(): void {
    this.tookWrite();
    this.notifier.notify();
  }

  // A write committed, so a refusal before it (disk full, read-only, I/O error) is over; corruption stays.
  private tookWrite(): void {
    if (this.problem !== null && this.problem.kind !== 'corrupt') {
      this.logger?.info({ queuePath: this.path, problem: this.problem.text }, 'queue file takes changes again');
      this.problem = null;
    }
  }

  // Runs a guarded UPDATE in the caller's transaction; when it touched nothing, tells "unknown
  // uuid" from "wrong state".
  private update(uuid: string, action: string, statement: Update, params: Params): Scalars {
    const row = statement.get({ ...params, uuid, now: this.clock.now() });
    if (row === undefined) throw new ContainerStateError(uuid, this.status(uuid).state, action);
    return row;
  }

  private status(uuid: string): Pick<Row, 'state' | 'attempts' | 'exit_code'> {
    const status = this.statements.status.get(uuid);
    if (status === undefined) throw new ContainerNotFoundError(uuid);
    return status;
  }

  // Takes a committed change into memory. The spec fields never change, so a live container
  // keeps its frozen command, env and constraints.
  private applied(row: Scalars): void {
    if (finalStates.has(row.state)) {
      this.forget(row.uuid);
      return;
    }
    const spec = this.live.get(row.uuid) ?? this.reread(row.uuid);
    this.remember(freeze(fromScalars(row, spec)));
  }

  // Only reached if memory had lost a live container; the file is the truth.
  private reread(uuid: string): ContainerSpec {
    const row = this.statements.get.get(uuid);
    if (row === undefined) throw new ContainerNotFoundError(uuid);
    return fromRow(row);
  }

  private remember(next: Readonly<Container>): void {
    const previous = this.live.get(next.uuid);
    if (previous !== undefined) this.unindex(previous);
    this.live.set(next.uuid, next);
    this.index(next);
    this.order.change(next.uuid, previous, next);
  }

  private forget(uuid: string): void {
    const previous = this.live.get(uuid);
    if (previous === undefined) return;
    this.unindex(previous);
    this.live.delete(uuid);
    this.order.change(uuid, previous, undefined);
  }

  private index(container: Readonly<Container>): void {
    // A queued container has no instance; one that had (requeued) is no instance's business.
    if (container.state === 'queued' || container.instanceId === null) return;
    let containers = this.byInstance.get(container.instanceId);
    if (containers === undefined) this.byInstance.set(container.instanceId, (containers = new Map()));
    containers.set(container.uuid, container);
  }

  private unindex(container: Readonly<Container>): void {
    if (container.instanceId === null) return;
    const containers = this.byInstance.get(container.instanceId);
    containers?.delete(container.uuid);
    if (containers?.size === 0) this.byInstance.delete(container.instanceId);
  }

  private assertOpen(): void {
    if (!this.db.open) throw new QueueClosedError();
  }

  private migrate(): void {
    this.db
      .transaction(() => {
        const version = this.db.pragma('user_version', { simple: true }) as number;
        if (version > schemaVersion) {
          throw new QueueStorageError(
            this.path,
            `queue database schema version ${version} is newer than this Drover understands (${schemaVersion}); run a newer Drover`,
          );
        }
        this.db.exec(schema);
        // Written even when unchanged: a file that takes no writes (read-only) stops start-up here,
        // not at the first submit.
        this.db.pragma(`user_version = ${schemaVersion}`);
      })
      .immediate();
  }
}

/**
 * `text` as stored: at most the last `limit` bytes of it in UTF-8, starting on a character
 * boundary, after a logTailMarker line saying how much was dropped. A marker `text` already starts
 * with (the runner's) is not counted in `limit`; if more is cut, the new marker keeps its total.
 */
export function truncateLogTail(text: string, limit: number = logTailBytes): string {
  const marker = logTailMarkerPattern.exec(text);
  const body = marker ? text.slice(marker[0].length) : text;
  // At most 3 UTF-8 bytes per UTF-16 unit: most texts need no encoding.
  if (body.length * 3 <= limit) return text;
  const bytes = Buffer.from(body, 'utf8');
  if (bytes.length <= limit) return text;
  let start = bytes.length - limit;
  // Skip continuation bytes (10xxxxxx) so the tail does not start with half a character.
  while (start < bytes.length && ((bytes[start] ?? 0) & 0xc0) === 0x80) start++;
  const kept = bytes.length - start;
  const total = Math.max(marker ? Number(marker[1]) : 0, bytes.length);
  return logTailMarker(total, kept) + bytes.subarray(start).toString('utf8');
}

function fromRow(row: Row): Container {
  return fromScalars(row, {
    command: JSON.parse(row.command) as string[],
    env: JSON.parse(row.env) as Record<string, string>,
    constraints: JSON.parse(row.constraints) as Constraints,
  });
}

function fromScalars(row: Scalars, spec: Pick<ContainerSpec, 'command' | 'env' | 'constraints'>): Container {
  return {
    uuid: row.uuid,
    state: row.state,
    image: row.image,
    command: spec.command,
    env: spec.env,
    constraints: spec.constraints,
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

// Deep, as far as a container goes: its arrays and records are shared with whoever reads it next.
function freeze(container: Container): Readonly<Container> {
  Object.freeze(container.command);
  Object.freeze(container.env);
  Object.freeze(container.constraints);
  return Object.freeze(container);
}

/** Scheduling order: running and locked first, then priority descending, then submit time, then
 * uuid (as SQLite's BINARY collation orders these ASCII strings). */
function compare(a: Readonly<Container>, b: Readonly<Container>): number {
  return (
    rank(a) - rank(b) ||
    b.priority - a.priority ||
    a.submittedAt - b.submittedAt ||
    (a.uuid < b.uuid ? -1 : a.uuid > b.uuid ? 1 : 0)
  );
}

function rank(container: Readonly<Container>): number {
  return container.state === 'queued' ? 1 : 0;
}

/** First index in [from, items.length) whose item does not sort before `container`. */
function lowerBound(items: readonly Readonly<Container>[], container: Readonly<Container>, from: number): number {
  let low = from;
  let high = items.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (compare(items[mid] as Readonly<Container>, container) < 0) low = mid + 1;
    else high = mid;
  }
  return low;
}

/**
 * The live containers in scheduling order, as one frozen array that callers share. Changes are
 * noted, not applied; the first read after them merges them in with one copy and a binary search
 * per change, so a pass that changed k of n containers costs O(n + k log n), not a sort.
 */
class ScheduleOrder {
  private items: readonly Readonly<Container>[];
  // Per container changed since `items` was built: the version `items` holds and the one it should.
  private readonly changes = new Map<string, { was: Readonly<Container> | undefined; now: Readonly<Container> | undefined }>();

  constructor(containers: Readonly<Container>[]) {
    // The database reads them in this order already; the check costs a pass, a sort would cost more.
    if (containers.some((container, i) => i > 0 && compare(containers[i - 1] as Readonly<Container>, container) > 0)) {
      containers.sort(compare);
    }
    this.items = Object.freeze(containers);
  }

  /** `was` is the live version before this change, undefined if it was not live. */
  change(uuid: string, was: Readonly<Container> | undefined, now: Readonly<Container> | undefined): void {
    const change = this.changes.get(uuid);
    // The first change since the last read keeps `was`: that is the version `items` holds.
    if (change === undefined) this.changes.set(uuid, { was, now });
    // One that came and went between reads leaves nothing to merge, however long reads wait.
    else if (change.was === undefined && now === undefined) this.changes.delete(uuid);
    else change.now = now;
  }

  containers(): readonly Readonly<Container>[] {
    if (this.changes.size === 0) return this.items;
    const edits: Array<{ container: Readonly<Container>; remove: boolean }> = [];
    for (const { was, now } of this.changes.values()) {
      if (was !== undefined) edits.push({ container: was, remove: true });
      if (now !== undefined) edits.push({ container: now, remove: false });
    }
    this.changes.clear();
    edits.sort((a, b) => compare(a.container, b.container));

    const items = this.items;
    const removed = edits.reduce((n, edit) => n + (edit.remove ? 1 : 0), 0);
    // Preallocated: filling by index copies about twice as fast as push.
    const merged = new Array<Readonly<Container>>(items.length + edits.length - 2 * removed);
    let from = 0;
    let to = 0;
    for (const { container, remove } of edits) {
      const at = lowerBound(items, container, from);
      while (from < at) merged[to++] = items[from++] as Readonly<Container>;
      // A removed version is in `items`, at exactly the place its key sorts to.
      if (remove) from++;
      else merged[to++] = container;
    }
    while (from < items.length) merged[to++] = items[from++] as Readonly<Container>;
    this.items = Object.freeze(merged);
    return this.items;
  }
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

/** Opens the queue's database: a new file is created 0600 in a 0700 directory first; the in-memory path makes none. */
function openDatabase(path: string): Database.Database {
  // The replay simulator's queue: nothing to keep, so no file.
  if (path === inMemoryQueuePath) return new Database(':memory:');
  makePrivateDirectory(dirname(path));
  try {
    const fd = openSync(path, 'wx', 0o600);
    try {
      fchmodSync(fd, 0o600);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return new Database(path);
}
