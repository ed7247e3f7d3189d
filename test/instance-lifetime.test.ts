// maxInstanceLifetime through the whole dispatcher (stub cloud, SQLite queue, fake timers): what
// runs on an instance shut down timeoutTERM after its lifetime is requeued and runs elsewhere, once.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { stubRunMsEnv } from '../src/cloud/stub/stub-cloud.js';
import { createStub, useFakeClock } from './support/pool-harness.js';
import { DispatchHarness, spec } from './support/dispatch-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

describe('maxInstanceLifetime', () => {
  it('a container still running timeoutTERM after its instance\'s lifetime is requeued and completes on another instance, started once there', async () => {
    // Lifetime 60s (the pool checks ages at each listing, every 5s here), timeoutTERM 10s, one
    // instance at a time: a 60s container that follows a 20s one on the first instance outlives
    // it; its second run, on a fresh instance, ends within that one's lifetime plus timeoutTERM.
    const stub = createStub({ bootDelayMs: { min: 1_000, max: 1_000 } });
    const h = new DispatchHarness(stub, { pool: { maxInstanceLifetime: 60_000, timeoutTERM: 10_000, maxInstances: 1, syncInterval: 5_000 } });
    h.start();
    const runFor = (ms: number, priority: number) => h.queue.submit(spec({ env: { [stubRunMsEnv]: String(ms) }, priority }));
    const before = runFor(20_000, 10);
    const container = runFor(60_000, 1);
    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'running', 30_000)).toBe(true);
    const first = h.queue.get(before.uuid)!.instanceId!;
    expect(h.queue.get(container.uuid)?.instanceId).toBe(first);

    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state !== 'running', 60_000)).toBe(true);
    expect(stub.liveInstances().map((instance) => instance.id)).not.toContain(first);
    expect(h.queue.get(container.uuid)).toMatchObject({ state: 'queued', attempts: 1 });

    expect(await h.runUntil(() => h.queue.get(container.uuid)?.state === 'complete', 120_000)).toBe(true);
    expect(h.queue.get(container.uuid)).toMatchObject({ attempts: 2, exitCode: 0 });
    expect(h.queue.get(container.uuid)?.instanceId).not.toBe(first);
    expect(h.starts.get(container.uuid)).toBe(2);
    h.stop();
  });
});
