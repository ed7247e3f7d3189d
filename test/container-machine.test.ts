// The container attempt machine on its own, on a simulated clock: every transition, with the queue
// writes and runner calls it makes, in order.
import { describe, expect, it } from 'vitest';
import type { StartOutcome } from '../machines/container.js';
import { ContainerHarness, Deferred, delays } from './support/container-harness.js';

const ref = { uuid: 'c-1', workerId: 'w-1', instanceId: 'i-1' };
const started: StartOutcome = { kind: 'started', at: 1_000 };
const unconfirmed: StartOutcome = { kind: 'uncertain', sentAt: 1_000, reason: 'ssh: channel closed' };

async function running(scripts: ConstructorParameters<typeof ContainerHarness>[1] = {}) {
  const h = new ContainerHarness({}, { start: [started], ...scripts });
  await h.settle();
  expect(h.state()).toBe('running');
  return h;
}

async function uncertain(scripts: ConstructorParameters<typeof ContainerHarness>[1] = {}) {
  const h = new ContainerHarness({}, { start: [unconfirmed], ...scripts });
  await h.settle();
  expect(h.state()).toBe('uncertain');
  return h;
}

describe('starting', () => {
  it('locked → starting → running: the start call is made once and the queue marks it running', async () => {
    const start = new Deferred<StartOutcome>();
    const h = new ContainerHarness({}, { start: [start] });
    expect(h.state()).toBe('starting');
    expect(h.snapshot.hasTag('allocated')).toBe(true);
    expect(h.snapshot.hasTag('unconfirmed')).toBe(true);
    expect(h.details('startContainer')).toEqual([ref]);
    start.resolve(started);
    await h.settle();
    expect(h.state()).toBe('running');
    expect(h.details('recordRunning')).toEqual([{ uuid: 'c-1', instanceId: 'i-1' }]);
    expect(h.snapshot.context.since).toBe(1_000);
    expect(h.snapshot.context.reason).toBe('started on instance i-1');
    expect(h.snapshot.hasTag('unconfirmed')).toBe(false);
  });

  it('an exit pushed before the start is answered is kept: the answer then leads straight to finishing', async () => {
    const start = new Deferred<StartOutcome>();
    const h = new ContainerHarness({}, { start: [start], logs: [new Deferred<string>()] });
    await h.send({ type: 'EXITED', exitCode: 4 });
    expect(h.state()).toBe('starting');
    start.resolve(started);
    await h.settle();
    expect(h.state()).toBe('finishing');
    expect(h.names()).toEqual(['startContainer', 'recordRunning', 'recordExit', 'collectLogs']);
    expect(h.details('recordExit')).toEqual([{ uuid: 'c-1', exitCode: 4 }]);
  });

  it('an exit pushed while the start call fails outright still finishes it: it ran', async () => {
    const start = new Deferred<StartOutcome>();
    const h = new ContainerHarness({}, { start: [start], logs: [new Deferred<string>()] });
    await h.send({ type: 'EXITED', exitCode: 0 });
    start.reject(new Error('ssh: channel closed'));
    await h.settle();
    expect(h.state()).toBe('finishing');
    expect(h.names()).toEqual(['startContainer', 'recordRunning', 'recordExit', 'collectLogs']);
  });

  it('refused by the instance → requeued as an unlock (no attempt counted)', async () => {
    const h = new ContainerHarness({}, { start: [{ kind: 'refused', reason: 'disk full', fault: 'instance' }] });
    await h.settle();
    expect(h.state()).toBe('requeued');
    expect(h.details('recordRequeue')).toEqual([{ uuid: 'c-1', reason: 'the instance refused it on instance i-1: disk full', lost: false }]);
    expect(h.details('recordFailed')).toEqual([]);
    expect(h.details('recordRunning')).toEqual([]);
    expect(h.snapshot.status).toBe('done');
    expect(h.snapshot.output).toEqual({ outcome: 'requeued', reason: 'the instance refused it on instance i-1: disk full' });
  });

  it('refused through its own fault → failed', async () => {
    const h = new ContainerHarness({}, { start: [{ kind: 'refused', reason: 'image not found', fault: 'container' }] });
    await h.settle();
    expect(h.state()).toBe('failed');
    expect(h.details('recordFailed')).toEqual([{ uuid: 'c-1', reason: 'refused on instance i-1: image not found' }]);
    expect(h.details('recordRequeue')).toEqual([]);
    expect(h.snapshot.output).toEqual({ outcome: 'failed', reason: 'refused on instance i-1: image not found' });
  });

  it('an uncertain answer → uncertain, judged by lists after sentAt', async () => {
    const h = await uncertain();
    expect(h.snapshot.context.since).toBe(1_000);
    expect(h.snapshot.hasTag('unconfirmed')).toBe(true);
    expect(h.snapshot.hasTag('allocated')).toBe(true);
    expect(h.snapshot.context.reason).toBe('start unconfirmed on instance i-1: ssh: channel closed');
  });

  it('a start call that rejects → uncertain that no list can settle, only the deadline', async () => {
    const h = new ContainerHarness({}, { start: [new Error('ssh: socket hang up')] });
    await h.settle();
    expect(h.state()).toBe('uncertain');
    expect(h.snapshot.context.since).toBe(Infinity);
    expect(h.snapshot.context.lastError).toBe('ssh: socket hang up');
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1e12, status: { state: 'absent' } });
    expect(h.state()).toBe('uncertain');
    await h.advance(delays.uncertainDeadline);
    expect(h.state()).toBe('requeued');
    expect(h.names()).toEqual(['startContainer', 'killContainer', 'recordRequeue']);
    expect(h.signals()).toEqual(['KILL']);
  });

  it('the instance going away while starting → requeued as an unlock', async () => {
    const h = new ContainerHarness({}, { start: [new Deferred<StartOutcome>()] });
    await h.send({ type: 'INSTANCE_GONE', reason: 'destroyed' });
    expect(h.state()).toBe('requeued');
    expect(h.details('recordRequeue')).toEqual([{ uuid: 'c-1', reason: 'instance i-1 is gone: destroyed', lost: false }]);
  });
});

