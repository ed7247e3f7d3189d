// The instance machine on its own, on a simulated clock: every lifecycle transition and timeout.
import { describe, expect, it } from 'vitest';
import { cloudInstance, InstanceHarness, timeouts } from './support/instance-harness.js';

const created = { createToken: 'tok-1' };

async function bootedIdle(input = {}) {
  const h = new InstanceHarness({ ...created, ...input });
  await h.settle();
  expect(h.lifecycle()).toBe('booting');
  await h.probe();
  expect(h.lifecycle()).toBe('idle');
  return h;
}

describe('instance machine lifecycle', () => {
  it('goes creating → booting → idle → running → idle → shutdown, destroying once', async () => {
    const h = new InstanceHarness(created, { holdCreate: true });
    expect(h.lifecycle()).toBe('creating');
    h.releaseCreate();
    await h.settle();
    expect(h.lifecycle()).toBe('booting');

    h.probeAnswers = [{ booted: true, running: [] }];
    await h.probe();
    expect(h.lifecycle()).toBe('idle');

    h.assign('c-1');
    await h.settle();
    expect(h.lifecycle()).toBe('running');
    expect(h.started).toEqual(['c-1']);
    expect([...h.containers]).toEqual(['c-1']);

    await h.advance(timeouts.timeoutIdle * 2);
    expect(h.lifecycle()).toBe('running');

    h.probeAnswers = [{ booted: true, running: [] }];
    await h.probe();
    expect(h.lifecycle()).toBe('idle');

    await h.advance(timeouts.timeoutIdle - 1);
    expect(h.lifecycle()).toBe('idle');
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toMatch(/timeoutIdle/);
  });

  it('keeps what a listing shows while the create call is in flight, and fails when create fails', async () => {
    const h = new InstanceHarness(created, { holdCreate: true });
    h.actor.send({ type: 'INSTANCE_LISTED', instance: cloudInstance('i-early') });
    expect(h.lifecycle()).toBe('creating');
    expect(h.actor.getSnapshot().context.instance?.id).toBe('i-early');

    const failing = new InstanceHarness(created, { holdCreate: true });
    failing.createOutcome = new Error('boom');
    failing.releaseCreate();
    await failing.settle();
    expect(failing.lifecycle()).toBe('failed');
    expect(failing.actor.getSnapshot().context.lastError).toBe('boom');
  });

  it('a shutdown asked for while creating is carried out when the create returns', async () => {
    const h = new InstanceHarness(created, { holdCreate: true });
    h.actor.send({ type: 'SHUTDOWN_REQUESTED', reason: 'killed by operator' });
    expect(h.lifecycle()).toBe('creating');
    h.releaseCreate();
    await h.settle();
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toMatch(/killed by operator/);
  });

  it('drain while booting shuts the instance down without waiting for the boot', async () => {
    const h = new InstanceHarness(created);
    await h.settle();
    expect(h.lifecycle()).toBe('booting');
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'drain' });
    await h.settle();
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
  });

  it('shuts a running instance down when probes fail for longer than timeoutProbe', async () => {
    const h = await bootedIdle();
    h.assign('c-1');
    await h.settle();
    h.probeAnswers = [new Error('ssh: connection dropped')];
    await h.probe();
    await h.advance(timeouts.timeoutProbe - 1);
    expect(h.lifecycle()).toBe('running');
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
  });

  it('shuts a booting instance down at timeoutBooting when the boot probe never passes', async () => {
    const h = new InstanceHarness(created);
    await h.settle();
    h.probeAnswers = [{ booted: false }];
    await h.probe();
    expect(h.lifecycle()).toBe('booting');
    await h.advance(timeouts.timeoutBooting - 1);
    expect(h.lifecycle()).toBe('booting');
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
  });

  it('shuts an unknown instance down at timeoutBooting when nothing runs, but not one that runs containers', async () => {
    const idle = new InstanceHarness({ instance: cloudInstance('i-found') });
    expect(idle.lifecycle()).toBe('unknown');
    idle.probeAnswers = [new Error('ssh: connect ECONNREFUSED')];
    await idle.probe();
    await idle.advance(timeouts.timeoutBooting);
    expect(idle.lifecycle()).toBe('shutdown');
    expect(idle.destroyed).toEqual(['i-found']);

    const busy = new InstanceHarness({ instance: cloudInstance('i-busy') });
    busy.probeAnswers = [{ booted: true, running: ['c-9'] }];
    await busy.probe();
    expect(busy.lifecycle()).toBe('running');
    await busy.advance(timeouts.timeoutBooting * 2);
    expect(busy.lifecycle()).toBe('running');
    expect(busy.destroyed).toEqual([]);
  });

  it('destroys again after timeoutShutdown only if the instance is still listed', async () => {
    const h = await bootedIdle();
    h.actor.send({ type: 'SHUTDOWN_REQUESTED', reason: 'surplus' });
    await h.settle();
    expect(h.destroyed).toEqual(['i-1']);

    h.actor.send({ type: 'INSTANCE_LISTED', instance: cloudInstance() });
    await h.settle();
    expect(h.destroyed).toHaveLength(1);

    await h.advance(timeouts.timeoutShutdown);
    expect(h.destroyed).toHaveLength(1);
    h.actor.send({ type: 'INSTANCE_LISTED', instance: cloudInstance() });
    await h.settle();
    expect(h.destroyed).toEqual(['i-1', 'i-1']);
  });

  it('shuts an idle instance down when probes fail for longer than timeoutProbe', async () => {
    const h = await bootedIdle();
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    h.probeAnswers = [new Error('ssh: connection dropped')];
    await h.probe();
    await h.advance(timeouts.timeoutProbe);
    expect(h.lifecycle()).toBe('idle');

    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.settle();
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.actor.getSnapshot().context.reason).toMatch(/timeoutProbe/);
  });

  it('forgives failed probes once one succeeds', async () => {
    const h = await bootedIdle();
    h.probeAnswers = [new Error('dropped'), { booted: true, running: ['c-1'] }];
    await h.probe();
    await h.advance(timeouts.timeoutProbe - 1);
    await h.probe();
    expect(h.lifecycle()).toBe('running');
    await h.advance(timeouts.timeoutProbe);
    expect(h.lifecycle()).toBe('running');
  });
});

