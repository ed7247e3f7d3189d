// A CloudDriver decorator that keeps all calls to a cloud under one client-side rate limit.

import type { Clock } from '../clock.js';
import type { CloudDriver } from './driver.js';

export interface RateLimitOptions {
  maxOpsPerSecond: number;
  clock: Clock;
}

/**
 * Every call, whatever the operation, starts at least 1000/maxOpsPerSecond ms after the previous
 * call started, in the order the calls were made.
 */
export function rateLimited(driver: CloudDriver, options: RateLimitOptions): CloudDriver {
  const { clock, maxOpsPerSecond } = options;
  if (!(maxOpsPerSecond > 0)) throw new RangeError(`maxOpsPerSecond must be positive, got ${maxOpsPerSecond}`);
  const intervalMs = 1000 / maxOpsPerSecond;
  const queue: Array<() => void> = [];
  let lastStartAt = -Infinity;
  let timerPending = false;

  // Spacing is measured from when a call actually started, not when it was planned to, so a late
  // timer never lets two calls through closer together than the limit.
  function pump(): void {
    while (queue.length > 0) {
      const waitMs = lastStartAt + intervalMs - clock.now();
      if (waitMs > 0) {
        if (!timerPending) {
          timerPending = true;
          // Whole ms: timers round fractional delays down, which would wake the pump too early.
          const delayMs = Math.ceil(waitMs);
          clock.setTimeout(() => {
            timerPending = false;
            pump();
          }, delayMs);
        }
        return;
      }
      lastStartAt = clock.now();
      queue.shift()?.();
    }
  }

  function schedule<T>(call: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      queue.push(() => {
        try {
          call().then(resolve, reject);
        } catch (error) {
          reject(error);
        }
      });
      // Runs the call synchronously when nothing is waiting and the limit allows it.
      pump();
    });
  }

  return {
    create: (request) => schedule(() => driver.create(request)),
    list: (tagFilter) => schedule(() => driver.list(tagFilter)),
    destroy: (id) => schedule(() => driver.destroy(id)),
    setTags: (id, tags) => schedule(() => driver.setTags(id, tags)),
  };
}
