// How the pool reads a runner `start` answer: whose fault a refusal is, and when only a list can tell;
// the ledger's sums; copies on the wrong instance; what a long spell of refused queue writes logs.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { Attempts, classifyStart, type AttemptRecords } from '../src/pool/attempts.js';
import { AllocationLedger } from '../src/pool/ledger.js';
import type { Container } from '../src/queue/types.js';
import type { CommandResult } from '../src/ssh/executor.js';

/** What the attempts are told that these tests do not vary: no callbacks, the pool's default timings. */
const timings = {
  changed: () => {},
  startSettled: () => {},
  uncertainDeadlineMs: 600_000,
  killRetryMs: 30_000,
  watchSeconds: 25,
  watchRetryMs: 5_000,
  maxRefusals: 10,
};

const answer = (exitCode: number | null, stderr = ''): CommandResult => ({ stdout: '', stderr, exitCode });

describe('classifyStart', () => {
  it('0 and 3 (already there) are started, at the time of the answer', () => {
    expect(classifyStart(answer(0), 10, 15, 'i-1')).toEqual({ kind: 'started', at: 15 });
    expect(classifyStart(answer(3, 'exists'), 10, 15, 'i-1')).toEqual({ kind: 'started', at: 15 });
  });

  it('bad arguments (2) are the container\'s fault; other refusals the instance\'s', () => {
    expect(classifyStart(answer(2, 'bad env'), 10, 15, 'i-1')).toMatchObject({ kind: 'refused', fault: 'container' });
    expect(classifyStart(answer(1, 'disk full'), 10, 15, 'i-1')).toEqual({
      kind: 'refused',
      fault: 'instance',
      reason: 'runner start on i-1 exited with 1: disk full',
    });
    expect(classifyStart(answer(4), 10, 15, 'i-1')).toMatchObject({ kind: 'refused', fault: 'instance' });
  });

  it('"could not tell" (5) and a start ended by a signal are uncertain from when the start was sent', () => {
    expect(classifyStart(answer(5, 'no pid'), 10, 15, 'i-1')).toMatchObject({ kind: 'uncertain', sentAt: 10 });
    expect(classifyStart(answer(null), 10, 15, 'i-1')).toMatchObject({ kind: 'uncertain', sentAt: 10 });
    expect(classifyStart(answer(137), 10, 15, 'i-1')).toMatchObject({ kind: 'uncertain', sentAt: 10 });
  });
});