describe('idle behaviour', () => {
  it('hold: never shut down by idle or boot timeouts, never given work; saved for restarts', async () => {
    const h = await bootedIdle();
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    expect(h.savedBehaviors).toEqual(['hold']);
    await h.advance(timeouts.timeoutIdle * 10);
    expect(h.lifecycle()).toBe('idle');

    h.assign('c-1');
    await h.settle();
    expect(h.lifecycle()).toBe('idle');
    expect(h.started).toEqual([]);

    // Resumed long after its idle time ran out: it takes work again (the resume tests below time it).
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.settle();
    expect(h.lifecycle()).toBe('idle');
    expect(h.assign('c-2')).toBe(true);

    const booting = new InstanceHarness({ ...created, idleBehavior: 'hold' });
    await booting.settle();
    booting.probeAnswers = [{ booted: false }];
    await booting.probe();
    await booting.advance(timeouts.timeoutBooting * 2);
    expect(booting.lifecycle()).toBe('booting');
  });

  it('hold is independent of the lifecycle: a held instance keeps running its containers', async () => {
    const h = await bootedIdle();
    h.assign('c-1');
    await h.settle();
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    expect(h.lifecycle()).toBe('running');
    expect(h.idleBehavior()).toBe('hold');
    h.probeAnswers = [{ booted: true, running: [] }];
    await h.probe();
    expect(h.lifecycle()).toBe('idle');
    await h.advance(timeouts.timeoutIdle * 3);
    expect(h.lifecycle()).toBe('idle');
  });

  it('drain: finishes what runs, then shuts down; takes no new work', async () => {
    const h = await bootedIdle();
    h.assign('c-1');
    await h.settle();
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'drain' });
    h.probeAnswers = [{ booted: true, running: ['c-1'] }];
    await h.probe();
    expect(h.lifecycle()).toBe('running');
    expect(h.destroyed).toEqual([]);

    h.probeAnswers = [{ booted: true, running: [] }];
    await h.probe();
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toBe('drained');
  });

  it('resume: an idle instance held past timeoutIdle and set back to run gets a whole timeoutIdle from the resume', async () => {
    const h = await bootedIdle();
    await h.advance(timeouts.timeoutIdle / 2);
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    await h.advance(timeouts.timeoutIdle * 3);
    expect(h.lifecycle()).toBe('idle');

    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.settle();
    expect(h.lifecycle()).toBe('idle');
    expect(h.savedBehaviors).toEqual(['hold', 'run']);
    await h.advance(timeouts.timeoutIdle - 1);
    expect(h.lifecycle()).toBe('idle');
    expect(h.destroyed).toEqual([]);
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toBe('idle for longer than timeoutIdle');
  });

  it('resume counts from the resume even when the idle time had not run out; run set again on a running-behaviour instance does not restart it', async () => {
    const h = await bootedIdle();
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    await h.advance(timeouts.timeoutIdle - 10);
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.advance(timeouts.timeoutIdle - 1);
    expect(h.lifecycle()).toBe('idle');
    // Already run: the count from the resume goes on.
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
  });

  it('drain → run: a draining running instance set back to run is kept once its containers end, until timeoutIdle', async () => {
    const h = await bootedIdle();
    h.assign('c-1');
    await h.settle();
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'drain' });
    await h.advance(timeouts.timeoutIdle * 3);
    expect(h.lifecycle()).toBe('running');
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.advance(timeouts.timeoutIdle * 3);

    h.setContainers([]);
    await h.settle();
    expect(h.lifecycle()).toBe('idle');
    await h.advance(timeouts.timeoutIdle - 1);
    expect(h.lifecycle()).toBe('idle');
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.actor.getSnapshot().context.reason).toBe('idle for longer than timeoutIdle');
  });

  it('three starts in a row failing for the instance\'s reasons drain it; a start that works resets the count; a container\'s own fault does not count', async () => {
    const h = await bootedIdle();
    const settle = (outcome: 'started' | 'instanceFault' | 'containerFault') => h.actor.send({ type: 'START_SETTLED', outcome });
    settle('instanceFault');
    settle('instanceFault');
    settle('started');
    settle('instanceFault');
    settle('containerFault');
    settle('instanceFault');
    expect(h.idleBehavior()).toBe('run');
    expect(h.actor.getSnapshot().context.failedStarts).toBe(2);
    settle('instanceFault');
    expect(h.idleBehavior()).toBe('drain');
    expect(h.savedBehaviors).toEqual(['drain']);
    await h.settle();
    expect(h.lifecycle()).toBe('shutdown');
  });

  it('restores hold and drain from the instance tag without saving them again', async () => {
    const held = new InstanceHarness({ instance: cloudInstance(), idleBehavior: 'hold' });
    expect(held.idleBehavior()).toBe('hold');
    expect(held.savedBehaviors).toEqual([]);
    await held.advance(timeouts.timeoutBooting * 2);
    expect(held.lifecycle()).toBe('unknown');

    const draining = new InstanceHarness({ instance: cloudInstance(), idleBehavior: 'drain' });
    expect(draining.idleBehavior()).toBe('drain');
    await draining.probe();
    expect(draining.lifecycle()).toBe('shutdown');
  });
});

