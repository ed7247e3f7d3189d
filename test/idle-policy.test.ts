// The idle policy's rule on its own (src/pool/idle-policy.ts): which timeout it learns from the
// gaps earlier idle instances saw, per instance type and idle rank. Times are plain numbers: the
// policy reads no clock.
import { describe, expect, it } from 'vitest';
import { AdaptiveIdlePolicy, candidateTimeoutsMs, FixedIdlePolicy, minSamples, rankBucket, type IdlePolicy } from '../src/pool/idle-policy.js';

const minute = 60_000;
const fallback = minute;

/** `count` idle periods of the type at `rank`, each taken again by work after `gapMs`. */
function reused(policy: AdaptiveIdlePolicy, type: string, rank: number, gapMs: number, count = minSamples): void {
  for (let i = 0; i < count; i++) {
    const at = i * 10 * minute;
    policy.wentIdle(`w-${type}-${rank}-${i}`, type, rank, at);
    policy.leftIdle(`w-${type}-${rank}-${i}`, at + gapMs, 'reused');
  }
}

describe('idle policy', () => {
  it('fixed: timeoutIdle for every instance, whatever happened before', () => {
    const policy: IdlePolicy = new FixedIdlePolicy(5 * minute);
    policy.booted('small', 2 * minute);
    expect(policy.timeoutFor('small', 0)).toBe(5 * minute);
    expect(policy.timeoutFor('small', 500)).toBe(5 * minute);
  });

  it('ranks are bucketed 0, 1, 2–3, 4–7, …', () => {
    expect([0, 1, 2, 3, 4, 7, 8, 500].map(rankBucket)).toEqual([0, 1, 2, 2, 3, 3, 4, 9]);
  });

  it('adaptive: timeoutIdle until a boot and enough gaps have been seen in the bucket', () => {
    const policy = new AdaptiveIdlePolicy(fallback);
    reused(policy, 'small', 0, 20_000, minSamples);
    // No boot seen: the price of a cold start is unknown.
    expect(policy.timeoutFor('small', 0)).toBe(fallback);
    policy.booted('small', 2 * minute);
    expect(policy.timeoutFor('small', 0)).toBe(30_000);
    // Another bucket, another type: nothing learned there.
    expect(policy.timeoutFor('small', 1)).toBe(fallback);
    expect(policy.timeoutFor('large', 0)).toBe(fallback);
    const few = new AdaptiveIdlePolicy(fallback);
    few.booted('small', 2 * minute);
    reused(few, 'small', 0, 20_000, minSamples - 1);
    expect(few.timeoutFor('small', 0)).toBe(fallback);
  });

  it('keeps an instance as long as the gaps it learned, when waiting is cheaper than a cold start', () => {
    const policy = new AdaptiveIdlePolicy(fallback);
    policy.booted('small', 2 * minute);
    // Work comes back 2.5 min after each idle start: keeping 3 min (2.5 min of idle) beats
    // 10 s of idle plus a cold start (2 min boot + 2 min waited).
    reused(policy, 'small', 0, 150_000);
    expect(policy.timeoutFor('small', 0)).toBe(3 * minute);
  });

  it('lets an instance go at once when the gaps are longer than a cold start is worth', () => {
    const policy = new AdaptiveIdlePolicy(fallback);
    policy.booted('small', minute);
    // Gaps of 5 min against a cold start of 1 min boot + 1 min waited: not worth keeping.
    reused(policy, 'small', 0, 5 * minute);
    expect(policy.timeoutFor('small', 0)).toBe(candidateTimeoutsMs[0]);
  });

  it('learns a shut-down instance’s gap from the next create of its type, lowest rank first', () => {
    const policy = new AdaptiveIdlePolicy(fallback);
    policy.booted('small', 2 * minute);
    for (let i = 0; i < minSamples; i++) {
      const at = i * 60 * minute;
      // Two go idle (ranks 0 and 8); both are shut down after a minute.
      policy.wentIdle(`a${i}`, 'small', 0, at);
      policy.wentIdle(`b${i}`, 'small', 8, at);
      policy.leftIdle(`a${i}`, at + minute, 'gone');
      policy.leftIdle(`b${i}`, at + minute, 'gone');
      // One create 90 s after they went idle: it would have taken the rank-0 one, had it been kept.
      policy.created('small', at + 90_000);
      // The second create comes after the learning horizon: the rank-8 one waited in vain.
      policy.created('small', at + 40 * minute);
    }
    // Rank 0: gaps of 90 s, kept 2 min (the shortest candidate that covers them).
    expect(policy.timeoutFor('small', 0)).toBe(2 * minute);
    // Rank 8 (bucket 8–15): never used, let go at once.
    expect(policy.timeoutFor('small', 12)).toBe(candidateTimeoutsMs[0]);
  });

  it('learns nothing from an instance the operator held or drained while it waited', () => {
    const policy = new AdaptiveIdlePolicy(fallback);
    policy.booted('small', 2 * minute);
    for (let i = 0; i < minSamples; i++) {
      policy.wentIdle(`h${i}`, 'small', 0, i * minute);
      policy.leftIdle(`h${i}`, i * minute + 5 * minute, 'withdrawn');
      // A create after it: no withdrawn period is there to claim.
      policy.created('small', i * minute + 6 * minute);
    }
    expect(policy.timeoutFor('small', 0)).toBe(fallback);
    // Each gone one is claimed by the next create: gaps of 20 s.
    for (let i = 0; i < minSamples; i++) {
      const at = (100 + i) * minute;
      policy.wentIdle(`g${i}`, 'small', 0, at);
      policy.leftIdle(`g${i}`, at + 10_000, 'gone');
      policy.created('small', at + 20_000);
    }
    expect(policy.timeoutFor('small', 0)).toBe(30_000);
  });

  it('forgets old gaps: the newest 200 decide', () => {
    const policy = new AdaptiveIdlePolicy(fallback);
    policy.booted('small', 2 * minute);
    reused(policy, 'small', 0, 20_000, 200);
    expect(policy.timeoutFor('small', 0)).toBe(30_000);
    // Now 3.5 min: still under a cold start (4 min), so kept 5 min.
    reused(policy, 'small', 0, 210_000, 200);
    expect(policy.timeoutFor('small', 0)).toBe(5 * minute);
  });
});
