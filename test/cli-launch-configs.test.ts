// `drover launch-config list|pause|resume|archive` and `drover pool resume` as an operator runs them:
// the real CLI process against a real API server, over a pool face that records what it was asked.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { exitCodes } from '../src/cli/exit-codes.js';
import { startServer, type LaunchConfigsResponse } from '../src/http/server.js';
import { apiFixture, FakeLaunchConfigs, launchConfigView, type ApiFixture } from './support/api-fixture.js';
import { runDrover } from './support/run-drover.js';

const token = 'cli-launch-config-token';

let fixture: ApiFixture;
let launchConfigs: FakeLaunchConfigs;
let server: { url: string; close(): Promise<void> };
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  fixture = apiFixture({ prefix: 'drover-cli-launch-configs-', token });
  // Swapped for a fresh one before each test; the server reads it through this object.
  const deps = fixture.deps;
  deps.launchConfigs = {
    launchConfigs: () => launchConfigs.launchConfigs(),
    changeLaunchConfig: (id, action) => launchConfigs.changeLaunchConfig(id, action),
    resumeCreates: () => launchConfigs.resumeCreates(),
    createsFrozen: () => launchConfigs.createsFrozen(),
  };
  server = await startServer(deps, { address: '127.0.0.1', port: 0 });
  // COLUMNS empty: no line width, whatever the terminal the tests run in.
  env = { ...process.env, DROVER_URL: server.url, DROVER_TOKEN: token, COLUMNS: '' };
});

afterAll(async () => {
  await server.close();
  fixture.close();
});

beforeEach(() => {
  launchConfigs = new FakeLaunchConfigs();
});

/** The table's lines, each split into its cells (two spaces or more apart). */
function cells(stdout: string): string[][] {
  return stdout
    .trimEnd()
    .split('\n')
    .map((line) => line.split(/ {2,}/));
}

describe('drover launch-config list', () => {
  it('prints a table of every config: weight configured→effective, instances n/max when capped, recent ok/fail, the last error with its age', async () => {
    const now = Date.now();
    launchConfigs.add(
      launchConfigView({ id: 'small-a1b2', weight: 2, effectiveWeight: 1.5, instances: 3, maxInstances: 10, recent: { successes: 12, failures: 1, windowMs: 3_600_000 } }),
    );
    launchConfigs.add(
      launchConfigView({
        id: 'large-c3d4',
        instanceType: 'large',
        state: 'broken',
        weight: 1,
        effectiveWeight: 1 / 3,
        recent: { successes: 0, failures: 4, windowMs: 3_600_000 },
        consecutiveBootFailures: 4,
        lastError: { at: now - 5 * 60_000, message: 'boot probe failed:\n  runner not found' },
      }),
    );
    launchConfigs.add(launchConfigView({ id: 'small-gone', state: 'archived', inConfig: false, effectiveWeight: 0.001 }));
    const result = await runDrover(['launch-config', 'list'], env);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(cells(result.stdout)).toEqual([
      ['ID', 'TYPE', 'STATE', 'WEIGHT', 'INSTANCES', 'RECENT', 'LAST ERROR'],
      ['small-a1b2', 'small', 'active', '2→1.5', '3/10', '12/1', '-'],
      ['large-c3d4', 'large', 'broken', '1→0.33', '0', '0/4', expect.stringMatching(/^[56]m ago: boot probe failed: runner not found$/)],
      ['small-gone', 'small', 'archived', '1→<0.01', '0', '0/0', '-'],
    ]);
  });

  it('shortens the last error so each line fits the terminal width', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2', lastError: { at: Date.now(), message: `create failed: ${'quota exceeded '.repeat(20)}` } }));
    const result = await runDrover(['launch-config', 'list'], { ...env, COLUMNS: '100' });
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[1]).toMatch(/ {2}\ds ago: create failed: quota exceeded .*…$/);
    expect(lines[1]?.length).toBe(100);
  });

  it('prints only the header when the pool has no launch configs', async () => {
    const result = await runDrover(['launch-config', 'list'], env);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(cells(result.stdout)).toEqual([['ID', 'TYPE', 'STATE', 'WEIGHT', 'INSTANCES', 'RECENT', 'LAST ERROR']]);
  });

  it('says on stderr that every create is frozen, and how to lift it, keeping stdout a table', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2' }));
    launchConfigs.frozen = '20 boot failures in a row across the pool';
    const result = await runDrover(['launch-config', 'list'], env);
    expect(result.code).toBe(0);
    expect(cells(result.stdout)).toHaveLength(2);
    expect(result.stderr).toBe(
      'warning: every create is frozen: 20 boot failures in a row across the pool. Once its cause is fixed, `drover pool resume` lifts the freeze.\n',
    );
  });

  it('--json prints the answer as the API gives it', async () => {
    const view = launchConfigs.add(launchConfigView({ id: 'small-a1b2', lastError: { at: 5, message: 'x' }, nextTrialAt: 65 }));
    launchConfigs.frozen = 'frozen for the test';
    const result = await runDrover(['launch-config', 'list', '--json'], env);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(result.stdout)).toEqual({ launchConfigs: [view], createsFrozen: 'frozen for the test' } satisfies LaunchConfigsResponse);
  });
});