describe('races', () => {
  it('an idle timeout that fires first turns a start away: the container is not started', async () => {
    const h = await bootedIdle();
    await h.advance(timeouts.timeoutIdle);
    h.assign('c-1');
    await h.settle();
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.started).toEqual([]);
    expect(h.containers.size).toBe(0);
  });

  it('packs: a running instance takes more work, and goes idle only when the last container ends', async () => {
    const h = await bootedIdle();
    expect(h.assign('c-1')).toBe(true);
    expect(h.assign('c-2')).toBe(true);
    expect(h.lifecycle()).toBe('running');
    h.setContainers(['c-2']);
    expect(h.lifecycle()).toBe('running');
    await h.advance(timeouts.timeoutIdle * 2);
    expect(h.lifecycle()).toBe('running');
    h.setContainers([]);
    expect(h.lifecycle()).toBe('idle');
    // timeoutIdle counts from the last container's end, not from when the instance first went idle.
    await h.advance(timeouts.timeoutIdle - 1);
    expect(h.lifecycle()).toBe('idle');
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
  });

  it('a held or draining running instance takes no more work', async () => {
    const h = await bootedIdle();
    h.assign('c-1');
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    expect(h.assign('c-2')).toBe(false);
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'drain' });
    expect(h.assign('c-2')).toBe(false);
    expect([...h.containers]).toEqual(['c-1']);
  });
});

