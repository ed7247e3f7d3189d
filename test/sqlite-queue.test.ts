// Tests of the SQLite queue on a real file: fields, order, every state transition, reopening, notifications, validation.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { InvalidContainerSpecError, QueueClosedError, SqliteQueue, truncateLogTail } from '../src/queue/sqlite-queue.js';
import {
  ContainerNotFoundError,
  ContainerStateError,
  logTailBytes,
  logTailMarker,
  type Container,
  type ContainerSpec,
  type ContainerState,
} from '../src/queue/types.js';

let dir: string;
let path: string;
let t: number;
const clock: Clock = { now: () => t, setTimeout, clearTimeout };
const opened: SqliteQueue[] = [];

function open(maxAttempts = 3, tailBytes?: number): SqliteQueue {
  const queue = new SqliteQueue({ path, maxAttempts, clock, logTailBytes: tailBytes });
  opened.push(queue);
  return queue;
}

function spec(overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    image: 'alpine:3',
    command: ['echo', 'hi'],
    env: {},
    constraints: { vcpus: 1, ramMiB: 512, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
    ...overrides,
  };
}

// Lets queued microtasks (the queue's notifications) run.
async function tick(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'drover-queue-'));
  // A subdirectory that does not exist yet: the queue must create it.
  path = join(dir, 'state', 'queue.db');
  t = 1_000;
});

afterEach(() => {
  for (const queue of opened.splice(0)) queue.close();
  rmSync(dir, { recursive: true, force: true });
});

// Puts a fresh container into `state` by allowed transitions only.
function inState(queue: SqliteQueue, state: ContainerState): string {
  const { uuid } = queue.submit(spec());
  if (state === 'queued') return uuid;
  if (state === 'cancelled') {
    queue.cancel(uuid);
    return uuid;
  }
  if (state === 'failed') {
    queue.fail(uuid, 'broken');
    return uuid;
  }
  queue.lock(uuid, 'i-1', 'small');
  if (state === 'locked') return uuid;
  queue.markRunning(uuid, 'i-1', 'small');
  if (state === 'running') return uuid;
  queue.complete(uuid, 0, '');
  return uuid;
}

const allStates: ContainerState[] = ['queued', 'locked', 'running', 'complete', 'failed', 'cancelled'];

