// End to end on the loopback driver: a real daemon (real SSH to sandboxes, real runner processes,
// a real SQLite file, the real HTTP API and CLI). Time inside the daemon is a SimulatedClock that
// the test moves forward, so timeouts pass without waiting for them; containers run in real time.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { SimulatedClock } from 'xstate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/cli/client.js';
import { parseConfig } from '../src/config/load.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import { shippedConfig } from './support/shipped-config.js';
import { droverCli } from './support/cli-command.js';

const timeoutIdle = 60_000;
const dir = mkdtempSync(join(tmpdir(), 'drover-e2e-'));
const clock = new SimulatedClock();
let daemon: Daemon;
let api: ApiClient;
let token: string;

// The shipped config with its state in `dir` (its relative paths resolve against it) and any free port.
const config = parseConfig(
  shippedConfig('loopback.yml', { 'http.port': 0, 'pool.timeoutIdle': `${timeoutIdle / 1000}s` }),
  'config/loopback.yml (test copy)',
  { home: dir },
);

function sandboxes(): number {
  return readdirSync(join(dir, 'loopback', 'instances')).filter((name) => name.startsWith('lo-')).length;
}

/** Moves the daemon's clock forward in small steps, giving real I/O a moment between them. */
async function drive(until: () => boolean | Promise<boolean>, limitRealMs: number, onStep?: () => void, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + limitRealMs;
  while (Date.now() < deadline) {
    if (await until()) return true;
    clock.increment(stepMs);
    onStep?.();
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  return until();
}

beforeAll(async () => {
  clock.set(Date.now());
  daemon = await startDaemon(config, { clock, logger: pino({ level: 'silent' }) });
  token = readFileSync(join(dir, 'token'), 'utf8').trim();
  api = new ApiClient({ url: daemon.url, token });
});

afterAll(async () => {
  await daemon?.stop();
});

describe('end to end on loopback', () => {
  it('runs 20 containers with the right exit codes and output, within maxInstances, then shuts every sandbox down', async () => {
    const submitted = [];
    for (let n = 1; n <= 20; n++) {
      submitted.push(
        await api.submit({ command: ['sh', '-c', 'echo out-$N; sleep 1; exit $((N % 3 == 0))'], env: { N: String(n) } }),
      );
    }
    let peak = 0;
    const allDone = await drive(
      async () => (await api.list({ state: 'complete' })).length === 20,
      120_000,
      () => {
        peak = Math.max(peak, sandboxes(), daemon.pool.instances().length);
      },
    );
    expect(allDone).toBe(true);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(config.pool.maxInstances);

    for (const [index, container] of submitted.entries()) {
      const n = index + 1;
      const finished = await api.get(container.uuid);
      expect(finished).toMatchObject({ state: 'complete', exitCode: n % 3 === 0 ? 1 : 0, attempts: 1 });
      expect(await api.logs(container.uuid)).toBe(`out-${n}\n`);
    }

    // The queue is empty: the sandboxes stay until timeoutIdle, then every one goes, the clock
    // creeping on meanwhile only as far as the cloud-call rate limit needs.
    expect(sandboxes()).toBeGreaterThan(0);
    clock.increment(timeoutIdle);
    expect(await drive(() => sandboxes() === 0, 30_000, undefined, 10)).toBe(true);
    expect(await drive(() => daemon.pool.instances().length === 0, 30_000)).toBe(true);
  });

  it('drover submit --wait prints the output and exits with the container exit code', async () => {
    const child = spawn(
      process.execPath,
      [...droverCli, 'submit', '--wait', '--', 'sh', '-c', 'echo via-cli; exit 4'],
      { env: { ...process.env, DROVER_URL: daemon.url, DROVER_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    let code: number | null | undefined;
    child.on('close', (exitCode) => (code = exitCode));
    expect(await drive(() => code !== undefined, 120_000)).toBe(true);
    expect(code).toBe(4);
    expect(stdout).toContain('via-cli\n');
  });

  it('a restarted daemon adopts the containers running in its sandboxes: none starts twice, all complete', async () => {
    const uuids: string[] = [];
    for (let n = 1; n <= 3; n++) {
      uuids.push((await api.submit({ command: ['sh', '-c', 'sleep 2; echo done-$N'], env: { N: String(n) } })).uuid);
    }
    const runningNow = async () => (await api.list({ state: 'running' })).length;
    expect(await drive(async () => (await runningNow()) >= 2, 60_000)).toBe(true);
    await daemon.stop();

    daemon = await startDaemon(config, { clock, logger: pino({ level: 'silent' }) });
    api = new ApiClient({ url: daemon.url, token });
    expect(await drive(async () => (await api.list({ state: 'complete' })).filter((c) => uuids.includes(c.uuid)).length === 3, 120_000)).toBe(true);
    for (const [index, uuid] of uuids.entries()) {
      expect(await api.get(uuid)).toMatchObject({ state: 'complete', exitCode: 0, attempts: 1 });
      expect(await api.logs(uuid)).toBe(`done-${index + 1}\n`);
    }
  });
});
