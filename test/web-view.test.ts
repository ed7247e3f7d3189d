// The web view in a real browser: Debian's chromium, driven by playwright-core, against a real
// daemon on the stub cloud (one seeded instance, real time). The operator enters the token, sees
// the instance, holds it, and the API says it is held; then kills it. Screenshots go to test-output/.
// CI installs chromium (.ci/run); elsewhere install it (apt-get install chromium) or point
// CHROMIUM_PATH at one. Without it this file fails, never skips: the acceptance test must run.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import type { InstancesResponse, PoolInstanceEntry } from '../src/http/server.js';
import { shippedConfig } from './support/shipped-config.js';

const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const outputDir = fileURLToPath(new URL('../test-output/', import.meta.url));
const webIndex = fileURLToPath(new URL('../dist/web/index.html', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'drover-web-view-'));

// The stub demo with one seeded instance that outlives the test, and room for no second one, so
// a container needing another type waits in the queue (the held instance is never surplus).
const config = parseConfig(
  shippedConfig('stub.yml', {
    'http.port': 0,
    'cloud.stub.seedInstances': [{ instanceType: 'small', count: 1, idleBehavior: 'run' }],
    'cloud.stub.bootDelay': { min: '1s', max: '1s' },
    'pool.maxInstances': 1,
    'pool.timeoutIdle': '10m',
    'log.level': 'silent',
  }),
  'config/stub.yml (test copy)',
  { home: dir },
);

let daemon: Daemon | undefined;
let browser: Browser | undefined;
let page: Page | undefined;
let token: string;
let screenshotTaken = false;

async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  if (daemon === undefined) throw new Error('no daemon');
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${daemon.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

async function poolInstance(workerId: string): Promise<PoolInstanceEntry | undefined> {
  const { instances } = await api<InstancesResponse>('GET', '/instances');
  return instances.find((entry): entry is PoolInstanceEntry => !entry.orphan && entry.workerId === workerId);
}

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`no chromium at ${chromiumPath}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM_PATH`);
  }
  if (!existsSync(webIndex)) throw new Error(`${webIndex} is missing: run npm run build first (npm test does)`);
  mkdirSync(outputDir, { recursive: true });
  daemon = await startDaemon(config, { logger: pino({ level: 'silent' }) });
  token = readFileSync(config.http.tokenFile, 'utf8').trim();
  // Chromium's sandbox refuses to start as root, which CI is.
  browser = await chromium.launch({ executablePath: chromiumPath, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
});

afterAll(async () => {
  try {
    if (page !== undefined && !screenshotTaken) await page.screenshot({ path: join(outputDir, 'web-view-failure.png'), fullPage: true }).catch(() => undefined);
    await browser?.close();
  } finally {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('web view', () => {
  it('asks for the token, shows the instance, holds it through the API, shows the queue and its transitions, and kills it', async () => {
    if (browser === undefined || daemon === undefined) throw new Error('not started');
    page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      // A CSP violation is reported on the console only; the page must cause none.
      if (message.type() === 'error') pageErrors.push(message.text());
    });
    await page.goto(daemon.url);

    await page.locator('#token-input').fill(token);
    await page.getByRole('button', { name: 'Connect' }).click();
    expect(await page.evaluate(() => sessionStorage.getItem('drover-token'))).toBe(token);

    // The seeded instance appears once the pool's first listing finds it.
    const row = page.locator('tr.instance').first();
    await row.waitFor({ timeout: 15_000 });
    const workerId = await row.getAttribute('data-worker');
    expect(workerId).not.toBeNull();
    const instanceRow = page.locator(`tr.instance[data-worker="${workerId}"]`);
    await expect.poll(async () => (await poolInstance(workerId ?? ''))?.idleBehavior).toBe('run');
    await expect.poll(() => page?.locator('#total-instances').textContent()).toBe('1');

    await instanceRow.locator('button[data-action="hold"]').click();
    await expect.poll(async () => (await poolInstance(workerId ?? ''))?.idleBehavior, { timeout: 5_000 }).toBe('hold');
    await instanceRow.locator('td.idle-behavior', { hasText: 'hold' }).waitFor({ timeout: 5_000 });
    expect(await instanceRow.locator('button[data-action="hold"]').isDisabled()).toBe(true);

    // A container no small instance can take waits: maxInstances is 1 and the held instance stays.
    const waiting = await api<{ uuid: string }>('POST', '/containers', { command: ['true'], constraints: { vcpus: 8 } });
    const queued = page.locator(`#queue tr[data-uuid="${waiting.uuid}"]`);
    await queued.waitFor({ timeout: 10_000 });
    expect(await queued.locator('td').first().textContent()).toBe('1');
    await expect.poll(() => queued.locator('td.wait-reason').textContent(), { timeout: 10_000 }).toMatch(/maxInstances/);
    await expect.poll(() => page?.locator('#total-queued').textContent()).toBe('1');

    // Its transitions, on click.
    await instanceRow.locator('td.id').click();
    await page.locator('#history-section').waitFor();
    expect(await page.locator('#history tbody tr').count()).toBeGreaterThan(0);
    expect(await page.locator('#chart polyline').count()).toBe(2);

    await page.screenshot({ path: join(outputDir, 'web-view.png'), fullPage: true });
    screenshotTaken = true;

    // The token outlives a reload (session storage), and nothing went wrong in the page.
    await page.reload();
    await page.locator('tr.instance').first().waitFor({ timeout: 5_000 });
    expect(await page.locator('#token-form').isHidden()).toBe(true);

    // Kill asks first; accepted, the instance is shut down (held or not: the operator's kill always works).
    const asked: string[] = [];
    page.once('dialog', (dialog) => {
      asked.push(dialog.message());
      void dialog.accept();
    });
    await instanceRow.locator('button[data-action="kill"]').click();
    await expect.poll(async () => (await poolInstance(workerId ?? ''))?.state ?? 'gone', { timeout: 5_000 }).toMatch(/^(shutdown|gone)$/);
    expect(asked).toEqual([expect.stringMatching(/^Kill stub-/)]);
    expect(pageErrors).toEqual([]);
  });

  it('asks again when the daemon refuses the token', async () => {
    if (browser === undefined || daemon === undefined) throw new Error('not started');
    // A context of its own: a fresh session storage.
    const context = await browser.newContext();
    try {
      const other = await context.newPage();
      await other.goto(daemon.url);
      await other.locator('#token-input').fill('not-the-token');
      await other.getByRole('button', { name: 'Connect' }).click();
      await other.locator('#token-error', { hasText: 'refused' }).waitFor({ timeout: 5_000 });
      expect(await other.locator('#view').isHidden()).toBe(true);
      expect(await other.evaluate(() => sessionStorage.getItem('drover-token'))).toBeNull();
    } finally {
      await context.close();
    }
  });
});