describe('submit and get', () => {
  it('round-trips every field', () => {
    const queue = open();
    const submitted = queue.submit({
      image: 'registry.example/tool:1.2',
      command: ['sh', '-c', 'echo "ünïcode" && exit 3'],
      env: { FOO: 'bar', _X1: '' },
      constraints: { vcpus: 4, ramMiB: 8192, scratchGiB: 50, gpus: 1, preemptible: true },
      priority: -7,
    });
    const expected: Container = {
      uuid: submitted.uuid,
      state: 'queued',
      image: 'registry.example/tool:1.2',
      command: ['sh', '-c', 'echo "ünïcode" && exit 3'],
      env: { FOO: 'bar', _X1: '' },
      constraints: { vcpus: 4, ramMiB: 8192, scratchGiB: 50, gpus: 1, preemptible: true },
      priority: -7,
      attempts: 0,
      exitCode: null,
      instanceId: null,
      instanceType: null,
      logTail: '',
      reason: null,
      submittedAt: 1_000,
      startedAt: null,
      finishedAt: null,
      updatedAt: 1_000,
    };
    expect(submitted).toEqual(expected);
    expect(queue.get(submitted.uuid)).toEqual(expected);
    expect(submitted.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('keeps a null image and the fields a running, then complete, container gains', () => {
    const queue = open();
    const { uuid } = queue.submit(spec({ image: null }));
    t = 2_000;
    queue.lock(uuid, 'i-1', 'small');
    t = 3_000;
    queue.markRunning(uuid, 'i-123', 'small');
    expect(queue.get(uuid)).toMatchObject({
      image: null,
      state: 'running',
      attempts: 1,
      instanceId: 'i-123',
      instanceType: 'small',
      startedAt: 3_000,
      updatedAt: 3_000,
      finishedAt: null,
    });
    t = 4_000;
    queue.complete(uuid, 0, 'done\n');
    expect(queue.get(uuid)).toMatchObject({
      state: 'complete',
      exitCode: 0,
      logTail: 'done\n',
      instanceId: 'i-123',
      startedAt: 3_000,
      finishedAt: 4_000,
      updatedAt: 4_000,
    });
  });

  it('gives every container its own uuid and returns undefined for an unknown one', () => {
    const queue = open();
    const uuids = new Set(Array.from({ length: 20 }, () => queue.submit(spec()).uuid));
    expect(uuids.size).toBe(20);
    expect(queue.get('00000000-0000-4000-8000-000000000000')).toBeUndefined();
  });
});

describe('pending and list', () => {
  it('orders running and locked first, then priority descending, then submit time', () => {
    const queue = open();
    const submit = (name: string, priority: number) => {
      t += 10;
      return { name, uuid: queue.submit(spec({ priority, command: [name] })).uuid };
    };
    const oldLow = submit('oldLow', 0);
    const firstHigh = submit('firstHigh', 5);
    const runningLow = submit('runningLow', -1);
    const laterHigh = submit('laterHigh', 5);
    const lockedHigh = submit('lockedHigh', 9);
    const finished = submit('finished', 100);
    const newLow = submit('newLow', 0);
    // Submitted last but stamped between firstHigh and laterHigh: submit time decides, not insertion order.
    t = 1_015;
    const stepped = submit('stepped', 5);

    queue.lock(runningLow.uuid, 'i-1', 'small');
    queue.markRunning(runningLow.uuid, 'i-1', 'small');
    queue.lock(lockedHigh.uuid, 'i-1', 'small');
    queue.cancel(finished.uuid);

    const names = new Map([oldLow, firstHigh, runningLow, laterHigh, lockedHigh, newLow, stepped].map((c) => [c.uuid, c.name]));
    expect(queue.pending().map((c) => names.get(c.uuid))).toEqual([
      'lockedHigh',
      'runningLow',
      'firstHigh',
      'stepped',
      'laterHigh',
      'oldLow',
      'newLow',
    ]);
  });

  it('breaks a tie on priority and submit time by uuid', () => {
    const queue = open();
    const uuids = Array.from({ length: 10 }, () => queue.submit(spec()).uuid);
    expect(queue.pending().map((c) => c.uuid)).toEqual([...uuids].sort());
  });

  it('lists newest first, filtered by state and limited', () => {
    const queue = open();
    const uuids: string[] = [];
    for (let i = 0; i < 5; i++) {
      t += 1;
      uuids.push(queue.submit(spec()).uuid);
    }
    const [a, b, c, d, e] = uuids as [string, string, string, string, string];
    queue.cancel(b);
    queue.lock(d, 'i-1', 'small');
    expect(queue.list().map((x) => x.uuid)).toEqual([e, d, c, b, a]);
    expect(queue.list({ limit: 2 }).map((x) => x.uuid)).toEqual([e, d]);
    expect(queue.list({ states: ['queued'] }).map((x) => x.uuid)).toEqual([e, c, a]);
    expect(queue.list({ states: ['cancelled', 'locked'] }).map((x) => x.uuid)).toEqual([d, b]);
    expect(queue.list({ states: ['queued'], limit: 1 }).map((x) => x.uuid)).toEqual([e]);
    expect(queue.list({ states: [] })).toEqual([]);
    expect(queue.list({ limit: 0 })).toEqual([]);
  });

  it('refuses a negative or fractional limit rather than ignoring it', () => {
    const queue = open();
    queue.submit(spec());
    expect(() => queue.list({ limit: -1 })).toThrow(/limit/);
    expect(() => queue.list({ limit: 1.5 })).toThrow(/limit/);
  });
});

describe('transitions', () => {
  type Action = (queue: SqliteQueue, uuid: string) => unknown;
  const actions: Record<string, { action: Action; from: ContainerState[]; to: ContainerState }> = {
    unlock: { action: (q, u) => q.unlock(u, 'no capacity'), from: ['locked'], to: 'queued' },
    markRunning: { action: (q, u) => q.markRunning(u, 'i-9', 'large'), from: ['locked'], to: 'running' },
    complete: { action: (q, u) => q.complete(u, 1, 'tail'), from: ['running', 'locked'], to: 'complete' },
    requeueOrFail: { action: (q, u) => q.requeueOrFail(u, 'instance lost'), from: ['running', 'locked'], to: 'queued' },
    fail: { action: (q, u) => q.fail(u, 'no type fits'), from: ['queued', 'locked', 'running'], to: 'failed' },
  };

  for (const [name, { action, from, to }] of Object.entries(actions)) {
    for (const state of allStates) {
      if (from.includes(state)) {
        it(`${name}: ${state} → ${to}`, () => {
          const queue = open();
          const uuid = inState(queue, state);
          t = 50_000;
          action(queue, uuid);
          expect(queue.get(uuid)).toMatchObject({ state: to, updatedAt: 50_000 });
        });
      } else {
        it(`${name}: refused from ${state}`, () => {
          const queue = open();
          const uuid = inState(queue, state);
          const before = queue.get(uuid);
          t = 50_000;
          let error: unknown;
          try {
            action(queue, uuid);
          } catch (err) {
            error = err;
          }
          expect(error).toBeInstanceOf(ContainerStateError);
          expect(error).toMatchObject({ uuid, from: state });
          expect(queue.get(uuid)).toEqual(before);
        });
      }
    }
  }

  it('lock: queued → locked, false from any other state', () => {
    const queue = open();
    for (const state of allStates) {
      const uuid = inState(queue, state);
      const before = queue.get(uuid);
      t += 1;
      expect(queue.lock(uuid, 'i-1', 'small'), state).toBe(state === 'queued');
      if (state === 'queued') expect(queue.get(uuid)).toMatchObject({ state: 'locked', updatedAt: t });
      else expect(queue.get(uuid)).toEqual(before);
    }
  });

  it('lock returns false on a container cancelled meanwhile', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.cancel(uuid);
    expect(queue.lock(uuid, 'i-1', 'small')).toBe(false);
    expect(queue.get(uuid)?.state).toBe('cancelled');
  });

  it('throws ContainerNotFoundError for an unknown uuid from every mutation', () => {
    const queue = open();
    const unknown = 'no-such-uuid';
    const calls: Array<() => unknown> = [
      () => queue.lock(unknown, 'i-1', 'small'),
      () => queue.unlock(unknown, 'r'),
      () => queue.markRunning(unknown, 'i', 't'),
      () => queue.complete(unknown, 0, ''),
      () => queue.requeueOrFail(unknown, 'r'),
      () => queue.fail(unknown, 'r'),
      () => queue.cancel(unknown),
      () => queue.lockMany([{ uuid: unknown, instanceId: 'i', instanceType: 't' }]),
      () => queue.setLogTail(unknown, 'tail'),
    ];
    for (const call of calls) expect(call).toThrow(ContainerNotFoundError);
  });

  it('unlock stores the reason and leaves attempts alone', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.unlock(uuid, 'quota exceeded');
    expect(queue.get(uuid)).toMatchObject({ state: 'queued', reason: 'quota exceeded', attempts: 0 });
  });

  it('fail stores the reason, the truncated log tail if given, and finishedAt', () => {
    const queue = open();
    const a = inState(queue, 'running');
    const b = inState(queue, 'queued');
    t = 9_000;
    queue.fail(a, 'runner crashed', 'x'.repeat(logTailBytes + 10));
    queue.fail(b, 'no instance type has 64 vCPUs');
    expect(queue.get(a)).toMatchObject({ state: 'failed', reason: 'runner crashed', finishedAt: 9_000 });
    expect(queue.get(a)?.logTail).toBe(logTailMarker(logTailBytes + 10, logTailBytes) + 'x'.repeat(logTailBytes));
    expect(queue.get(b)).toMatchObject({ state: 'failed', reason: 'no instance type has 64 vCPUs', logTail: '' });
  });

  it('complete is refused for a non-integer exit code', () => {
    const queue = open();
    const uuid = inState(queue, 'running');
    expect(() => queue.complete(uuid, Number.NaN, '')).toThrow(/exit code/);
    expect(queue.get(uuid)?.state).toBe('running');
  });
});

describe('requeueOrFail', () => {
  it('requeues until attempts reach maxAttempts, then fails with a reason naming the last one', () => {
    const queue = open(3);
    const { uuid } = queue.submit(spec());
    for (let attempt = 1; attempt <= 2; attempt++) {
      queue.lock(uuid, 'i-1', 'small');
      queue.markRunning(uuid, `i-${attempt}`, 'small');
      expect(queue.requeueOrFail(uuid, `instance i-${attempt} vanished`)).toBe('queued');
      expect(queue.get(uuid)).toMatchObject({
        state: 'queued',
        attempts: attempt,
        instanceId: null,
        instanceType: null,
        startedAt: null,
        reason: `instance i-${attempt} vanished`,
      });
    }
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-3', 'small');
    t = 7_000;
    expect(queue.requeueOrFail(uuid, 'instance i-3 vanished')).toBe('failed');
    const failed = queue.get(uuid);
    expect(failed).toMatchObject({ state: 'failed', attempts: 3, finishedAt: 7_000, updatedAt: 7_000 });
    expect(failed?.reason).toContain('lost 3 times');
    expect(failed?.reason).toContain('instance i-3 vanished');
  });

  it('requeues a locked container that has not used up its attempts', () => {
    const queue = open(1);
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    expect(queue.requeueOrFail(uuid, 'create failed')).toBe('queued');
    expect(queue.get(uuid)).toMatchObject({ state: 'queued', attempts: 0, reason: 'create failed' });
  });

  it('fails at once with maxAttempts 1', () => {
    const queue = open(1);
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    expect(queue.requeueOrFail(uuid, 'spot reclaimed')).toBe('failed');
    expect(queue.get(uuid)?.reason).toMatch(/lost 1 time\b.*spot reclaimed/);
  });

  it('rejects a maxAttempts below 1', () => {
    expect(() => new SqliteQueue({ path, maxAttempts: 0, clock })).toThrow(/maxAttempts/);
  });
});

describe('cancel', () => {
  it('cancels a queued container', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    t = 5_000;
    const cancelled = queue.cancel(uuid);
    expect(cancelled).toMatchObject({ uuid, state: 'cancelled', reason: 'cancelled by user', finishedAt: 5_000, updatedAt: 5_000 });
    expect(queue.get(uuid)).toEqual(cancelled);
    expect(queue.pending()).toEqual([]);
  });

  it('cancels a running container and keeps where it ran, for the dispatcher to kill', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-7', 'small');
    const cancelled = queue.cancel(uuid);
    expect(cancelled).toMatchObject({ state: 'cancelled', reason: 'cancelled by user', instanceId: 'i-7', attempts: 1 });
  });

  it('returns a complete container unchanged', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-7', 'small');
    queue.complete(uuid, 0, 'ok');
    const before = queue.get(uuid);
    t = 99_000;
    expect(queue.cancel(uuid)).toEqual(before);
    expect(queue.get(uuid)).toEqual(before);
  });
});

