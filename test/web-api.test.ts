// What the web view reads and is served from: its page and assets (open, with a strict
// Content-Security-Policy), GET /queue in scheduling order, GET /history and its sampler.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SimulatedClock } from 'xstate';
import { afterEach, describe, expect, it } from 'vitest';
import { PoolHistory, type SampledPool, type SampledQueue } from '../src/http/pool-history.js';
import { startServer, type ApiDeps, type HistoryResponse, type QueueResponse } from '../src/http/server.js';
import { contentSecurityPolicy, defaultWebRoot } from '../src/http/web-view.js';
import type { ContainerSpec, ContainerState } from '../src/queue/types.js';
import { apiFixture, type ApiFixture } from './support/api-fixture.js';

const token = 'web-api-token-0123456789';
const distWeb = fileURLToPath(new URL('../dist/web/', import.meta.url));
let fixture: ApiFixture | undefined;
let server: { url: string; close(): Promise<void> } | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
  fixture?.close();
  fixture = undefined;
});

async function start(overrides: Partial<ApiDeps> = {}): Promise<{ url: string; fixture: ApiFixture }> {
  fixture = apiFixture({ prefix: 'drover-web-api-', token });
  server = await startServer({ ...fixture.deps, ...overrides }, { address: '127.0.0.1', port: 0 });
  return { url: server.url, fixture };
}

function get(url: string, path: string, withToken = true): Promise<Response> {
  return fetch(`${url}${path}`, { headers: withToken ? { authorization: `Bearer ${token}` } : {} });
}

const spec = (priority: number): ContainerSpec => ({
  image: null,
  command: ['true'],
  env: {},
  priority,
  constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
});

describe('the web view files', () => {
  // npm test builds before vitest; run `npm run build` first when running this file alone.
  it('are in dist/web after npm run build, where the daemon finds them', () => {
    for (const name of ['index.html', 'app.js', 'style.css']) expect(existsSync(`${distWeb}${name}`), `dist/web/${name}`).toBe(true);
    expect(defaultWebRoot()).toBe(distWeb);
  });

  it('serves the page and its assets without the token, with a Content-Security-Policy', async () => {
    const { url } = await start();
    const page = await get(url, '/', false);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(contentSecurityPolicy);
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await page.text();
    expect(html).toBe(readFileSync(`${distWeb}index.html`, 'utf8'));
    expect(html).toContain('src="web/app.js"');
    // Self-contained: no script, style sheet or font from anywhere else.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);

    const script = await get(url, '/web/app.js', false);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await script.text()).toContain('sessionStorage');
    const style = await get(url, '/web/style.css', false);
    expect(style.status).toBe(200);
    expect(style.headers.get('content-type')).toBe('text/css; charset=utf-8');
  });

  it('serves no other file, and keeps the API behind the token', async () => {
    const { url } = await start();
    expect((await get(url, '/web/app.ts', false)).status).toBe(404);
    expect((await get(url, '/web/..%2Fpackage.json', false)).status).toBe(404);
    expect((await get(url, '/web/index.html.map', false)).status).toBe(404);
    for (const path of ['/instances', '/queue', '/containers']) expect((await get(url, path, false)).status, path).toBe(401);
  });

  it('answers 503 naming npm run build when the web view was not built', async () => {
    const { url } = await start({ webRoot: null });
    const page = await get(url, '/', false);
    expect(page.status).toBe(503);
    expect(((await page.json()) as { error: string }).error).toMatch(/npm run build/);
  });
});

