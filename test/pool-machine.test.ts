// The pool machine's quota estimate on its own, on a simulated clock: the cap a quota error sets,
// one more after a quiet period, the doubling of that period, and listings that raise the estimate.
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { describe, expect, it } from 'vitest';
import { maxQuotaQuietPeriodMs, poolMachine, type ListingResult } from '../machines/pool.js';

const ttl = 60_000;

function quotaHarness() {
  const clock = new SimulatedClock();
  let notifications = 0;
  const actor = createActor(
    poolMachine.provide({
      // Listings are sent by the test as LISTING_SUCCEEDED; the sync loop's own waits out of the way.
      delays: { syncInterval: 24 * 3_600_000 },
      actors: { syncInstances: fromPromise<ListingResult>(() => Promise.resolve({ instances: 0, at: clock.now() })) },
      actions: { notifyChanged: () => notifications++ },
    }),
    { clock, input: {} },
  );
  actor.start();
  return {
    clock,
    actor,
    notifications: () => notifications,
    quotaError: (instances: number) => actor.send({ type: 'QUOTA_EXCEEDED', instances, at: clock.now() }),
    listed: (instances: number) => actor.send({ type: 'LISTING_SUCCEEDED', instances, at: clock.now() }),
    estimate: () => actor.getSnapshot().context.quota?.instances ?? null,
    probing: () => actor.getSnapshot().matches({ quota: { estimated: 'probing' } }),
    /** Moves the clock a TTL at a time until one more is allowed; returns the TTLs it took. */
    untilProbing(): number {
      for (let ttls = 0; ttls <= 120; ttls++) {
        if (actor.getSnapshot().matches({ quota: { estimated: 'probing' } })) return ttls;
        clock.increment(ttl);
      }
      throw new Error('the estimate never allowed one more within 120 TTLs');
    },
  };
}

describe('pool machine: quota estimate', () => {
  it('has no estimate until a quota error, then caps at the instances that existed', () => {
    const h = quotaHarness();
    expect(h.estimate()).toBeNull();
    h.listed(5);
    expect(h.estimate()).toBeNull();
    h.quotaError(7);
    expect(h.estimate()).toBe(7);
    expect(h.actor.getSnapshot().matches({ quota: { estimated: 'holding' } })).toBe(true);
    h.clock.increment(ttl - 1);
    expect(h.estimate()).toBe(7);
    const before = h.notifications();
    h.clock.increment(1);
    expect(h.probing()).toBe(true);
    expect(h.estimate()).toBe(8);
    expect(h.notifications()).toBe(before + 1);
    // Probing allows one more, once: no further rise without evidence.
    h.clock.increment(10 * ttl);
    expect(h.estimate()).toBe(8);
  });

  it('each failed probe doubles the quiet period, from quotaErrorTTL up to an hour', () => {
    const h = quotaHarness();
    h.quotaError(7);
    const waits: number[] = [];
    for (let probe = 0; probe < 9; probe++) {
      waits.push(h.untilProbing());
      expect(h.estimate()).toBe(8);
      h.quotaError(7);
      expect(h.estimate()).toBe(7);
    }
    expect(waits).toEqual([1, 2, 4, 8, 16, 32, 60, 60, 60]);
    expect(maxQuotaQuietPeriodMs).toBe(60 * ttl);
  });

  it('quota errors from creates already in flight restart the quiet period without doubling it', () => {
    const h = quotaHarness();
    h.quotaError(5);
    h.clock.increment(ttl / 2);
    h.quotaError(5);
    h.quotaError(5);
    expect(h.actor.getSnapshot().context.quota?.doublings).toBe(0);
    h.clock.increment(ttl - 1);
    expect(h.probing()).toBe(false);
    h.clock.increment(1);
    expect(h.probing()).toBe(true);
  });

  it('a listing with more instances than known raises the estimate and starts the quiet periods over', () => {
    const h = quotaHarness();
    h.quotaError(7);
    for (let i = 0; i < 3; i++) {
      h.untilProbing();
      h.quotaError(7);
    }
    expect(h.actor.getSnapshot().context.quota?.doublings).toBe(3);
    // The quota was raised: the allowed one more fitted, and the next step comes after one TTL.
    h.untilProbing();
    h.listed(8);
    expect(h.estimate()).toBe(8);
    expect(h.actor.getSnapshot().context.quota?.doublings).toBe(0);
    h.clock.increment(ttl);
    expect(h.estimate()).toBe(9);
    // Someone else's creates, or a raised quota seen at once: the estimate jumps to what is listed.
    h.listed(12);
    expect(h.estimate()).toBe(12);
    // A quota error with more room than the last one does not double.
    h.clock.increment(ttl);
    h.quotaError(12);
    expect(h.actor.getSnapshot().context.quota?.doublings).toBe(1);
    h.clock.increment(2 * ttl);
    h.quotaError(13);
    expect(h.actor.getSnapshot().context.quota).toMatchObject({ instances: 13, known: 13, doublings: 0 });
  });
});