// A timer set while the SimulatedClock is advanced counts from the end of that step, so the
// lifetime and timeoutTERM are stepped over separately.
describe('maxInstanceLifetime', () => {
  const hours = 3_600_000;
  const lifetime = 96 * hours;
  // The pool says when an instance is past its lifetime (it checks ages at each listing); the
  // machine decides what that means.
  const reachLifetime = async (h: InstanceHarness) => {
    h.actor.send({ type: 'LIFETIME_REACHED' });
    await h.settle();
  };

  it('an idle instance past its lifetime is shut down, saying why', async () => {
    const h = await bootedIdle({ maxInstanceLifetime: lifetime });
    expect(h.lifecycle()).toBe('idle');
    await reachLifetime(h);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toBe('reached maxInstanceLifetime 96h');
  });

  it('a running instance past its lifetime takes no new work and shuts down when its container ends', async () => {
    const h = await bootedIdle({ maxInstanceLifetime: lifetime });
    expect(h.assign('c-1')).toBe(true);
    await reachLifetime(h);
    expect(h.lifecycle()).toBe('running');
    // What the pool reads, so the scheduler stops offering it work; the saved tag is untouched.
    expect(h.idleBehavior()).toBe('drain');
    expect(h.savedBehaviors).toEqual([]);
    expect(h.assign('c-2')).toBe(false);
    expect(h.started).toEqual(['c-1']);

    await h.advance(timeouts.timeoutTERM - 1);
    h.setContainers([]);
    await h.settle();
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toBe('reached maxInstanceLifetime 96h');
  });

  it('an instance still running containers timeoutTERM after its lifetime is shut down anyway', async () => {
    const h = await bootedIdle({ maxInstanceLifetime: lifetime });
    h.assign('c-1');
    await reachLifetime(h);
    await h.advance(timeouts.timeoutTERM - 1);
    expect(h.lifecycle()).toBe('running');
    expect(h.destroyed).toEqual([]);
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.destroyed).toEqual(['i-1']);
    expect(h.actor.getSnapshot().context.reason).toBe('containers still running timeoutTERM after it reached maxInstanceLifetime 96h');
  });

  it('an instance found in a listing drains too; without a limit the event changes nothing', async () => {
    const found = new InstanceHarness({ instance: cloudInstance('i-found'), maxInstanceLifetime: lifetime });
    found.probeAnswers = [{ booted: true, running: ['c-9'] }];
    await found.probe();
    await reachLifetime(found);
    await found.advance(timeouts.timeoutTERM);
    expect(found.destroyed).toEqual(['i-found']);

    const unlimited = new InstanceHarness({ instance: cloudInstance('i-old'), maxInstanceLifetime: null });
    unlimited.probeAnswers = [{ booted: true, running: ['c-9'] }];
    await unlimited.probe();
    await reachLifetime(unlimited);
    await unlimited.advance(timeouts.timeoutTERM * 10);
    expect(unlimited.lifecycle()).toBe('running');
    expect(unlimited.assign('c-10')).toBe(true);
  });

  it('hold wins over the lifetime: a held instance is kept; lifted, it drains and gets a whole timeoutTERM', async () => {
    const h = await bootedIdle({ maxInstanceLifetime: lifetime });
    h.assign('c-1');
    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'hold' });
    await reachLifetime(h);
    await h.advance(timeouts.timeoutTERM * 10);
    expect(h.lifecycle()).toBe('running');
    expect(h.idleBehavior()).toBe('hold');
    expect(h.destroyed).toEqual([]);

    h.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await h.settle();
    expect(h.assign('c-2')).toBe(false);
    await h.advance(timeouts.timeoutTERM - 1);
    expect(h.lifecycle()).toBe('running');
    await h.advance(1);
    expect(h.lifecycle()).toBe('shutdown');
    expect(h.actor.getSnapshot().context.reason).toMatch(/timeoutTERM after it reached maxInstanceLifetime 96h/);

    const idle = await bootedIdle({ maxInstanceLifetime: lifetime, idleBehavior: 'hold' });
    await reachLifetime(idle);
    expect(idle.lifecycle()).toBe('idle');
    idle.actor.send({ type: 'IDLE_BEHAVIOR_SET', idleBehavior: 'run' });
    await idle.settle();
    expect(idle.lifecycle()).toBe('shutdown');
    expect(idle.actor.getSnapshot().context.reason).toBe('reached maxInstanceLifetime 96h');
  });
});