describe('GET /queue', () => {
  it('lists the queued containers in scheduling order with their wait reasons, up to limit, and counts them all', async () => {
    fixture = apiFixture({ prefix: 'drover-web-api-', token });
    const { queue } = fixture;
    const low = queue.submit(spec(0));
    const high = queue.submit(spec(5));
    const locked = queue.submit(spec(9));
    const later = queue.submit(spec(0));
    expect(queue.lock(locked.uuid, 'i-1', 'small')).toBe(true);
    server = await startServer(
      { ...fixture.deps, waitReason: (uuid) => (uuid === high.uuid ? 'at maxInstances (1)' : null) },
      { address: '127.0.0.1', port: 0 },
    );
    const all = (await (await get(server.url, '/queue')).json()) as QueueResponse;
    expect(all.queued).toBe(3);
    expect(all.containers.map((container) => container.uuid)).toEqual([high.uuid, low.uuid, later.uuid]);
    expect(all.containers.map((container) => container.waitReason)).toEqual(['at maxInstances (1)', null, null]);

    const first = (await (await get(server.url, '/queue?limit=1')).json()) as QueueResponse;
    expect(first).toMatchObject({ queued: 3, containers: [{ uuid: high.uuid }] });
    expect((await get(server.url, '/queue?limit=0')).status).toBe(400);
  });
});

/** A pool of `instances` instances at 0.25/h each, and a queue of containers in the given states. */
function sources(): { pool: SampledPool & { count: number }; queue: SampledQueue & { states: ContainerState[] } } {
  const pool = {
    count: 0,
    instanceCount: () => pool.count,
    hourlySpend: () => pool.count * 0.25,
  };
  const queue = { states: [] as ContainerState[], pending: () => queue.states.map((state) => ({ state })) };
  return { pool, queue };
}

describe('PoolHistory', () => {
  it('samples every interval on its clock, keeps the last window, and stops', () => {
    const clock = new SimulatedClock();
    clock.set(1_000_000);
    const { pool, queue } = sources();
    const history = new PoolHistory({ pool, queue, clock, intervalMs: 30_000, windowMs: 120_000 });
    history.start();
    history.start();
    expect(history.samples()).toEqual([{ at: 1_000_000, instances: 0, hourlySpend: 0, running: 0, queued: 0 }]);

    pool.count = 2;
    queue.states = ['running', 'locked', 'queued', 'queued', 'queued'];
    clock.increment(30_000);
    expect(history.samples().at(-1)).toEqual({ at: 1_030_000, instances: 2, hourlySpend: 0.5, running: 2, queued: 3 });
    expect(history.current()).toEqual({ at: 1_030_000, instances: 2, hourlySpend: 0.5, running: 2, queued: 3 });

    for (let step = 0; step < 10; step++) clock.increment(30_000);
    const kept = history.samples();
    // The window is 120 s: at 1,330,000 the samples from 1,210,000 on remain.
    expect(kept.map((sample) => sample.at)).toEqual([1_210_000, 1_240_000, 1_270_000, 1_300_000, 1_330_000]);

    history.stop();
    clock.increment(300_000);
    // Nothing new after stop; what is kept ages out of the window.
    expect(history.samples()).toEqual([]);
    expect(history.current().at).toBe(1_630_000);
  });

  it('is served by GET /history behind the token, started and stopped with the server', async () => {
    const clock = new SimulatedClock();
    clock.set(5_000_000);
    const { pool, queue } = sources();
    pool.count = 1;
    const history = new PoolHistory({ pool, queue, clock });
    const { url } = await start({ history });
    expect((await get(url, '/history', false)).status).toBe(401);
    queue.states = ['queued'];
    clock.increment(30_000);
    const body = (await (await get(url, '/history')).json()) as HistoryResponse;
    expect(body.intervalMs).toBe(30_000);
    expect(body.windowMs).toBe(3_600_000);
    expect(body.samples).toEqual([
      { at: 5_000_000, instances: 1, hourlySpend: 0.25, running: 0, queued: 0 },
      { at: 5_030_000, instances: 1, hourlySpend: 0.25, running: 0, queued: 1 },
    ]);
    expect(body.now).toEqual({ at: 5_030_000, instances: 1, hourlySpend: 0.25, running: 0, queued: 1 });

    await server?.close();
    server = undefined;
    clock.increment(60_000);
    expect(history.samples()).toHaveLength(2);
  });
});
