// Virtual time for replays and large tests: a Clock whose timers sit in a binary heap and fire one
// instant at a time, with every promise chain they start let run to the end before time moves on.
// vitest's fake timers and XState's SimulatedClock scan every pending timer for each one they fire,
// which with a timer per worker turns minutes of fake time into hours of real time.
import type { Clock } from '../clock.js';

interface HeapTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

function earlier(a: HeapTimer, b: HeapTimer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Lets every pending promise chain run: the stub cloud and SQLite answer without timers. */
function drain(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class HeapClock implements Clock {
  private time: number;
  private seq = 0;
  private readonly heap: HeapTimer[] = [];
  /** Timers fired so far (for the simulator's figures). */
  fired = 0;

  constructor(start = 0) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer: HeapTimer = { at: this.time + Math.max(0, Math.floor(ms)), seq: this.seq++, fn, cancelled: false };
    const heap = this.heap;
    let i = heap.push(timer) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (earlier(heap[parent]!, timer)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = timer;
    return timer;
  }

  clearTimeout(id: unknown): void {
    if (id) (id as HeapTimer).cancelled = true;
  }

  /** Clock ms of the next live timer, or null when none is pending. */
  nextAt(): number | null {
    while (this.heap[0]?.cancelled) this.pop();
    return this.heap[0]?.at ?? null;
  }

  /**
   * Runs every timer due within `ms`, in order. Timers due at the same instant fire together, and
   * then the promise chains they started run, before the clock moves to the next instant;
   * `afterInstant` sees the state each instant left.
   */
  async advance(ms: number, afterInstant?: () => void): Promise<void> {
    const end = this.time + ms;
    await drain();
    for (let at = this.nextAt(); at !== null && at <= end; at = this.nextAt()) {
      this.time = at;
      for (let next = this.heap[0]; next !== undefined && next.at === at; next = this.heap[0]) {
        this.pop();
        if (next.cancelled) continue;
        this.fired++;
        next.fn();
      }
      await drain();
      afterInstant?.();
    }
    this.time = end;
    await drain();
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      let smallest = last;
      let at = i;
      if (left < heap.length && earlier(heap[left]!, smallest)) [smallest, at] = [heap[left]!, left];
      if (left + 1 < heap.length && earlier(heap[left + 1]!, smallest)) [smallest, at] = [heap[left + 1]!, left + 1];
      if (at === i) break;
      heap[i] = smallest;
      i = at;
    }
    heap[i] = last;
  }
}
