// The launch-config and capacity-scope machines on their own, on a simulated clock: the breaker
// (break, cool, one trial, doubling waits, restored by a boot), the operator's states, the retry
// timer, the weight's window, and a capacity back-off with the shortage it continues.
import { createActor, SimulatedClock } from 'xstate';
import { describe, expect, it } from 'vitest';
import { capacityScopeMachine } from '../machines/capacity-scope.js';
import {
  effectiveWeight,
  firstBreakerDelayMs,
  launchConfigMachine,
  maxBreakerDelayMs,
  recentOutcomes,
  type LaunchConfigEvent,
} from '../machines/launch-config.js';

const minute = 60_000;
const hour = 60 * minute;

function configHarness(initialState: 'active' | 'paused' | 'archived' = 'active') {
  const clock = new SimulatedClock();
  let notifications = 0;
  const actor = createActor(launchConfigMachine.provide({ actions: { notifyChanged: () => notifications++ } }), {
    clock,
    input: { id: 'lc', initialState, bootFailuresToBreak: 3, healthWindowMs: hour, retryIntervalMs: 5 * minute },
  });
  actor.start();
  const send = (event: LaunchConfigEvent) => actor.send(event);
  const at = () => clock.now();
  return {
    clock,
    actor,
    notifications: () => notifications,
    tags: () => [...actor.getSnapshot().tags].sort(),
    started: (workerId: string) => send({ type: 'CREATE_STARTED', at: at(), workerId }),
    booted: (workerId: string) => send({ type: 'BOOTED', at: at(), workerId }),
    bootFailed: (workerId: string) => send({ type: 'BOOT_FAILED', at: at(), workerId, message: 'boot probe did not pass' }),
    createFailed: (workerId: string, breaksImage: boolean) => send({ type: 'CREATE_FAILED', at: at(), workerId, message: 'refused', breaksImage }),
    send,
  };
}

describe('launch config machine: the breaker', () => {
  it('breaks at the third boot failure in a row, not at two with a boot between', () => {
    const h = configHarness();
    h.bootFailed('w1');
    h.bootFailed('w2');
    h.booted('w3');
    h.bootFailed('w4');
    h.bootFailed('w5');
    expect(h.actor.getSnapshot().hasTag('healthy')).toBe(true);
    h.bootFailed('w6');
    expect(h.actor.getSnapshot().hasTag('cooling')).toBe(true);
    expect(h.actor.getSnapshot().context.consecutiveBootFailures).toBe(3);
  });

  it('create errors of no other class count like failed boots; capacity ones do not', () => {
    const h = configHarness();
    h.createFailed('w1', false);
    h.createFailed('w2', false);
    h.createFailed('w3', false);
    expect(h.actor.getSnapshot().hasTag('healthy')).toBe(true);
    h.createFailed('w4', true);
    h.createFailed('w5', true);
    h.createFailed('w6', true);
    expect(h.actor.getSnapshot().hasTag('broken')).toBe(true);
  });

  it('cools 1 min, allows one trial, doubles the wait on each failed trial up to 30 min, and one boot restores it', () => {
    const h = configHarness();
    for (const id of ['w1', 'w2', 'w3']) h.bootFailed(id);
    const waits: number[] = [];
    for (let trial = 0; trial < 8; trial++) {
      const cooledFrom = h.clock.now();
      const { breakerDelayMs } = h.actor.getSnapshot().context;
      h.clock.increment(breakerDelayMs - 1);
      expect(h.actor.getSnapshot().hasTag('cooling')).toBe(true);
      h.clock.increment(1);
      expect(h.actor.getSnapshot().hasTag('trialReady')).toBe(true);
      waits.push(h.clock.now() - cooledFrom);
      h.started(`trial-${trial}`);
      expect(h.actor.getSnapshot().hasTag('trialRunning')).toBe(true);
      // Another instance's failure is not the trial's verdict.
      h.bootFailed('w-old');
      expect(h.actor.getSnapshot().hasTag('trialRunning')).toBe(true);
      h.clock.increment(10 * minute);
      h.bootFailed(`trial-${trial}`);
    }
    expect(waits).toEqual([1, 2, 4, 8, 16, 30, 30, 30].map((m) => m * minute));
    expect(firstBreakerDelayMs).toBe(minute);
    expect(maxBreakerDelayMs).toBe(30 * minute);
    h.clock.increment(30 * minute);
    h.started('trial-good');
    h.booted('trial-good');
    expect(h.tags()).toContain('healthy');
    expect(h.actor.getSnapshot().context).toMatchObject({ consecutiveBootFailures: 0, breakerDelayMs: minute });
  });

  it('a trial shut down before its verdict, or refused for capacity, leaves the trial to come', () => {
    const h = configHarness();
    for (const id of ['w1', 'w2', 'w3']) h.bootFailed(id);
    h.clock.increment(minute);
    h.started('t1');
    h.send({ type: 'INSTANCE_ENDED', workerId: 't1' });
    expect(h.actor.getSnapshot().hasTag('trialReady')).toBe(true);
    h.started('t2');
    h.createFailed('t2', false);
    expect(h.actor.getSnapshot().hasTag('trialReady')).toBe(true);
    h.started('t3');
    h.createFailed('t3', true);
    expect(h.actor.getSnapshot().hasTag('cooling')).toBe(true);
    expect(h.actor.getSnapshot().context.breakerDelayMs).toBe(2 * minute);
  });
});

