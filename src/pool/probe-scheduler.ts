// Starts a probe round every probeInterval and hands out the probes of a round at a steady pace,
// so a large pool does not open hundreds of SSH sessions at once. The pace of a round is what it
// takes to reach every waiting target within one probeInterval, but never below
// maxProbesPerSecond (so a small pool is probed as before) and never above probeRateCeiling
// (so a huge pool cannot flood the network; it then takes several intervals to go round).
import type { Clock } from '../clock.js';

export interface ProbeSchedulerOptions<T> {
  clock: Clock;
  probeIntervalMs: number;
  /** The base rate, probes per second: the pace of a round however few targets it has. */
  maxProbesPerSecond: number;
  /** The highest rate, probes per second, however many targets a round has. Below maxProbesPerSecond, the base rate wins. */
  probeRateCeiling: number;
  /** Who should be probed this round. */
  targets: () => Iterable<T>;
  probe: (target: T) => void;
}

/**
 * The rate (probes per second) that reaches `waiting` targets within one interval, kept between
 * the base rate and the ceiling.
 */
export function probeRate(waiting: number, probeIntervalMs: number, baseRate: number, ceiling: number): number {
  const needed = waiting / (probeIntervalMs / 1000);
  return Math.max(baseRate, Math.min(ceiling, needed));
}

/**
 * A pump timer that fires late (a busy event loop) catches up at most this much of its schedule at
 * once; the rest of the lag is dropped, so the pace never turns into a burst.
 */
const maxCatchUpMs = 50;

export class ProbeScheduler<T> {
  // A FIFO read from `head`: Array.shift() would copy a 10,000-entry queue for every probe.
  private queue: T[] = [];
  private head = 0;
  private readonly queued = new Set<T>();
  private roundTimer: unknown = null;
  private pumpTimer: unknown = null;
  private stopped = true;
  private rate: number;
  /** Clock ms (fractional) at which the next probe is due while the pump runs. */
  private nextDueAt = 0;

  constructor(private readonly options: ProbeSchedulerOptions<T>) {
    this.rate = options.maxProbesPerSecond;
  }

  /** Probes per second of the current round (the base rate before the first round). */
  get probesPerSecond(): number {
    return this.rate;
  }

  start(): void {
    this.stopped = false;
    this.scheduleRound();
  }

  stop(): void {
    this.stopped = true;
    const { clock } = this.options;
    if (this.roundTimer !== null) clock.clearTimeout(this.roundTimer);
    if (this.pumpTimer !== null) clock.clearTimeout(this.pumpTimer);
    this.roundTimer = this.pumpTimer = null;
    this.queue = [];
    this.head = 0;
    this.queued.clear();
  }

  private scheduleRound(): void {
    this.roundTimer = this.options.clock.setTimeout(() => {
      this.roundTimer = null;
      if (this.stopped) return;
      // A target still waiting from the last round keeps its place rather than queueing twice.
      for (const target of this.options.targets()) {
        if (this.queued.has(target)) continue;
        this.queued.add(target);
        this.queue.push(target);
      }
      const { probeIntervalMs, maxProbesPerSecond, probeRateCeiling } = this.options;
      this.rate = probeRate(this.queue.length - this.head, probeIntervalMs, maxProbesPerSecond, probeRateCeiling);
      if (this.pumpTimer === null) {
        // The last probe of an earlier round still sets the spacing to the first of this one.
        this.nextDueAt = Math.max(this.nextDueAt, this.options.clock.now());
        this.pump();
      }
      // A probe may have stopped the scheduler.
      if (!this.stopped) this.scheduleRound();
    }, this.options.probeIntervalMs);
  }

  // Probe k after the pump started is due at start + k / rate; each pump hands out every probe due
  // by now (more than one when the rate is above the clock's 1 ms resolution) and sleeps until the
  // next is due. Keeping the schedule in absolute time makes rounding of timer delays harmless.
  private pump(): void {
    this.pumpTimer = null;
    if (this.stopped) return;
    const { clock } = this.options;
    const now = clock.now();
    this.nextDueAt = Math.max(this.nextDueAt, now - maxCatchUpMs);
    while (this.nextDueAt <= now) {
      const target = this.dequeue();
      if (target === undefined) return;
      this.queued.delete(target);
      this.options.probe(target);
      // probe() may have stopped the scheduler.
      if (this.stopped) return;
      this.nextDueAt += 1000 / this.rate;
    }
    if (this.head === this.queue.length) return;
    this.pumpTimer = clock.setTimeout(() => this.pump(), Math.ceil(this.nextDueAt - now));
  }

  private dequeue(): T | undefined {
    if (this.head === this.queue.length) return undefined;
    const target = this.queue[this.head++];
    // Drop the consumed front once it is most of the array, so each entry is copied O(1) times.
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return target;
  }
}