describe('log tail', () => {
  it('keeps only the last 64 KiB, the end of the log, after a line saying how much was dropped', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    const log = 'HEAD'.padEnd(100_000, 'a') + 'THE END';
    queue.complete(uuid, 0, log);
    const tail = queue.get(uuid)?.logTail ?? '';
    const marker = '[drover: 100007 bytes of output; the first 34471 were dropped, the last 65536 kept]\n';
    expect(tail.startsWith(marker)).toBe(true);
    const kept = tail.slice(marker.length);
    expect(Buffer.byteLength(kept)).toBe(logTailBytes);
    expect(log.endsWith(kept)).toBe(true);
    expect(kept.endsWith('THE END')).toBe(true);
  });

  it('keeps the configured number of bytes', () => {
    const queue = open(3, 2048);
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.complete(uuid, 0, 'y'.repeat(5000));
    expect(queue.get(uuid)?.logTail).toBe(logTailMarker(5000, 2048) + 'y'.repeat(2048));
    expect(() => open(3, 0)).toThrow(RangeError);
    expect(() => open(3, 1.5)).toThrow(RangeError);
  });

  it('stores the runner\'s marked tail as it is, not counting the marker against the limit', () => {
    const runnerTail = logTailMarker(52_428_800, logTailBytes) + 'z'.repeat(logTailBytes);
    expect(truncateLogTail(runnerTail)).toBe(runnerTail);
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.complete(uuid, 0, runnerTail);
    expect(queue.get(uuid)?.logTail).toBe(runnerTail);
  });

  it('cutting a marked tail further keeps the total the marker gave', () => {
    const runnerTail = logTailMarker(52_428_800, 4096) + 'z'.repeat(4096);
    expect(truncateLogTail(runnerTail, 1024)).toBe(
      '[drover: 52428800 bytes of output; the first 52427776 were dropped, the last 1024 kept]\n' + 'z'.repeat(1024),
    );
  });

  it('counts the bytes kept after a cut on a character boundary', () => {
    // 3-byte characters: the last 1024 bytes hold 341 whole ones.
    expect(truncateLogTail('€'.repeat(1000), 1024)).toBe(logTailMarker(3000, 1023) + '€'.repeat(341));
  });

  it('cuts on a UTF-8 character boundary', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    // 3-byte characters, so 64 KiB (not a multiple of 3) falls inside one.
    const log = '€'.repeat(30_000);
    queue.complete(uuid, 0, log);
    const tail = queue.get(uuid)?.logTail ?? '';
    expect(tail).not.toContain('\uFFFD');
    const kept = Math.floor(logTailBytes / 3);
    expect(tail).toBe(logTailMarker(90_000, kept * 3) + '€'.repeat(kept));
  });

  it('leaves a log under the limit as it is', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.complete(uuid, 2, 'short €\n');
    expect(queue.get(uuid)?.logTail).toBe('short €\n');
  });
});