describe('uncertain', () => {
  it('→ running when a list begun after sentAt shows it', async () => {
    const h = await uncertain();
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_001, status: { state: 'running' } });
    expect(h.state()).toBe('running');
    expect(h.details('recordRunning')).toEqual([{ uuid: 'c-1', instanceId: 'i-1' }]);
  });

  it('ignores lists begun at or before sentAt', async () => {
    const h = await uncertain();
    await h.send({ type: 'RUNNER_LISTED', listedAt: 999, status: { state: 'absent' } });
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_000, status: { state: 'absent' } });
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_000, status: { state: 'running' } });
    expect(h.state()).toBe('uncertain');
    expect(h.names()).toEqual(['startContainer']);
  });

  it('→ requeued as an unlock when a later list has no record of it', async () => {
    const h = await uncertain();
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_500, status: { state: 'absent' } });
    expect(h.state()).toBe('requeued');
    expect(h.details('recordRequeue')).toEqual([{ uuid: 'c-1', reason: 'the runner on instance i-1 has no record of it', lost: false }]);
    expect(h.details('orderKill')).toEqual([]);
  });

  it('→ requeued at the deadline (not a moment before), only once its KILL has been answered', async () => {
    const kill = new Deferred<'sent' | 'gone'>();
    const h = await uncertain({ kill: [kill] });
    await h.advance(delays.uncertainDeadline - 1);
    expect(h.state()).toBe('uncertain');
    expect(h.signals()).toEqual([]);
    await h.advance(1);
    // Still holding its place: a new start must not meet the kill meant for this one.
    expect(h.state()).toBe('abandoning');
    expect(h.snapshot.hasTag('allocated')).toBe(true);
    expect(h.signals()).toEqual(['KILL']);
    expect(h.details('recordRequeue')).toEqual([]);
    kill.resolve('sent');
    await h.settle();
    expect(h.state()).toBe('requeued');
    expect(h.names()).toEqual(['startContainer', 'killContainer', 'recordRequeue']);
    expect(h.details('orderKill')).toEqual([]);
    expect(h.details('recordRequeue')).toEqual([
      { uuid: 'c-1', reason: 'no runner list on instance i-1 confirmed the start within the deadline; killed there', lost: false },
    ]);
  });

  it('at the deadline, an instance that does not answer the kill: requeued with a kill ordered for later', async () => {
    const h = await uncertain({ kill: [new Error('ssh: timed out')] });
    await h.advance(delays.uncertainDeadline);
    expect(h.state()).toBe('requeued');
    expect(h.names()).toEqual(['startContainer', 'killContainer', 'orderKill', 'recordRequeue']);
    expect(h.details('orderKill')).toEqual([{ uuid: 'c-1', instanceId: 'i-1' }]);
  });

  it('→ finishing on an exited list, recording running before the exit', async () => {
    const h = await uncertain({ logs: [new Deferred<string>()] });
    await h.send({ type: 'RUNNER_LISTED', listedAt: 2_000, status: { state: 'exited', exitCode: 3 } });
    expect(h.state()).toBe('finishing');
    expect(h.names()).toEqual(['startContainer', 'recordRunning', 'recordExit', 'collectLogs']);
    expect(h.details('recordExit')).toEqual([{ uuid: 'c-1', exitCode: 3 }]);
  });

  it('→ finishing on a pushed EXITED, recording running before the exit', async () => {
    const h = await uncertain({ logs: [new Deferred<string>()] });
    await h.send({ type: 'EXITED', exitCode: 0 });
    expect(h.state()).toBe('finishing');
    expect(h.names()).toEqual(['startContainer', 'recordRunning', 'recordExit', 'collectLogs']);
  });

  it('→ requeued as an unlock when the instance goes away', async () => {
    const h = await uncertain();
    await h.send({ type: 'INSTANCE_GONE', reason: 'shut down' });
    expect(h.state()).toBe('requeued');
    expect(h.details('recordRequeue')).toEqual([{ uuid: 'c-1', reason: 'instance i-1 is gone: shut down', lost: false }]);
  });
});

