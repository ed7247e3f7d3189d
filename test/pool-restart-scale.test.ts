// Test 9: a restart over a large pool. Every instance the first listing finds must be probed before
// timeoutBooting may judge it, or healthy instances that were merely not asked yet are destroyed;
// the instances that really do not answer must still go at timeoutBooting.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HeapClock } from '../src/sim/heap-clock.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { Pool } from '../src/pool/pool.js';
import type { CommandResult, Executor, ExecutorTarget } from '../src/ssh/executor.js';
import {
  advance,
  createStub,
  instanceTypes,
  PoolHarness,
  poolName,
  poolSettings,
  poolTags,
  settle,
  useFakeClock,
} from './support/pool-harness.js';

const second = 1_000;
const minute = 60_000;
const timeoutBooting = poolSettings().timeoutBooting;

describe('restart at scale', () => {
  it('restart with 10,000 instances on the stub at default settings: none of the healthy ones is destroyed', async () => {
    const count = 10_000;
    const clock = new HeapClock();
    const stub = new StubCloud({ clock, bootProbeCommand: 'true', runnerCommand: 'drover-runner' });
    for (let i = 0; i < count; i++) stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small'), booted: true });
    const warnings: string[] = [];
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        warnings.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });
    // Default settings but one: idle instances would be reaped after timeoutIdle (1m), which is
    // not what this test is about.
    const settings = poolSettings({ timeoutIdle: 60 * minute });
    expect(settings).toMatchObject({ syncInterval: minute, probeInterval: 10 * second, maxProbesPerSecond: 10, probeRateCeiling: 500 });
    const pool = new Pool({
      poolName,
      driver: stub,
      executorFor: (target) => stub.executorFor(target),
      settings,
      instanceTypes,
      logger: pino({ level: 'warn' }, sink),
      clock,
    });

    pool.start();
    await clock.advance(0);
    expect(pool.countByState().unknown).toBe(count);

    // The first round (at 10s) has 10,000 targets: 1,000/s would reach them in one interval, the
    // ceiling holds it at 500/s, so all are probed by 30s. At the base rate it would take 1,000s.
    await clock.advance(30 * second);
    expect(pool.countByState().idle).toBe(count);

    // On past timeoutBooting, whose timer every worker started at the first listing (at 0s).
    const end = timeoutBooting + 5 * second;
    while (clock.now() < end) {
      await clock.advance(Math.min(minute, end - clock.now()));
      expect(stub.callCounts.destroy).toBe(0);
    }
    expect(stub.callCounts.destroy).toBe(0);
    expect(stub.liveCount()).toBe(count);
    expect(pool.countByState()).toMatchObject({ idle: count, unknown: 0, shutdown: 0, failed: 0 });
    expect(pool.instances().every((view) => view.state === 'idle')).toBe(true);
    expect(warnings).toEqual([]);
    pool.stop();
  }, 120_000);

  describe('200 instances on vitest fake timers', () => {
    beforeEach(useFakeClock);
    afterEach(() => {
      vi.useRealTimers();
    });

    it('the 20 that never answer are shut down at timeoutBooting, the 180 healthy are not', async () => {
      const stub = createStub();
      const ids = Array.from({ length: 200 }, () => stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small'), booted: true }).id);
      // Three ways of not answering: a VM that never boots, SSH refused, and SSH that hangs.
      const neverBoots = new Set(ids.slice(0, 7));
      const refuses = new Set(ids.slice(7, 14));
      const hangs = new Set(ids.slice(14, 20));
      const silent = new Set([...neverBoots, ...refuses, ...hangs]);
      for (const id of neverBoots) stub.getVm(id)!.bootAt = Infinity;
      const executorFor = (target: ExecutorTarget): Executor => {
        const real = stub.executorFor(target);
        return {
          ...real,
          run: (command, options): Promise<CommandResult> => {
            if (refuses.has(target.id)) return Promise.reject(new Error(`ssh: connect ECONNREFUSED ${target.address}`));
            if (hangs.has(target.id)) return new Promise<never>(() => {});
            return real.run(command, options);
          },
        };
      };
      const h = new PoolHarness(stub, { timeoutIdle: 60 * minute }, executorFor);
      await h.start();
      expect(h.pool.countByState().unknown).toBe(200);

      // 200 targets per 10s interval: 20/s, above the base rate of 10/s.
      await advance(20 * second);
      expect(h.pool.countByState()).toMatchObject({ idle: 180, unknown: 20 });

      await advance(timeoutBooting - 20 * second - 1);
      expect(stub.callCounts.destroy).toBe(0);
      expect(h.pool.countByState()).toMatchObject({ idle: 180, unknown: 20 });

      await advance(1);
      await settle();
      expect(stub.callCounts.destroy).toBe(20);
      const shutdowns = h.logsWith('instance state changed').filter((line) => line.to === 'shutdown');
      expect(shutdowns.map((line) => line.instanceId).sort()).toEqual([...silent].sort());
      for (const line of shutdowns) expect(line.reason).toBe('not seen booted within timeoutBooting');

      // The next listing no longer shows them, and the pool forgets them; no one else goes.
      await advance(90 * second);
      expect(stub.callCounts.destroy).toBe(20);
      expect(stub.liveCount()).toBe(180);
      expect(stub.liveInstances().some((instance) => silent.has(instance.id))).toBe(false);
      expect(h.pool.countByState()).toMatchObject({ idle: 180, unknown: 0, shutdown: 0 });
      h.pool.stop();
    });

    it('instances the probes have not reached by timeoutBooting are kept, and probed later', async () => {
      const stub = createStub();
      for (let i = 0; i < 200; i++) stub.addInstance({ instanceType: instanceTypes.small!, tags: poolTags('small'), booted: true });
      // Pinned at 0.25 probes/s, 200 instances take 800s to reach: longer than timeoutBooting.
      const h = new PoolHarness(stub, { timeoutIdle: 60 * minute, maxProbesPerSecond: 0.25, probeRateCeiling: 0.25 });
      await h.start();

      await advance(timeoutBooting + 10 * second);
      const { idle, unknown } = h.pool.countByState();
      expect(unknown).toBeGreaterThan(0);
      expect(idle + unknown).toBe(200);
      expect(stub.callCounts.destroy).toBe(0);

      await advance(4 * minute);
      expect(h.pool.countByState().idle).toBe(200);
      expect(stub.callCounts.destroy).toBe(0);
      expect(stub.liveCount()).toBe(200);
      h.pool.stop();
    });
  });
});