describe('persistence', () => {
  it('keeps everything across close and reopen, in WAL mode', () => {
    const first = open();
    const queued = first.submit(spec({ priority: 3, env: { A: '1' } })).uuid;
    const locked = first.submit(spec()).uuid;
    first.lock(locked, 'i-1', 'small');
    const running = first.submit(spec()).uuid;
    first.lock(running, 'i-1', 'small');
    first.markRunning(running, 'i-1', 'small');
    const done = first.submit(spec()).uuid;
    first.lock(done, 'i-1', 'small');
    first.complete(done, 0, 'bye');
    const before = first.list();
    const pendingBefore = first.pending();
    first.close();

    const second = open();
    expect(second.list()).toEqual(before);
    expect(second.pending()).toEqual(pendingBefore);
    expect(second.pending().map((c) => c.uuid).sort()).toEqual([queued, locked, running].sort());
    expect(second.get(queued)).toMatchObject({ state: 'queued', priority: 3, env: { A: '1' } });
    second.close();

    const db = new Database(path, { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('user_version', { simple: true })).toBe(1);
    } finally {
      db.close();
    }
  });

  it('refuses a file written by a newer schema', () => {
    open().close();
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    expect(() => open()).toThrow(/schema version 99/);
  });
});

describe('subscribe', () => {
  it('coalesces the mutations of one tick into one call', async () => {
    const queue = open();
    let calls = 0;
    queue.subscribe(() => calls++);
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-1', 'small');
    expect(calls).toBe(0);
    await tick();
    expect(calls).toBe(1);
    queue.complete(uuid, 0, '');
    await tick();
    expect(calls).toBe(2);
  });

  it('does not notify when nothing changed, nor after unsubscribe', async () => {
    const queue = open();
    let calls = 0;
    const unsubscribe = queue.subscribe(() => calls++);
    const { uuid } = queue.submit(spec());
    queue.cancel(uuid);
    await tick();
    expect(calls).toBe(1);
    expect(queue.lock(uuid, 'i-1', 'small')).toBe(false);
    queue.cancel(uuid);
    await tick();
    expect(calls).toBe(1);
    unsubscribe();
    queue.submit(spec());
    await tick();
    expect(calls).toBe(1);
  });
});