describe('running and finishing', () => {
  it('→ finishing → done: the exit is recorded before logs are asked for, then logs, then one remove', async () => {
    const logs = new Deferred<string>();
    const h = await running({ logs: [logs] });
    expect(h.snapshot.hasTag('allocated')).toBe(true);
    await h.send({ type: 'EXITED', exitCode: 0 });
    expect(h.state()).toBe('finishing');
    expect(h.snapshot.hasTag('allocated')).toBe(false);
    expect(h.snapshot.hasTag('unconfirmed')).toBe(false);
    expect(h.names()).toEqual(['startContainer', 'recordRunning', 'recordExit', 'collectLogs']);
    expect(h.details('recordExit')).toEqual([{ uuid: 'c-1', exitCode: 0 }]);

    // Still finishing: a cancel now has nothing left to stop.
    await h.send({ type: 'CANCEL' });
    expect(h.state()).toBe('finishing');

    logs.resolve('hello\nbye\n');
    await h.settle();
    expect(h.state()).toBe('done');
    expect(h.names().slice(3)).toEqual(['collectLogs', 'recordLogs', 'removeContainer']);
    expect(h.details('recordLogs')).toEqual([{ uuid: 'c-1', logTail: 'hello\nbye\n' }]);
    expect(h.details('removeContainer')).toEqual([ref]);
    expect(h.details('killContainer')).toEqual([]);
    expect(h.snapshot.output).toEqual({ outcome: 'done', reason: 'finished on instance i-1 with exit code 0' });
  });

  it('an exited list after since also finishes it', async () => {
    const h = await running();
    await h.send({ type: 'RUNNER_LISTED', listedAt: 900, status: { state: 'exited', exitCode: 1 } });
    expect(h.state()).toBe('running');
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_001, status: { state: 'running' } });
    expect(h.state()).toBe('running');
    await h.send({ type: 'RUNNER_LISTED', listedAt: 5_000, status: { state: 'exited', exitCode: 1 } });
    expect(h.state()).toBe('done');
    expect(h.details('recordExit')).toEqual([{ uuid: 'c-1', exitCode: 1 }]);
  });

  it('collectLogs failing still removes the container and ends done', async () => {
    const h = await running({ logs: [new Error('no such file')] });
    await h.send({ type: 'EXITED', exitCode: 2 });
    expect(h.state()).toBe('done');
    expect(h.details('recordLogs')).toEqual([]);
    expect(h.details('removeContainer')).toEqual([ref]);
    expect(h.snapshot.context.lastError).toBe('no such file');
    expect(h.snapshot.output).toEqual({ outcome: 'done', reason: 'finished on instance i-1 with exit code 2' });
  });

  it('removeContainer failing still ends done', async () => {
    const h = await running({ remove: [new Error('busy')] });
    await h.send({ type: 'EXITED', exitCode: 0 });
    expect(h.state()).toBe('done');
    expect(h.snapshot.context.lastError).toBe('busy');
  });

  it('lost by an absent list (after since) → requeued with the attempt counted', async () => {
    const h = await running();
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_000, status: { state: 'absent' } });
    expect(h.state()).toBe('running');
    await h.send({ type: 'RUNNER_LISTED', listedAt: 1_001, status: { state: 'absent' } });
    expect(h.state()).toBe('requeued');
    expect(h.details('recordRequeue')).toEqual([{ uuid: 'c-1', reason: 'lost: the runner on instance i-1 no longer lists it', lost: true }]);
  });

  it('lost with its instance → requeued with the attempt counted', async () => {
    const h = await running();
    await h.send({ type: 'INSTANCE_GONE', reason: 'preempted' });
    expect(h.state()).toBe('requeued');
    expect(h.details('recordRequeue')).toEqual([{ uuid: 'c-1', reason: 'instance i-1 is gone: preempted', lost: true }]);
    expect(h.snapshot.output).toEqual({ outcome: 'requeued', reason: 'instance i-1 is gone: preempted' });
  });
});