describe('drover launch-config pause|resume|archive', () => {
  it('changes the config through the API and prints its id and new state', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2' }));
    expect(await runDrover(['launch-config', 'pause', 'small-a1b2'], env)).toMatchObject({ code: 0, stdout: 'small-a1b2: paused\n', stderr: '' });
    expect(launchConfigs.views.get('small-a1b2')?.state).toBe('paused');
    expect(await runDrover(['launch-config', 'resume', 'small-a1b2'], env)).toMatchObject({ code: 0, stdout: 'small-a1b2: active\n', stderr: '' });
    expect(await runDrover(['launch-config', 'archive', 'small-a1b2'], env)).toMatchObject({ code: 0, stdout: 'small-a1b2: archived\n', stderr: '' });
    expect(launchConfigs.calls.filter((c) => c.method === 'changeLaunchConfig')).toEqual([
      { method: 'changeLaunchConfig', id: 'small-a1b2', action: 'pause' },
      { method: 'changeLaunchConfig', id: 'small-a1b2', action: 'resume' },
      { method: 'changeLaunchConfig', id: 'small-a1b2', action: 'archive' },
    ]);
  });

  it('says why creates are still refused when the config is active again', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2', state: 'paused' }));
    const change = launchConfigs.changeLaunchConfig.bind(launchConfigs);
    launchConfigs.changeLaunchConfig = (id, action) => ({ ...change(id, action), refusal: 'every create is frozen' });
    const result = await runDrover(['launch-config', 'resume', 'small-a1b2'], env);
    expect(result).toMatchObject({ code: 0, stdout: 'small-a1b2: active (creates refused: every create is frozen)\n' });
  });

  it('an unknown id is refused (exit code 101) with a message naming it', async () => {
    const result = await runDrover(['launch-config', 'pause', 'small-nope'], env);
    expect(result).toMatchObject({ code: exitCodes.refused, stdout: '', stderr: 'drover: no launch config small-nope in this pool\n' });
  });

  it('an action the state does not allow is refused (exit code 101) with the daemon\'s reason', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2', state: 'archived' }));
    const result = await runDrover(['launch-config', 'resume', 'small-a1b2'], env);
    expect(result).toMatchObject({ code: exitCodes.refused, stdout: '', stderr: 'drover: launch config small-a1b2 is archived; it cannot resume\n' });
    expect(launchConfigs.views.get('small-a1b2')?.state).toBe('archived');
  });

  it('a wrong token is refused (exit code 101) and changes nothing', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2' }));
    const result = await runDrover(['launch-config', 'pause', 'small-a1b2'], { ...env, DROVER_TOKEN: 'not-the-token' });
    expect(result.code).toBe(exitCodes.refused);
    expect(result.stderr).toBe('drover: the daemon refused the token: check DROVER_TOKEN (the daemon says: invalid token)\n');
    expect(launchConfigs.calls).toEqual([]);
  });

  it('another action, a missing id or a bare launch-config is a usage error that asks the daemon nothing', async () => {
    launchConfigs.add(launchConfigView({ id: 'small-a1b2' }));
    for (const args of [['launch-config', 'delete', 'small-a1b2'], ['launch-config', 'pause'], ['launch-config'], ['pool'], ['pool', 'freeze']]) {
      const result = await runDrover(args, env);
      expect({ args, code: result.code }).toEqual({ args, code: exitCodes.usage });
      expect(result.stdout).toBe('');
    }
    expect(launchConfigs.calls).toEqual([]);
  });
});

describe('drover pool resume', () => {
  it('lifts frozen creates, then says there was nothing to resume; both exit 0', async () => {
    launchConfigs.frozen = '20 boot failures in a row across the pool';
    expect(await runDrover(['pool', 'resume'], env)).toMatchObject({ code: 0, stdout: 'creates resumed\n', stderr: '' });
    expect(launchConfigs.frozen).toBeNull();
    expect(await runDrover(['pool', 'resume'], env)).toMatchObject({ code: 0, stdout: 'creates were not frozen; nothing to resume\n', stderr: '' });
    expect(launchConfigs.calls).toEqual([{ method: 'resumeCreates' }, { method: 'resumeCreates' }]);
  });
});

describe('help', () => {
  it('lists launch-config and pool among the commands, and their subcommands', async () => {
    const top = await runDrover(['--help'], env);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/^ {2}launch-config\b/m);
    expect(top.stdout).toMatch(/^ {2}pool\b/m);
    const launchConfig = await runDrover(['launch-config', '--help'], env);
    expect(launchConfig.code).toBe(0);
    for (const sub of ['list', 'pause', 'resume', 'archive']) expect(launchConfig.stdout).toMatch(new RegExp(`^ {2}${sub}\\b`, 'm'));
    const pool = await runDrover(['pool', '--help'], env);
    expect(pool.stdout).toMatch(/^ {2}resume\b/m);
  });
});