describe('close', () => {
  it('drops a notification still queued when the queue closes', async () => {
    const queue = open();
    let calls = 0;
    queue.subscribe(() => calls++);
    queue.submit(spec());
    queue.close();
    await tick();
    expect(calls).toBe(0);
    expect(() => queue.pending()).toThrow();
  });
});

describe('validation', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['empty command', { command: [] }, /^command /],
    ['command not an array', { command: 'echo hi' }, /^command /],
    ['non-string argument', { command: ['echo', 3] }, /^command\[1\] /],
    ['empty program', { command: [''] }, /^command\[0\] /],
    ['bad env key', { env: { '1BAD': 'x' } }, /^env .*"1BAD"/],
    ['env key with a dash', { env: { 'A-B': 'x' } }, /^env .*"A-B"/],
    ['non-string env value', { env: { PORT: 80 } }, /^env\.PORT /],
    ['env not an object', { env: ['A=1'] }, /^env /],
    ['zero vcpus', { constraints: { vcpus: 0, ramMiB: 1, scratchGiB: 0, gpus: 0, preemptible: false } }, /^constraints\.vcpus /],
    ['zero RAM', { constraints: { vcpus: 1, ramMiB: 0, scratchGiB: 0, gpus: 0, preemptible: false } }, /^constraints\.ramMiB /],
    ['negative scratch', { constraints: { vcpus: 1, ramMiB: 1, scratchGiB: -1, gpus: 0, preemptible: false } }, /^constraints\.scratchGiB /],
    ['fractional GPUs', { constraints: { vcpus: 1, ramMiB: 1, scratchGiB: 0, gpus: 0.5, preemptible: false } }, /^constraints\.gpus /],
    ['missing preemptible', { constraints: { vcpus: 1, ramMiB: 1, scratchGiB: 0, gpus: 0 } }, /^constraints\.preemptible /],
    ['fractional priority', { priority: 1.5 }, /^priority /],
    ['string priority', { priority: '1' }, /^priority /],
    ['empty image', { image: '' }, /^image /],
  ];

  for (const [name, overrides, message] of cases) {
    it(`rejects ${name}`, () => {
      const queue = open();
      // Deliberately ill-typed: the queue must check specs that arrive as untyped JSON.
      const bad = { ...spec(), ...(overrides as object) } as ContainerSpec;
      expect(() => queue.submit(bad)).toThrow(InvalidContainerSpecError);
      expect(() => queue.submit(bad)).toThrow(message);
      expect(() => queue.submit(bad)).toThrow(expect.objectContaining({ name: 'InvalidContainerSpecError' }));
      expect(queue.list()).toEqual([]);
    });
  }

  it('accepts the edge of every range and drops unknown fields', () => {
    const queue = open();
    const c = queue.submit({
      ...spec({ env: { _: 'x', a9: 'y' }, constraints: { vcpus: 1, ramMiB: 1, scratchGiB: 0, gpus: 0, preemptible: false } }),
      extra: 'ignored',
    } as ContainerSpec);
    expect(c).not.toHaveProperty('extra');
    expect(c.env).toEqual({ _: 'x', a9: 'y' });
  });
});

// A small seeded generator, so a failing random sequence can be replayed.
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

// The scheduling order as the file alone gives it, read past the queue's memory.
function pendingOnDisk(): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare<[], { uuid: string }>(
        `SELECT uuid FROM containers WHERE state IN ('queued', 'locked', 'running')
         ORDER BY (state = 'queued'), priority DESC, submitted_at, uuid`,
      )
      .all()
      .map((row) => row.uuid);
  } finally {
    db.close();
  }
}

function ignoreStateError(action: () => unknown): void {
  try {
    action();
  } catch (err) {
    if (!(err instanceof ContainerStateError)) throw err;
  }
}

