// The last hour of the pool's size and the queue's length, for the web view's chart and totals
// (`GET /history`). Neither the pool nor the queue keeps its past, and the chart must show the
// hour before the page was opened, so the daemon samples them here.
import type { Clock } from '../clock.js';
import type { ContainerState } from '../queue/types.js';

/** One look at the pool and the queue. */
export interface PoolSample {
  /** Clock ms (the daemon's clock) the sample was taken. */
  at: number;
  /** Instances the pool knows, in any state (as `GET /instances` lists them, orphans left out). */
  instances: number;
  /** The pool's hourly spend: what it counts against `maxHourlySpend`. */
  hourlySpend: number;
  /** Containers running, and those locked for a start about to be made. */
  running: number;
  queued: number;
}

/** What the sampler reads of the pool: the Pool in the daemon. */
export interface SampledPool {
  /** Instances the pool knows, of any state. */
  instanceCount(): number;
  hourlySpend(): number;
}

/** What the sampler reads of the queue: its live containers, served from memory. */
export interface SampledQueue {
  pending(): readonly { readonly state: ContainerState }[];
}

/** Every 30 s: 120 points an hour, enough for a chart a few hundred pixels wide. */
export const defaultSampleIntervalMs = 30_000;
export const defaultHistoryWindowMs = 60 * 60_000;

export class PoolHistory {
  readonly intervalMs: number;
  readonly windowMs: number;
  private readonly pool: SampledPool;
  private readonly queue: SampledQueue;
  private readonly clock: Clock;
  // Oldest first; trimmed by age, not count, because a simulated clock can jump past several intervals at once.
  private readonly kept: PoolSample[] = [];
  private timer: unknown = null;

  constructor(options: { pool: SampledPool; queue: SampledQueue; clock: Clock; intervalMs?: number; windowMs?: number }) {
    this.pool = options.pool;
    this.queue = options.queue;
    this.clock = options.clock;
    this.intervalMs = options.intervalMs ?? defaultSampleIntervalMs;
    this.windowMs = options.windowMs ?? defaultHistoryWindowMs;
  }

  /** Takes a sample now and one every intervalMs until stop(); a second start() changes nothing. */
  start(): void {
    if (this.timer !== null) return;
    this.tick();
  }

  stop(): void {
    if (this.timer === null) return;
    this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  /** The samples of the last windowMs, oldest first. */
  samples(): PoolSample[] {
    this.trim(this.clock.now());
    return [...this.kept];
  }

  /** A sample taken now, not kept: the page's totals and the chart's last point. */
  current(): PoolSample {
    let running = 0;
    let queued = 0;
    for (const container of this.queue.pending()) {
      if (container.state === 'queued') queued++;
      else running++;
    }
    return { at: this.clock.now(), instances: this.pool.instanceCount(), hourlySpend: this.pool.hourlySpend(), running, queued };
  }

  private tick(): void {
    const sample = this.current();
    this.kept.push(sample);
    this.trim(sample.at);
    this.timer = this.clock.setTimeout(() => this.tick(), this.intervalMs);
  }

  private trim(now: number): void {
    const oldest = now - this.windowMs;
    let drop = 0;
    while (drop < this.kept.length && (this.kept[drop]?.at ?? Infinity) < oldest) drop++;
    if (drop > 0) this.kept.splice(0, drop);
  }
}