describe('cancelling', () => {
  it('cancel while starting, start then succeeds → cancelling, TERM sent', async () => {
    const start = new Deferred<StartOutcome>();
    const h = new ContainerHarness({}, { start: [start] });
    await h.send({ type: 'CANCEL' });
    expect(h.state()).toBe('starting');
    expect(h.snapshot.context.cancelRequested).toBe(true);
    expect(h.details('killContainer')).toEqual([]);
    start.resolve(started);
    await h.settle();
    expect(h.state()).toBe('cancelling');
    expect(h.details('killContainer')).toEqual([{ ...ref, signal: 'TERM' }]);
    expect(h.snapshot.context.since).toBe(1_000);
    expect(h.snapshot.hasTag('allocated')).toBe(true);
  });

  it('cancel while starting, start refused → done with nothing to stop or requeue', async () => {
    const start = new Deferred<StartOutcome>();
    const h = new ContainerHarness({}, { start: [start] });
    await h.send({ type: 'CANCEL' });
    start.resolve({ kind: 'refused', reason: 'no capacity', fault: 'instance' });
    await h.settle();
    expect(h.state()).toBe('done');
    expect(h.names()).toEqual(['startContainer']);
    expect(h.snapshot.output).toEqual({ outcome: 'done', reason: 'cancelled before it started on instance i-1' });
  });

  it('cancel while starting, start unconfirmed → cancelling', async () => {
    const start = new Deferred<StartOutcome>();
    const h = new ContainerHarness({}, { start: [start] });
    await h.send({ type: 'CANCEL' });
    start.resolve(unconfirmed);
    await h.settle();
    expect(h.state()).toBe('cancelling');
    expect(h.signals()).toEqual(['TERM']);
  });

  it('cancel while uncertain → cancelling, TERM sent', async () => {
    const h = await uncertain();
    await h.send({ type: 'CANCEL' });
    expect(h.state()).toBe('cancelling');
    expect(h.signals()).toEqual(['TERM']);
    expect(h.snapshot.context.cancelRequested).toBe(true);
  });

  it('cancel while running → TERM, KILL after killRetry, KILL again every killRetry; an exit then finishes it', async () => {
    const h = await running();
    await h.send({ type: 'CANCEL' });
    expect(h.state()).toBe('cancelling');
    expect(h.signals()).toEqual(['TERM']);
    expect(h.snapshot.context).toMatchObject({ termDelivered: true, killsSent: 1, lastSignal: 'TERM' });
    await h.advance(delays.killRetry - 1);
    expect(h.signals()).toEqual(['TERM']);
    await h.advance(1);
    expect(h.signals()).toEqual(['TERM', 'KILL']);
    await h.advance(delays.killRetry);
    expect(h.signals()).toEqual(['TERM', 'KILL', 'KILL']);
    expect(h.snapshot.context).toMatchObject({ killsSent: 3, lastSignal: 'KILL' });

    await h.send({ type: 'EXITED', exitCode: 137 });
    expect(h.state()).toBe('done');
    expect(h.details('recordExit')).toEqual([{ uuid: 'c-1', exitCode: 137 }]);
    expect(h.snapshot.output).toEqual({ outcome: 'done', reason: 'cancelled; finished on instance i-1 with exit code 137' });
    await h.advance(delays.killRetry * 3);
    expect(h.signals()).toHaveLength(3);
  });

  it('a TERM call that fails is retried as TERM after killRetry; KILL only after a TERM was delivered', async () => {
    const h = await running({ kill: [new Error('ssh: timeout'), new Error('ssh: timeout'), 'sent'] });
    await h.send({ type: 'CANCEL' });
    expect(h.signals()).toEqual(['TERM']);
    expect(h.snapshot.context).toMatchObject({ termDelivered: false, killsSent: 0, lastSignal: null, lastError: 'ssh: timeout' });
    await h.advance(delays.killRetry - 1);
    expect(h.signals()).toEqual(['TERM']);
    await h.advance(1);
    expect(h.signals()).toEqual(['TERM', 'TERM']);
    await h.advance(delays.killRetry);
    expect(h.signals()).toEqual(['TERM', 'TERM', 'TERM']);
    expect(h.snapshot.context).toMatchObject({ termDelivered: true, killsSent: 1, lastSignal: 'TERM' });
    await h.advance(delays.killRetry);
    expect(h.signals()).toEqual(['TERM', 'TERM', 'TERM', 'KILL']);
  });

  it("kill answered 'gone' → done", async () => {
    const h = await running({ kill: ['gone'] });
    await h.send({ type: 'CANCEL' });
    expect(h.state()).toBe('done');
    expect(h.details('removeContainer')).toEqual([]);
    expect(h.snapshot.output).toEqual({ outcome: 'done', reason: 'cancelled: the runner on instance i-1 has no such container' });
  });

  it('an absent list after since, or the instance going away, ends a cancel done', async () => {
    const listed = await running();
    await listed.send({ type: 'CANCEL' });
    await listed.send({ type: 'RUNNER_LISTED', listedAt: 500, status: { state: 'absent' } });
    expect(listed.state()).toBe('cancelling');
    await listed.send({ type: 'RUNNER_LISTED', listedAt: 1_500, status: { state: 'absent' } });
    expect(listed.state()).toBe('done');
    expect(listed.details('recordRequeue')).toEqual([]);

    const gone = await running();
    await gone.send({ type: 'CANCEL' });
    await gone.send({ type: 'INSTANCE_GONE', reason: 'destroyed' });
    expect(gone.state()).toBe('done');
    expect(gone.snapshot.output).toEqual({ outcome: 'done', reason: 'cancelled: instance i-1 is gone: destroyed' });
  });

  it('an exited list while cancelling finishes it, recording the exit', async () => {
    const h = await running({ logs: [new Deferred<string>()] });
    await h.send({ type: 'CANCEL' });
    await h.send({ type: 'RUNNER_LISTED', listedAt: 2_000, status: { state: 'exited', exitCode: 143 } });
    expect(h.state()).toBe('finishing');
    expect(h.details('recordExit')).toEqual([{ uuid: 'c-1', exitCode: 143 }]);
    await h.advance(delays.killRetry * 2);
    expect(h.signals()).toEqual(['TERM']);
  });
});

