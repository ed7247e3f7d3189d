// Starts a probe round every probeInterval and hands out the probes of a round no faster than
// maxProbesPerSecond, so a large pool does not open hundreds of SSH sessions at once.
import type { Clock } from '../clock.js';

export interface ProbeSchedulerOptions<T> {
  clock: Clock;
  probeIntervalMs: number;
  maxProbesPerSecond: number;
  /** Who should be probed this round. */
  targets: () => Iterable<T>;
  probe: (target: T) => void;
}

export class ProbeScheduler<T> {
  private readonly queue: T[] = [];
  private readonly queued = new Set<T>();
  private roundTimer: unknown = null;
  private pumpTimer: unknown = null;
  private stopped = true;

  constructor(private readonly options: ProbeSchedulerOptions<T>) {}

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
    this.queue.length = 0;
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
      if (this.pumpTimer === null) this.pump();
      this.scheduleRound();
    }, this.options.probeIntervalMs);
  }

  private pump(): void {
    this.pumpTimer = null;
    if (this.stopped) return;
    const target = this.queue.shift();
    if (target === undefined) return;
    this.queued.delete(target);
    this.options.probe(target);
    this.pumpTimer = this.options.clock.setTimeout(() => this.pump(), 1000 / this.options.maxProbesPerSecond);
  }
}