describe('launch config machine: operator states and retry', () => {
  it('pause, resume and archive; archived is for good', () => {
    const h = configHarness();
    h.send({ type: 'PAUSE' });
    expect(h.tags()).toContain('paused');
    h.send({ type: 'RESUME' });
    expect(h.tags()).toContain('active');
    h.send({ type: 'ARCHIVE' });
    expect(h.tags()).toContain('archived');
    expect(h.actor.getSnapshot().can({ type: 'RESUME' })).toBe(false);
    expect(h.actor.getSnapshot().can({ type: 'PAUSE' })).toBe(false);
    expect(configHarness('paused').tags()).toContain('paused');
    expect(configHarness('archived').tags()).toContain('archived');
  });

  it('a retry falls due retryInterval after the last create, and says so', () => {
    const h = configHarness();
    expect(h.tags()).toContain('retryDue');
    h.started('w1');
    expect(h.tags()).not.toContain('retryDue');
    h.clock.increment(4 * minute);
    h.started('w2');
    h.clock.increment(5 * minute - 1);
    expect(h.tags()).not.toContain('retryDue');
    const before = h.notifications();
    h.clock.increment(1);
    expect(h.tags()).toContain('retryDue');
    expect(h.notifications()).toBe(before + 1);
  });

  it('weighs the config by its boot success rate over the window, the full weight with nothing in it', () => {
    const h = configHarness();
    const context = () => h.actor.getSnapshot().context;
    expect(effectiveWeight(context(), 2, h.clock.now())).toBe(2);
    h.booted('w1');
    h.booted('w2');
    h.bootFailed('w3');
    h.send({ type: 'VANISHED_EARLY', at: h.clock.now(), workerId: 'w1', message: 'vanished' });
    expect(recentOutcomes(context(), h.clock.now())).toEqual({ successes: 2, failures: 2 });
    expect(effectiveWeight(context(), 2, h.clock.now())).toBe(1);
    h.clock.increment(hour + minute);
    expect(effectiveWeight(context(), 2, h.clock.now())).toBe(2);
  });
});

describe('capacity scope machine', () => {
  it('backs off for one back-off, restarts on a later error, and keeps a shortage that continues within one back-off', () => {
    const clock = new SimulatedClock();
    let ended = 0;
    const scope = createActor(capacityScopeMachine.provide({ actions: { notifyChanged: () => ended++ } }), { clock, input: { backoffMs: minute } });
    scope.start();
    scope.send({ type: 'CAPACITY_ERROR', at: clock.now(), message: 'no room' });
    expect(scope.getSnapshot().hasTag('backingOff')).toBe(true);
    clock.increment(30_000);
    scope.send({ type: 'CAPACITY_ERROR', at: clock.now(), message: 'no room' });
    clock.increment(minute - 1);
    expect(scope.getSnapshot().hasTag('backingOff')).toBe(true);
    clock.increment(1);
    expect(scope.getSnapshot().hasTag('backingOff')).toBe(false);
    expect(ended).toBe(1);
    // Within one back-off of the last one's end: the same shortage.
    clock.increment(30_000);
    scope.send({ type: 'CAPACITY_ERROR', at: clock.now(), message: 'no room' });
    expect(scope.getSnapshot().context.since).toBe(0);
    clock.increment(3 * minute);
    scope.send({ type: 'CAPACITY_ERROR', at: clock.now(), message: 'no room' });
    expect(scope.getSnapshot().context.since).toBe(clock.now());
  });
});