describe('live set in memory', () => {
  it('gives the pending order and contents a fresh open of the file gives, after many interleaved changes', () => {
    const queue = open(2);
    const next = random(7);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
    const uuids: string[] = [];
    const instances = ['i-1', 'i-2', 'i-3'];
    for (let step = 0; step < 1_500; step++) {
      // Often the same millisecond, so ties on priority and submit time fall to the uuid.
      if (next() < 0.3) t += 1;
      const roll = next();
      if (uuids.length < 10 || roll < 0.25) {
        uuids.push(queue.submit(spec({ priority: Math.floor(next() * 4) - 1 })).uuid);
        continue;
      }
      const uuid = pick(uuids);
      const instanceId = pick(instances);
      if (roll < 0.35) queue.lock(uuid, instanceId, 'small');
      else if (roll < 0.4) queue.lockMany([0, 1, 2].map(() => ({ uuid: pick(uuids), instanceId, instanceType: 'small' })));
      else if (roll < 0.45) queue.submitMany([spec({ priority: 2 }), spec({ priority: -1 })]).forEach((c) => uuids.push(c.uuid));
      else if (roll < 0.55) ignoreStateError(() => queue.markRunning(uuid, instanceId, 'large'));
      else if (roll < 0.62) ignoreStateError(() => queue.unlock(uuid, 'no idle worker'));
      else if (roll < 0.7) ignoreStateError(() => queue.requeueOrFail(uuid, 'instance lost'));
      else if (roll < 0.76) ignoreStateError(() => queue.complete(uuid, 0, ''));
      else if (roll < 0.8) ignoreStateError(() => queue.setLogTail(uuid, `log ${step}`));
      else if (roll < 0.84) ignoreStateError(() => queue.fail(uuid, 'no type fits'));
      else if (roll < 0.88) queue.cancel(uuid);
      // Reads in between, so changes reach the order in many small merges, not one.
      else queue.pending();
      if (step % 300 === 299) expect(queue.pending().map((c) => c.uuid)).toEqual(pendingOnDisk());
    }

    const pending = queue.pending();
    expect(new Set(pending.map((c) => c.state))).toEqual(new Set(['queued', 'locked', 'running']));
    expect(pending.map((c) => c.uuid)).toEqual(pendingOnDisk());
    const fresh = open(2);
    expect(pending).toEqual(fresh.pending());
    for (const uuid of uuids) expect(queue.get(uuid)).toEqual(fresh.get(uuid));
    for (const instanceId of instances) expect(queue.liveOn(instanceId)).toEqual(fresh.liveOn(instanceId));
  });

  it('returns the same array until something changes, and leaves an earlier one as it was', () => {
    const queue = open();
    const a = queue.submit(spec()).uuid;
    const before = queue.pending();
    expect(queue.pending()).toBe(before);
    queue.lock(a, 'i-1', 'small');
    const after = queue.pending();
    expect(after).not.toBe(before);
    expect(before.map((c) => c.state)).toEqual(['queued']);
    expect(after.map((c) => c.state)).toEqual(['locked']);
  });

  it('hands out frozen containers, so no caller can change what the next one reads', () => {
    const queue = open();
    const submitted = queue.submit(spec({ env: { A: '1' } }));
    const [first] = queue.pending();
    expect(first).toBe(submitted);
    expect(queue.get(submitted.uuid)).toBe(submitted);
    // Deliberately casting the readonly away: plain JavaScript callers can try this too.
    const mutable = first as Container;
    expect(() => {
      mutable.state = 'complete';
    }).toThrow(TypeError);
    expect(() => mutable.command.push('rm')).toThrow(TypeError);
    expect(() => {
      mutable.env.B = '2';
    }).toThrow(TypeError);
    expect(() => {
      mutable.constraints.vcpus = 64;
    }).toThrow(TypeError);
    expect(() => (queue.pending() as Container[]).pop()).toThrow(TypeError);
    queue.lock(submitted.uuid, 'i-1', 'small');
    expect(() => (queue.liveOn('i-1') as Container[]).pop()).toThrow(TypeError);

    expect(queue.pending()).toEqual([{ ...submitted, state: 'locked', instanceId: 'i-1', instanceType: 'small' }]);
    expect(queue.pending()).toEqual(open().pending());
  });

  it('leaves memory unchanged when a transition is refused', () => {
    const queue = open();
    const queued = inState(queue, 'queued');
    const running = inState(queue, 'running');
    const pending = queue.pending();
    const before = queue.get(queued);
    expect(() => queue.markRunning(queued, 'i-1', 'small')).toThrow(ContainerStateError);
    expect(() => queue.unlock(running, 'no')).toThrow(ContainerStateError);
    expect(() => queue.setLogTail(queued, 'tail')).toThrow(ContainerStateError);
    expect(() => queue.complete(running, 1.5, '')).toThrow(RangeError);
    expect(queue.pending()).toBe(pending);
    expect(queue.get(queued)).toBe(before);
  });

  it('leaves memory unchanged when the database refuses the write', () => {
    const queue = open();
    const a = queue.submit(spec()).uuid;
    const b = queue.submit(spec()).uuid;
    const pending = queue.pending();
    const other = new Database(path);
    try {
      other.exec(`CREATE TRIGGER refuse BEFORE UPDATE ON containers BEGIN SELECT RAISE(ABORT, 'disk says no'); END`);
      expect(() => queue.lock(a, 'i-1', 'small')).toThrow(/disk says no/);
      expect(() => queue.lockMany([{ uuid: b, instanceId: 'i-1', instanceType: 'small' }])).toThrow(/disk says no/);
      expect(() => queue.cancel(a)).toThrow(/disk says no/);
      expect(() => queue.fail(b, 'r')).toThrow(/disk says no/);
      expect(queue.pending()).toBe(pending);
      expect(queue.get(a)?.state).toBe('queued');
      other.exec('DROP TRIGGER refuse');
    } finally {
      other.close();
    }
    expect(queue.lock(a, 'i-1', 'small')).toBe(true);
    expect(queue.pending().map((c) => [c.uuid, c.state])).toEqual([
      [a, 'locked'],
      [b, 'queued'],
    ]);
  });

  it('refuses reads once closed', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.close();
    expect(() => queue.get(uuid)).toThrow(QueueClosedError);
    expect(() => queue.liveOn('i-1')).toThrow(QueueClosedError);
  });
});

