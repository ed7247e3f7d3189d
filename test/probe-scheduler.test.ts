// The probe scheduler on fake timers: a round is handed out fast enough to reach every target within
// one probeInterval, never slower than maxProbesPerSecond and never faster than probeRateCeiling.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../src/clock.js';
import { ProbeScheduler, probeRate, type ProbeSchedulerOptions } from '../src/pool/probe-scheduler.js';

beforeEach(() => {
  vi.useFakeTimers({ now: 0, toFake: ['setTimeout', 'clearTimeout', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});

const interval = 10_000;

/** A scheduler over targets 0..count-1 that records when each probe was handed out. */
function scheduler(count: number, overrides: Partial<ProbeSchedulerOptions<number>> = {}) {
  let targets = Array.from({ length: count }, (_, i) => i);
  const probedAt: number[] = [];
  const firstProbedAt = new Map<number, number>();
  const probes = new ProbeScheduler<number>({
    clock: systemClock,
    probeIntervalMs: interval,
    maxProbesPerSecond: 10,
    probeRateCeiling: 500,
    targets: () => targets,
    probe: (target) => {
      const now = Date.now();
      probedAt.push(now);
      if (!firstProbedAt.has(target)) firstProbedAt.set(target, now);
    },
    ...overrides,
  });
  return {
    probes,
    probedAt,
    /** Targets probed at least once so far. */
    distinct: () => firstProbedAt.size,
    setTargets: (next: number[]) => {
      targets = next;
    },
  };
}

/** The smallest gap between successive probes handed out in [from, to). */
function minGap(times: number[], from: number, to: number): number {
  const inRange = times.filter((t) => t >= from && t < to);
  let gap = Infinity;
  for (let i = 1; i < inRange.length; i++) gap = Math.min(gap, inRange[i]! - inRange[i - 1]!);
  return gap;
}

describe('probeRate', () => {
  it('is what reaches every waiting target in one interval, between the base rate and the ceiling', () => {
    expect(probeRate(1_000, 10_000, 10, 500)).toBe(100);
    expect(probeRate(5, 10_000, 10, 500)).toBe(10);
    expect(probeRate(0, 10_000, 10, 500)).toBe(10);
    expect(probeRate(10_000, 10_000, 10, 500)).toBe(500);
    expect(probeRate(1_000, 10_000, 10, 50)).toBe(50);
    expect(probeRate(300, 2_000, 10, 500)).toBe(150);
  });

  it('keeps the base rate if the ceiling is set below it', () => {
    expect(probeRate(1_000, 10_000, 10, 5)).toBe(10);
  });
});

describe('ProbeScheduler', () => {
  it('1,000 targets, probeInterval 10s, base 10/s: every target is probed within one interval', () => {
    const s = scheduler(1_000);
    s.probes.start();

    vi.advanceTimersByTime(interval - 1);
    expect(s.distinct()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(s.probes.probesPerSecond).toBe(100);
    expect(s.distinct()).toBe(1);

    // 100 per second from the round's start at 10s.
    vi.advanceTimersByTime(5_000);
    expect(s.distinct()).toBe(501);
    vi.advanceTimersByTime(4_980);
    expect(s.distinct()).toBe(999);
    // The last is due at 10s + 999 × 10 ms, inside the interval; one tick later all are done.
    vi.advanceTimersByTime(10);
    expect(s.distinct()).toBe(1_000);
    expect(Math.max(...s.probedAt)).toBeLessThan(2 * interval);
    // Evenly spaced, not in bursts.
    expect(minGap(s.probedAt, interval, 2 * interval)).toBe(10);

    // The next round goes round again at the same pace.
    vi.advanceTimersByTime(interval);
    expect(s.probedAt.length).toBe(2_000);
    expect(s.probes.probesPerSecond).toBe(100);
    s.probes.stop();
  });

  it('with the ceiling at 50/s, 1,000 targets take about 20s to go round', () => {
    const s = scheduler(1_000, { probeRateCeiling: 50 });
    s.probes.start();

    vi.advanceTimersByTime(interval);
    expect(s.probes.probesPerSecond).toBe(50);
    expect(s.distinct()).toBe(1);
    vi.advanceTimersByTime(5_000);
    expect(s.distinct()).toBe(251);
    // One interval after the round began, only half are done; the rest wait in the queue...
    vi.advanceTimersByTime(5_000);
    expect(s.distinct()).toBe(501);
    vi.advanceTimersByTime(5_000);
    expect(s.distinct()).toBe(751);
    vi.advanceTimersByTime(4_970);
    expect(s.distinct()).toBe(999);
    // ...and go first in the next round, so the last is probed 20s after the first.
    vi.advanceTimersByTime(20);
    expect(s.distinct()).toBe(1_000);
    expect(s.probedAt.length).toBe(1_000);
    expect(Math.max(...s.probedAt) - Math.min(...s.probedAt)).toBe(19_980);
    expect(minGap(s.probedAt, 0, 3 * interval)).toBe(20);
    expect(s.probes.probesPerSecond).toBe(50);
    s.probes.stop();
  });

  it('with 5 targets the base rate applies', () => {
    const s = scheduler(5);
    s.probes.start();

    vi.advanceTimersByTime(interval);
    expect(s.probes.probesPerSecond).toBe(10);
    expect(s.distinct()).toBe(1);
    vi.advanceTimersByTime(250);
    expect(s.distinct()).toBe(3);
    vi.advanceTimersByTime(150);
    expect(s.distinct()).toBe(5);
    expect(s.probedAt).toEqual([10_000, 10_100, 10_200, 10_300, 10_400]);

    vi.advanceTimersByTime(interval);
    expect(s.probedAt.slice(5)).toEqual([20_000, 20_100, 20_200, 20_300, 20_400]);
    s.probes.stop();
  });

  it('recomputes the rate each round from the number of targets', () => {
    const s = scheduler(5);
    s.probes.start();
    vi.advanceTimersByTime(interval);
    expect(s.probes.probesPerSecond).toBe(10);

    s.setTargets(Array.from({ length: 2_000 }, (_, i) => i));
    vi.advanceTimersByTime(interval);
    expect(s.probes.probesPerSecond).toBe(200);
    vi.advanceTimersByTime(interval - 5);
    expect(s.distinct()).toBe(2_000);

    s.setTargets([0, 1, 2]);
    vi.advanceTimersByTime(5);
    expect(s.probes.probesPerSecond).toBe(10);
    s.probes.stop();
  });

  it('paces rates finer than the clock\'s 1 ms resolution: 20,000 targets at 2,000/s in one interval', () => {
    const s = scheduler(20_000, { probeRateCeiling: 5_000 });
    s.probes.start();
    vi.advanceTimersByTime(interval);
    expect(s.probes.probesPerSecond).toBe(2_000);
    vi.advanceTimersByTime(interval / 2);
    expect(s.distinct()).toBe(10_001);
    vi.advanceTimersByTime(interval / 2 - 1);
    expect(s.distinct()).toBe(19_999);
    // The last is due half a millisecond before the next round: one tick late at most.
    vi.advanceTimersByTime(1);
    expect(s.distinct()).toBe(20_000);
    // Two per millisecond, never a burst.
    const perMs = new Map<number, number>();
    for (const t of s.probedAt) perMs.set(t, (perMs.get(t) ?? 0) + 1);
    expect(Math.max(...perMs.values())).toBe(2);
    s.probes.stop();
  });

  it('keeps a target still waiting from the last round in its place rather than queueing it twice', () => {
    const s = scheduler(1_000, { probeRateCeiling: 50 });
    s.probes.start();
    vi.advanceTimersByTime(3 * interval - 1);
    // Just under two intervals at 50/s: 1,000 probes, each target exactly once.
    expect(s.probedAt.length).toBe(1_000);
    expect(s.distinct()).toBe(1_000);
    s.probes.stop();
  });

  it('stop() clears its timers and hands out nothing more', () => {
    const s = scheduler(1_000);
    s.probes.start();
    vi.advanceTimersByTime(interval + 1_000);
    const handed = s.probedAt.length;
    s.probes.stop();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(3 * interval);
    expect(s.probedAt.length).toBe(handed);
  });

  it('stops at once when a probe stops it', () => {
    let s: ReturnType<typeof scheduler> | null = null;
    s = scheduler(100, {
      probe: () => {
        s?.probes.stop();
      },
    });
    s.probes.start();
    vi.advanceTimersByTime(interval);
    expect(vi.getTimerCount()).toBe(0);
  });
});
