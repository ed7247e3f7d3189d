// Launch configs under an operator's hand, through the real admin API over HTTP, with the whole
// dispatcher on the stub cloud and steady demand: a paused config creates nothing, a resumed one
// creates again, an archived one creates nothing and its instances drain; and on a restart with a
// config changed in the file, the old id is archived and what it made is drained.
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { launchConfigId, type LaunchConfigSettings } from '../src/config/launch-configs.js';
import { startServer } from '../src/http/server.js';
import type { LaunchConfigView } from '../src/pool/launch-config-view.js';
import { DispatchHarness, queuePath, spec } from './support/dispatch-harness.js';
import { createStub, instanceTypes, useFakeClock } from './support/pool-harness.js';

beforeEach(useFakeClock);
afterEach(() => {
  vi.useRealTimers();
});

const minute = 60_000;
const hour = 60 * minute;
const token = 'admin-token';

function config(zone: string, image: string | null = null, id?: string): LaunchConfigSettings {
  const content = { instanceType: 'small', zone, region: null, subnet: null, image, extra: {} };
  return { id: id ?? launchConfigId(content), ...content, weight: 1, maxInstances: null, initialState: 'active' };
}

/** The launch config id of every create call the stub answers, in order. */
function recordCreates(stub: StubCloud): string[] {
  const ids: string[] = [];
  const create = stub.create.bind(stub);
  stub.create = (request) => {
    ids.push(request.launchConfig?.id ?? '-');
    return create(request);
  };
  return ids;
}

function harness(stub: StubCloud, path: string, launchConfigs: LaunchConfigSettings[]): DispatchHarness {
  return new DispatchHarness(stub, {
    queuePath: path,
    instanceTypes: { small: instanceTypes.small! },
    launchConfigs,
    pool: { maxInstances: 500, maxConcurrentInstanceCreateOps: 10, timeoutIdle: hour, probeInterval: minute, syncInterval: minute },
    scheduler: { pollInterval: 30_000 },
  });
}

async function api(h: DispatchHarness) {
  const server = await startServer(
    { queue: h.queue, pool: h.pool, launchConfigs: h.pool, token, registry: new Registry(), logger: pino({ level: 'silent' }) },
    { address: '127.0.0.1', port: 0 },
  );
  const call = async (method: 'GET' | 'POST', path: string): Promise<{ status: number; body: unknown }> => {
    const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    return { status: response.status, body: await response.json() };
  };
  return { call, close: () => server.close() };
}

/** Runs `minutes` of steady demand (two arrivals per 30 s step) and returns the creates made meanwhile. */
async function demand(h: DispatchHarness, creates: string[], minutes: number): Promise<string[]> {
  const from = creates.length;
  const start = Date.now();
  await h.runUntil(() => Date.now() - start >= minutes * minute, 2 * minutes * minute, 30_000, () => {
    h.queue.submit(spec());
    h.queue.submit(spec());
  });
  return creates.slice(from);
}

const count = (ids: string[], id: string) => ids.filter((each) => each === id).length;

describe('launch configs: pause, resume, archive', () => {
  it('each changes what is created, through the API; archiving drains what the config made', async () => {
    const stub = createStub({ containerRunMs: 10 * hour, bootDelayMs: { min: minute, max: minute } });
    const creates = recordCreates(stub);
    const a = config('zone-a', null, 'a');
    const b = config('zone-b', null, 'b');
    const h = harness(stub, queuePath(), [a, b]);
    h.start();
    const { call, close } = await api(h);
    try {
      const first = await demand(h, creates, 10);
      expect(count(first, 'a')).toBeGreaterThan(5);
      expect(count(first, 'b')).toBeGreaterThan(5);

      expect(await call('POST', '/launch-configs/a/pause')).toMatchObject({ status: 200, body: { id: 'a', state: 'paused' } });
      const paused = await demand(h, creates, 10);
      expect(count(paused, 'a')).toBe(0);
      expect(count(paused, 'b')).toBeGreaterThan(20);

      expect(await call('POST', '/launch-configs/a/resume')).toMatchObject({ status: 200, body: { id: 'a', state: 'active' } });
      const resumed = await demand(h, creates, 10);
      expect(count(resumed, 'a')).toBeGreaterThan(10);

      expect(await call('POST', '/launch-configs/b/archive')).toMatchObject({ status: 200, body: { id: 'b', state: 'archived' } });
      const archived = await demand(h, creates, 10);
      expect(count(archived, 'b')).toBe(0);
      expect(count(archived, 'a')).toBeGreaterThan(20);
      // B's instances drain: each finishes what it runs and is then shut down; none takes new work.
      const bInstances = h.pool.launchConfigs().find((view) => view.id === 'b')!.instances;
      expect(bInstances).toBeGreaterThan(0);
      expect(h.pool.instances().filter((view) => view.idleBehavior === 'drain')).toHaveLength(bInstances);

      const list = (await call('GET', '/launch-configs')).body as { launchConfigs: LaunchConfigView[] };
      expect(list.launchConfigs.map((view) => [view.id, view.state])).toEqual([
        ['a', 'active'],
        ['b', 'archived'],
      ]);
      // Archived is for good; an unknown id is a 404.
      expect((await call('POST', '/launch-configs/b/resume')).status).toBe(409);
      expect((await call('POST', '/launch-configs/nope/pause')).status).toBe(404);
    } finally {
      await close();
      h.stop();
    }
  }, 120_000);

  it('a config changed in the file archives the old id on restart and drains its instances; a pause is kept', async () => {
    const stub = createStub({ containerRunMs: 10 * hour, bootDelayMs: { min: minute, max: minute } });
    const creates = recordCreates(stub);
    const path = queuePath();
    const old = config('zone-a');
    const other = config('zone-b');
    const before = harness(stub, path, [old, other]);
    before.start();
    await demand(before, creates, 5);
    expect(count(creates, old.id)).toBeGreaterThan(0);
    before.pool.changeLaunchConfig(other.id, 'pause');
    before.stop();

    // The same zone with a new image: a new id.
    const changed = config('zone-a', 'image-2');
    expect(changed.id).not.toBe(old.id);
    const after = harness(stub, path, [changed, other]);
    after.start();
    const restarted = await demand(after, creates, 5);
    const views = after.pool.launchConfigs();
    const oldView = views.find((view) => view.id === old.id);
    expect(oldView).toMatchObject({ state: 'archived', inConfig: false });
    expect(views.find((view) => view.id === other.id)).toMatchObject({ state: 'paused', inConfig: true });
    expect(count(restarted, changed.id)).toBeGreaterThan(5);
    expect(count(restarted, old.id) + count(restarted, other.id)).toBe(0);
    // What the old config made drains: set to drain in its tags, so a later restart keeps it so.
    const oldInstances = stub.liveInstances().filter((instance) => instance.tags['drover-launch-config'] === old.id);
    expect(oldInstances.length).toBeGreaterThan(0);
    expect(oldInstances.every((instance) => instance.tags['drover-idle-behavior'] === 'drain')).toBe(true);
    after.stop();
  }, 120_000);
});