describe('AllocationLedger', () => {
  // The actor is not used by the ledger's sums; a placeholder keeps the test about arithmetic.
  const actor = {} as never;
  const demand = { vcpus: 2, ramMiB: 1024, scratchGiB: 1, gpus: 0 };

  it('sums what holding containers take per worker, frees on release, forgets on remove', () => {
    const ledger = new AllocationLedger();
    ledger.add({ uuid: 'a', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
    ledger.add({ uuid: 'b', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
    expect(ledger.holdingOn('w')).toBe(2);
    expect(ledger.usedOn('w')).toEqual({ vcpus: 4, ramMiB: 2048, scratchGiB: 2, gpus: 0 });
    expect(ledger.release('a')).toBe(true);
    expect(ledger.release('a')).toBe(false);
    expect(ledger.holdingOn('w')).toBe(1);
    expect(ledger.on('w').map((allocation) => allocation.uuid)).toEqual(['a', 'b']);
    ledger.remove('b');
    expect(ledger.usedOn('w')).toEqual({ vcpus: 0, ramMiB: 0, scratchGiB: 0, gpus: 0 });
    ledger.remove('a');
    expect(ledger.on('w')).toEqual([]);
    expect(() => {
      ledger.add({ uuid: 'c', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
      ledger.add({ uuid: 'c', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
    }).toThrow(/already allocated/);
  });
});

const container = (uuid: string, state: Container['state'], instanceId: string | null): Container => ({
  uuid,
  state,
  image: null,
  command: ['true'],
  env: {},
  constraints: { vcpus: 1, ramMiB: 64, scratchGiB: 0, gpus: 0, preemptible: false },
  priority: 0,
  attempts: 1,
  exitCode: null,
  instanceId,
  instanceType: 't',
  logTail: '',
  reason: null,
  submittedAt: 0,
  startedAt: null,
  finishedAt: null,
  updatedAt: 0,
});

describe('Attempts: copies of a container on the wrong instance', () => {
  function setUp() {
    const queue = new Map<string, Container>();
    const writes: string[] = [];
    const records: AttemptRecords = {
      get: (uuid) => queue.get(uuid),
      liveOn: (instanceId) => [...queue.values()].filter((c) => c.instanceId === instanceId && (c.state === 'locked' || c.state === 'running')),
      lock: () => false,
      unlock: (uuid) => void writes.push(`unlock ${uuid}`),
      markRunning: (uuid) => void writes.push(`markRunning ${uuid}`),
      recordExit: (uuid, code) => void writes.push(`recordExit ${uuid} ${code}`),
      complete: (uuid, code) => void writes.push(`complete ${uuid} ${code}`),
      setLogTail: (uuid) => void writes.push(`setLogTail ${uuid}`),
      requeueOrFail: (uuid) => {
        writes.push(`requeueOrFail ${uuid}`);
        return 'queued';
      },
      fail: (uuid) => void writes.push(`fail ${uuid}`),
    };
    const commands: string[] = [];
    const attempts = new Attempts({
      records,
      clock: systemClock,
      logger: pino({ level: 'silent' }),
      runnerCommand: 'r',
      docker: false,
      run: async (workerId, command) => {
        commands.push(`${workerId}: ${command}`);
        // The watch session: never answers within the test.
        if (command.includes(' wait ')) await new Promise(() => {});
        return { stdout: '', stderr: '', exitCode: 0 };
      },
      ...timings,
    });
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    return { queue, writes, commands: () => commands.filter((command) => !command.includes(' wait ')), attempts, settle };
  }

  const a = { workerId: 'A', instanceId: 'iA', instanceType: 't' };
  const b = { workerId: 'B', instanceId: 'iB', instanceType: 't' };

  it('a second copy on another instance is killed and removed there, and nothing about it reaches the queue', async () => {
    const { queue, writes, commands, attempts, settle } = setUp();
    // The queue has x running on A; after a restart, B's list (with a stray copy) comes first.
    queue.set('x', container('x', 'running', 'iA'));
    attempts.listed(b, { running: ['x'], exited: new Map() }, 1_000);
    await settle();
    attempts.listed(a, { running: ['x'], exited: new Map() }, 1_000);
    await settle();
    expect(attempts.ledger.get('x')?.workerId).toBe('A');
    // Still there at B's next list: KILL; once it has exited: removed, once.
    attempts.listed(b, { running: ['x'], exited: new Map() }, 2_000);
    attempts.listed(b, { running: [], exited: new Map([['x', 143]]) }, 3_000);
    attempts.listed(b, { running: [], exited: new Map([['x', 143]]) }, 4_000);
    await settle();
    expect(commands()).toEqual(["B: 'r' kill TERM 'x'", "B: 'r' kill KILL 'x'", "B: 'r' remove 'x'"]);
    expect(writes).toEqual([]);
    // The real copy on A is untouched and still the container's attempt.
    attempts.listed(a, { running: ['x'], exited: new Map() }, 5_000);
    await settle();
    expect(commands().filter((command) => command.startsWith('A:'))).toEqual([]);
    expect(attempts.ledger.get('x')?.actor.getSnapshot().value).toBe('running');
    attempts.stop();
  });

  it('a copy of a container that runs elsewhere in this process is killed, not adopted', async () => {
    const { queue, commands, attempts, settle } = setUp();
    queue.set('y', container('y', 'running', 'iA'));
    attempts.listed(a, { running: ['y'], exited: new Map() }, 1_000);
    attempts.listed(b, { running: ['y'], exited: new Map() }, 1_000);
    await settle();
    expect(commands()).toEqual(["B: 'r' kill TERM 'y'"]);
    expect(attempts.ledger.on('B')).toEqual([]);
    attempts.stop();
  });
});

describe('Attempts: a long spell of refused queue writes', () => {
  it("logs each container's failure once a spell (repeats at debug), and again once a write has committed", async () => {
    const queue = new Map([
      ['x', container('x', 'locked', 'iA')],
      ['y', container('y', 'locked', 'iA')],
    ]);
    // The disk is full for these containers' writes.
    const refusing = new Set(['x', 'y']);
    const lines: Array<{ level: number; msg: string; containerUuid?: string; error?: string }> = [];
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as (typeof lines)[number]);
        done();
      },
    });
    const refused = 'the queue file q cannot be used: the disk is full (SQLite: database or disk is full)';
    const unused = () => {
      throw new Error('not expected here');
    };
    const attempts = new Attempts({
      records: {
        get: (uuid) => queue.get(uuid),
        liveOn: (instanceId) => [...queue.values()].filter((c) => c.instanceId === instanceId && (c.state === 'locked' || c.state === 'running')),
        lock: () => false,
        markRunning: (uuid) => {
          if (refusing.has(uuid)) throw new Error(refused);
          queue.set(uuid, { ...queue.get(uuid)!, state: 'running' });
        },
        unlock: unused,
        recordExit: unused,
        complete: unused,
        setLogTail: unused,
        requeueOrFail: unused,
        fail: unused,
      },
      clock: systemClock,
      logger: pino({ level: 'debug' }, sink),
      runnerCommand: 'r',
      docker: false,
      // The watch session never answers within the test; nothing else is run.
      run: () => new Promise(() => {}),
      ...timings,
    });
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    const logged = (level: number, msg: string) => lines.filter((line) => line.level === level && line.msg === msg).map((line) => line.containerUuid);
    const writeFailed = 'queue write failed: mark running';
    const unrecorded = 'its start could not be recorded in the queue; the runner list decides it';
    const a = { workerId: 'A', instanceId: 'iA', instanceType: 't' };

    // A probe a second: each list shows both running, and each time their start cannot be recorded.
    for (let second = 1; second <= 5; second++) {
      attempts.listed(a, { running: ['x', 'y'], exited: new Map() }, second * 1_000);
      await settle();
    }
    expect(logged(50, writeFailed)).toEqual(['x', 'y']);
    expect(lines.find((line) => line.msg === writeFailed)?.error).toBe(refused);
    expect(logged(40, unrecorded)).toEqual(['x', 'y']);
    expect(logged(20, writeFailed)).toHaveLength(8);
    expect(logged(20, unrecorded)).toHaveLength(8);

    // y's start is recorded: the file takes writes, so x's next failure begins a new spell.
    refusing.delete('y');
    attempts.listed(a, { running: ['x', 'y'], exited: new Map() }, 6_000);
    await settle();
    expect(queue.get('y')?.state).toBe('running');
    attempts.listed(a, { running: ['x', 'y'], exited: new Map() }, 7_000);
    await settle();
    expect(logged(50, writeFailed)).toEqual(['x', 'y', 'x']);
    expect(logged(40, unrecorded)).toEqual(['x', 'y', 'x']);
    attempts.stop();
  });
});
