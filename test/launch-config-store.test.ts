// The queue as the pool's LaunchConfigStateStore: operators' pauses and archives kept in the queue's
// own SQLite file across restarts, and a save the file refuses failing as every queue write does.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LaunchConfigAdminState } from '../src/config/launch-configs.js';
import type { LaunchConfigStateStore } from '../src/pool/launch-config-view.js';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import { QueueUnavailableError } from '../src/queue/storage.js';
import type { ContainerSpec } from '../src/queue/types.js';

let dir: string;
let path: string;
let now: number;
const opened: SqliteQueue[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'drover-launch-config-store-'));
  path = join(dir, 'queue.sqlite');
  now = 1_700_000_000_000;
});

afterEach(() => {
  for (const queue of opened.splice(0)) queue.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(): SqliteQueue {
  const queue = new SqliteQueue({ path, maxAttempts: 3, clock: { now: () => now, setTimeout: () => 0, clearTimeout: () => undefined } });
  opened.push(queue);
  return queue;
}

function rows(): Array<{ id: string; state: string; changed_at: number }> {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare<[], { id: string; state: string; changed_at: number }>('SELECT id, state, changed_at FROM launch_config_states ORDER BY id').all();
  } finally {
    db.close();
  }
}

const spec: ContainerSpec = {
  image: null,
  command: ['true'],
  env: {},
  constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
  priority: 0,
};

describe('the queue as the launch config state store', () => {
  it('loads nothing from a new file', () => {
    const store: LaunchConfigStateStore = open();
    expect(store.load()).toEqual(new Map());
  });

  it('keeps saved states across close and reopen, the last save of an id winning', () => {
    const first = open();
    first.save('small-aaaa', 'paused');
    first.save('large-bbbb', 'archived');
    now += 1_000;
    first.save('small-aaaa', 'active');
    first.save('small-cccc', 'paused');
    expect(first.load()).toEqual(
      new Map<string, LaunchConfigAdminState>([
        ['large-bbbb', 'archived'],
        ['small-aaaa', 'active'],
        ['small-cccc', 'paused'],
      ]),
    );
    first.close();

    const second = open();
    expect(second.load()).toEqual(
      new Map<string, LaunchConfigAdminState>([
        ['large-bbbb', 'archived'],
        ['small-aaaa', 'active'],
        ['small-cccc', 'paused'],
      ]),
    );
    second.close();
    // One row per id, stamped with the clock at its last save.
    expect(rows()).toEqual([
      { id: 'large-bbbb', state: 'archived', changed_at: 1_700_000_000_000 },
      { id: 'small-aaaa', state: 'active', changed_at: 1_700_000_001_000 },
      { id: 'small-cccc', state: 'paused', changed_at: 1_700_000_001_000 },
    ]);
  });

  it('keeps the containers and the states apart: saving changes no container (no subscriber hears of it), and neither is lost on reopen', async () => {
    const first = open();
    let notified = 0;
    first.subscribe(() => notified++);
    const container = first.submit(spec);
    await Promise.resolve();
    expect(notified).toBe(1);
    first.save('small-aaaa', 'paused');
    await Promise.resolve();
    expect(notified).toBe(1);
    first.close();
    const second = open();
    expect(second.get(container.uuid)).toEqual(container);
    expect(second.load().get('small-aaaa')).toBe('paused');
  });

  it("adds the table to a queue file made before launch configs, keeping its containers and its schema version", () => {
    const first = open();
    const container = first.submit(spec);
    first.close();
    const db = new Database(path);
    db.exec('DROP TABLE launch_config_states');
    db.close();

    const second = open();
    expect(second.load()).toEqual(new Map());
    second.save('small-aaaa', 'archived');
    expect(second.get(container.uuid)?.uuid).toBe(container.uuid);
    second.close();
    expect(rows()).toEqual([{ id: 'small-aaaa', state: 'archived', changed_at: now }]);
    const check = new Database(path, { readonly: true });
    try {
      expect(check.pragma('user_version', { simple: true })).toBe(1);
    } finally {
      check.close();
    }
  });

  it("refuses to save `broken` (the pool's own verdict), another word or an empty id, writing nothing", () => {
    const queue = open();
    expect(() => queue.save('small-aaaa', 'broken' as LaunchConfigAdminState)).toThrow(RangeError);
    expect(() => queue.save('small-aaaa', 'deleted' as LaunchConfigAdminState)).toThrow(/active, paused or archived, got "deleted"/);
    expect(() => queue.save('', 'paused')).toThrow(RangeError);
    expect(queue.load()).toEqual(new Map());
    expect(rows()).toEqual([]);
  });

  it('a save the file refuses (disk full) throws QueueUnavailableError, keeps the old state and makes the queue unhealthy until a write commits', () => {
    const queue = open();
    queue.save('small-aaaa', 'paused');
    // As test/queue-storage.test.ts fills the disk: the file pinned at its page count, and every
    // write of a state also writing ballast that needs new pages.
    const db = queue['db'];
    db.exec(`
      CREATE TABLE ballast (b BLOB);
      CREATE TEMP TRIGGER full_on_state_insert AFTER INSERT ON main.launch_config_states BEGIN INSERT INTO ballast VALUES (zeroblob(8192)); END;
      CREATE TEMP TRIGGER full_on_state_update AFTER UPDATE ON main.launch_config_states BEGIN INSERT INTO ballast VALUES (zeroblob(8192)); END;`);
    db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);

    let error: unknown;
    try {
      queue.save('small-aaaa', 'archived');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(QueueUnavailableError);
    expect((error as QueueUnavailableError).problem.kind).toBe('full');
    expect(() => queue.save('small-bbbb', 'paused')).toThrow(QueueUnavailableError);
    expect(queue.load()).toEqual(new Map([['small-aaaa', 'paused']]));
    expect(queue.health()).toEqual({ ok: false, error: expect.stringContaining('the disk is full') });

    db.pragma('max_page_count = 4294967294');
    queue.save('small-aaaa', 'archived');
    expect(queue.health()).toEqual({ ok: true });
    queue.close();
    expect(rows()).toEqual([{ id: 'small-aaaa', state: 'archived', changed_at: now }]);
  });

  it('a closed queue neither loads nor saves', () => {
    const queue = open();
    queue.close();
    expect(() => queue.load()).toThrow(/closed/);
    expect(() => queue.save('small-aaaa', 'paused')).toThrow(/closed/);
  });
});