describe('lock and lockMany', () => {
  it('lock records the instance the start is for, across a restart; unlock clears it', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    t = 2_000;
    expect(queue.lock(uuid, 'i-5', 'large')).toBe(true);
    const locked = { state: 'locked', instanceId: 'i-5', instanceType: 'large', updatedAt: 2_000, attempts: 0, startedAt: null };
    expect(queue.get(uuid)).toMatchObject(locked);
    queue.close();

    const reopened = open();
    expect(reopened.get(uuid)).toMatchObject(locked);
    reopened.unlock(uuid, 'no idle worker took it');
    expect(reopened.get(uuid)).toMatchObject({ state: 'queued', instanceId: null, instanceType: null });
    expect(open().get(uuid)).toMatchObject({ state: 'queued', instanceId: null, instanceType: null });
  });

  it('markRunning records where it actually started, even on another instance than the lock named', () => {
    const queue = open();
    const { uuid } = queue.submit(spec());
    queue.lock(uuid, 'i-1', 'small');
    queue.markRunning(uuid, 'i-2', 'large');
    expect(queue.get(uuid)).toMatchObject({ state: 'running', instanceId: 'i-2', instanceType: 'large' });
    expect(queue.liveOn('i-1')).toEqual([]);
    expect(queue.liveOn('i-2').map((c) => c.uuid)).toEqual([uuid]);
  });

  it('lockMany locks those still queued, in one notification, and returns their uuids', async () => {
    const queue = open();
    const byState = new Map(allStates.map((state) => [state, inState(queue, state)]));
    const queued = byState.get('queued') as string;
    const another = queue.submit(spec()).uuid;
    let calls = 0;
    queue.subscribe(() => calls++);
    t = 3_000;
    const requests = [...byState.values(), another, queued].map((uuid, i) => ({ uuid, instanceId: `i-${i}`, instanceType: 'small' }));
    expect(queue.lockMany(requests)).toEqual([queued, another]);
    await tick();
    expect(calls).toBe(1);
    expect(queue.get(queued)).toMatchObject({ state: 'locked', instanceId: 'i-0', updatedAt: 3_000 });
    expect(queue.get(another)).toMatchObject({ state: 'locked', instanceId: 'i-6', updatedAt: 3_000 });
    for (const state of allStates) {
      if (state !== 'queued') expect(queue.get(byState.get(state) as string)?.state).toBe(state);
    }
    expect(queue.pending()).toEqual(open().pending());

    expect(queue.lockMany([])).toEqual([]);
    expect(queue.lockMany([{ uuid: queued, instanceId: 'i-9', instanceType: 'small' }])).toEqual([]);
    await tick();
    expect(calls).toBe(1);
  });

  it('lockMany locks none when one uuid is unknown', () => {
    const queue = open();
    const a = queue.submit(spec()).uuid;
    const b = queue.submit(spec()).uuid;
    const pending = queue.pending();
    const requests = [a, 'no-such-uuid', b].map((uuid) => ({ uuid, instanceId: 'i-1', instanceType: 'small' }));
    expect(() => queue.lockMany(requests)).toThrow(ContainerNotFoundError);
    expect(queue.pending()).toBe(pending);
    expect(open().pending().map((c) => c.state)).toEqual(['queued', 'queued']);
  });
});

describe('setLogTail', () => {
  it('attaches logs to a final container after its exit code, leaving its state and finish time', async () => {
    const queue = open();
    const uuid = inState(queue, 'running');
    t = 4_000;
    queue.complete(uuid, 3, '');
    let calls = 0;
    queue.subscribe(() => calls++);
    t = 5_000;
    queue.setLogTail(uuid, 'HEAD'.padEnd(100_000, 'a') + 'THE END');
    const container = queue.get(uuid);
    expect(container).toMatchObject({ state: 'complete', exitCode: 3, finishedAt: 4_000, updatedAt: 5_000 });
    expect(container?.logTail).toBe(logTailMarker(100_007, logTailBytes) + ('HEAD'.padEnd(100_000, 'a') + 'THE END').slice(-logTailBytes));
    await tick();
    expect(calls).toBe(1);
  });

  for (const state of allStates) {
    const final = state === 'complete' || state === 'failed' || state === 'cancelled';
    it(`${final ? 'sets' : 'refuses'} the log tail of a ${state} container`, () => {
      const queue = open();
      const uuid = inState(queue, state);
      const pending = queue.pending();
      if (final) {
        queue.setLogTail(uuid, 'late logs\n');
        expect(queue.get(uuid)).toMatchObject({ state, logTail: 'late logs\n' });
      } else {
        expect(() => queue.setLogTail(uuid, 'late logs\n')).toThrow(ContainerStateError);
        expect(() => queue.setLogTail(uuid, '')).toThrow(expect.objectContaining({ uuid, from: state }));
        expect(queue.get(uuid)).toMatchObject({ state, logTail: '' });
      }
      expect(queue.pending()).toBe(pending);
    });
  }
});