describe('adopted after a restart', () => {
  it('initial running: lists up to since are ignored, a later exit finishes it', async () => {
    const h = new ContainerHarness({ initial: 'running', since: 7_000 });
    expect(h.state()).toBe('running');
    expect(h.snapshot.context.reason).toBe('adopted as running on instance i-1');
    expect(h.names()).toEqual([]);
    await h.send({ type: 'RUNNER_LISTED', listedAt: 7_000, status: { state: 'absent' } });
    expect(h.state()).toBe('running');
    await h.send({ type: 'RUNNER_LISTED', listedAt: 7_001, status: { state: 'exited', exitCode: 0 } });
    expect(h.state()).toBe('done');
    expect(h.names()).toEqual(['recordExit', 'collectLogs', 'recordLogs', 'removeContainer']);
  });

  it('initial uncertain: no start call, the deadline still applies', async () => {
    const h = new ContainerHarness({ initial: 'uncertain', since: 7_000 });
    expect(h.state()).toBe('uncertain');
    expect(h.snapshot.hasTag('unconfirmed')).toBe(true);
    await h.advance(delays.uncertainDeadline);
    expect(h.state()).toBe('requeued');
    expect(h.names()).toEqual(['killContainer', 'recordRequeue']);
  });

  it('cancelling on an instance that never answers a kill ends at the deadline, ordering a kill for later', async () => {
    const h = new ContainerHarness({ initial: 'cancelling' }, { kill: [new Error('ssh: timed out')] });
    await h.advance(delays.uncertainDeadline - 1);
    expect(h.state()).toBe('cancelling');
    expect(h.snapshot.hasTag('allocated')).toBe(true);
    await h.advance(1);
    expect(h.state()).toBe('done');
    expect(h.details('orderKill')).toEqual([{ uuid: 'c-1', instanceId: 'i-1' }]);
  });

  it('initial cancelling: sends TERM at once', async () => {
    const h = new ContainerHarness({ initial: 'cancelling' });
    await h.settle();
    expect(h.state()).toBe('cancelling');
    expect(h.snapshot.context.cancelRequested).toBe(true);
    expect(h.signals()).toEqual(['TERM']);
  });
});