describe('recordExit', () => {
  it('stores the code of a running container, which stays running until complete brings its logs', () => {
    const queue = open();
    const uuid = inState(queue, 'running');
    t = 7_000;
    queue.recordExit(uuid, 4, 'i-1');
    expect(queue.get(uuid)).toMatchObject({ state: 'running', exitCode: 4, attempts: 1, startedAt: 1_000, updatedAt: 7_000 });
    expect(queue.requeueOrFail(uuid, 'instance i-1 is gone')).toBe('complete');
  });

  it('records the start with the exit of a container still locked on that instance, in one change', async () => {
    const queue = open();
    const uuid = inState(queue, 'locked');
    let calls = 0;
    queue.subscribe(() => calls++);
    t = 7_000;
    queue.recordExit(uuid, 0, 'i-1');
    const recorded = { state: 'running', exitCode: 0, attempts: 1, instanceId: 'i-1', instanceType: 'small', startedAt: 7_000, updatedAt: 7_000 };
    expect(queue.get(uuid)).toMatchObject(recorded);
    expect(open().get(uuid)).toMatchObject(recorded);
    await tick();
    expect(calls).toBe(1);
    // Its instance gone before its logs came: complete with that code, not queued to run again.
    expect(queue.requeueOrFail(uuid, 'instance i-1 is gone')).toBe('complete');
    expect(queue.get(uuid)).toMatchObject({ state: 'complete', exitCode: 0, attempts: 1 });
  });

  it('refuses a locked container without the instance, or locked on another one', () => {
    const queue = open();
    const uuid = inState(queue, 'locked');
    const before = queue.get(uuid);
    expect(() => queue.recordExit(uuid, 0)).toThrow(expect.objectContaining({ uuid, from: 'locked' }));
    expect(() => queue.recordExit(uuid, 0, 'i-2')).toThrow(ContainerStateError);
    expect(queue.get(uuid)).toEqual(before);
  });

  it('gives a cancelled container the code it was killed with, once', () => {
    const queue = open();
    const uuid = inState(queue, 'running');
    queue.cancel(uuid);
    queue.recordExit(uuid, 143, 'i-1');
    expect(queue.get(uuid)).toMatchObject({ state: 'cancelled', exitCode: 143 });
    expect(() => queue.recordExit(uuid, 137, 'i-1')).toThrow(ContainerStateError);
  });

  for (const state of ['queued', 'complete', 'failed'] as const) {
    it(`refuses a ${state} container`, () => {
      const queue = open();
      const uuid = inState(queue, state);
      expect(() => queue.recordExit(uuid, 0, 'i-1')).toThrow(expect.objectContaining({ uuid, from: state }));
    });
  }
});

describe('complete of a locked container', () => {
  it('counts its start: it ran, though its start was never recorded', () => {
    const queue = open();
    const uuid = inState(queue, 'locked');
    t = 9_000;
    queue.complete(uuid, 2, 'out\n');
    expect(queue.get(uuid)).toMatchObject({ state: 'complete', exitCode: 2, attempts: 1, startedAt: 9_000, finishedAt: 9_000 });
  });

  it('keeps the start time and attempts of a running one', () => {
    const queue = open();
    const uuid = inState(queue, 'running');
    t = 9_000;
    queue.complete(uuid, 0, '');
    expect(queue.get(uuid)).toMatchObject({ state: 'complete', attempts: 1, startedAt: 1_000, finishedAt: 9_000 });
  });
});

describe('liveOn', () => {
  it('lists the locked and running containers recorded on an instance, in scheduling order', () => {
    const queue = open(2);
    const submit = (priority: number) => queue.submit(spec({ priority })).uuid;
    const lockedLow = submit(0);
    const runningHigh = submit(5);
    const elsewhere = submit(9);
    const queued = submit(9);
    const finished = submit(9);
    queue.lock(lockedLow, 'i-1', 'small');
    queue.lock(runningHigh, 'i-1', 'small');
    queue.markRunning(runningHigh, 'i-1', 'small');
    queue.lock(elsewhere, 'i-2', 'small');
    queue.lock(finished, 'i-1', 'small');
    queue.complete(finished, 0, '');
    void queued;

    expect(queue.liveOn('i-1').map((c) => c.uuid)).toEqual([runningHigh, lockedLow]);
    expect(queue.liveOn('i-2').map((c) => c.uuid)).toEqual([elsewhere]);
    expect(queue.liveOn('i-unknown')).toEqual([]);
    expect(open(2).liveOn('i-1')).toEqual(queue.liveOn('i-1'));

    queue.requeueOrFail(runningHigh, 'instance lost');
    queue.unlock(lockedLow, 'no idle worker');
    queue.cancel(elsewhere);
    expect(queue.liveOn('i-1')).toEqual([]);
    expect(queue.liveOn('i-2')).toEqual([]);
  });
});

describe('submitMany', () => {
  it('submits all in one transaction, or none if one spec is invalid', async () => {
    const queue = open();
    let calls = 0;
    queue.subscribe(() => calls++);
    const submitted = queue.submitMany([spec({ priority: 1 }), spec({ priority: 2 })]);
    await tick();
    expect(calls).toBe(1);
    expect(queue.pending().map((c) => c.uuid)).toEqual([submitted[1]?.uuid, submitted[0]?.uuid]);
    expect(() => queue.submitMany([spec(), spec({ command: [] })])).toThrow(InvalidContainerSpecError);
    expect(open().pending()).toEqual(queue.pending());
  });
});
