// `drover cloudtest`: one instance through every step a pool takes (create with a pool's tags,
// listed, SSH with the secret and the boot probe, runner, tags, destroy), against the stub on fake
// timers and the loopback driver for real; each failure names its step and leaves nothing behind,
// or names the instance it could not destroy.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { cloudtestExitCode } from '../src/cli/cloudtest-command.js';
import { cloudtestExitCodes } from '../src/cli/exit-codes.js';
import { systemClock } from '../src/clock.js';
import { tagKeys, type CloudDriver, type CreateRequest } from '../src/cloud/driver.js';
import { CloudError } from '../src/cloud/errors.js';
import { cloudFromConfig, type Cloud } from '../src/cloud/from-config.js';
import { instanceSecretFile } from '../src/cloud/init-script.js';
import { LoopbackCloud } from '../src/cloud/loopback/loopback-cloud.js';
import { parseConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { cloudtest, cloudtestSteps, cloudtestTagKey, type CloudtestOptions, type CloudtestReport } from '../src/daemon/cloudtest.js';
import { runDrover } from './support/run-drover.js';
import { shippedConfig } from './support/shipped-config.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drover-cloudtest-'));
});

afterEach(async () => {
  vi.useRealTimers();
  // Whatever a failed test left running goes with its sandbox.
  if (existsSync(join(dir, 'loopback'))) {
    const cleaner = await LoopbackCloud.start({ directory: join(dir, 'loopback') });
    for (const instance of await cleaner.list({})) await cleaner.destroy(instance.id);
    await cleaner.close();
  }
  await rm(dir, { recursive: true, force: true });
});

/** config/stub.yml (boot delay 2–6 s, four seed instances of pool drover-demo) with its state in the temp directory. */
function stubConfig(settings: Record<string, unknown> = {}): Config {
  return parseConfig(shippedConfig('stub.yml', settings), 'stub.yml', { home: dir });
}

/** The cloud built from the config, its creates recorded. */
async function recordedCloud(config: Config): Promise<{ cloud: Cloud; creates: CreateRequest[] }> {
  const built = await cloudFromConfig(config, systemClock, new Registry());
  const creates: CreateRequest[] = [];
  const { driver } = built;
  const recording: CloudDriver = {
    create: (request) => {
      creates.push(request);
      return driver.create(request);
    },
    list: (filter) => driver.list(filter),
    destroy: (id) => driver.destroy(id),
    setTags: (id, tags) => driver.setTags(id, tags),
  };
  return { cloud: { ...built, driver: recording }, creates };
}

/** Runs cloudtest on fake timers, moving time on until it finishes; returns the report and the lines it printed. */
async function onFakeTime(
  config: Config,
  cloud: Cloud,
  print: (line: string) => void = () => {},
  more: Partial<CloudtestOptions> = {},
): Promise<{ report: CloudtestReport; lines: string[] }> {
  const lines: string[] = [];
  let report: CloudtestReport | undefined;
  const collect = (line: string) => {
    lines.push(line);
    print(line);
  };
  const running = cloudtest({ ...more, config, cloud, print: collect }).then((done) => (report = done));
  for (let i = 0; report === undefined && i < 10_000; i++) await vi.advanceTimersByTimeAsync(250);
  await running;
  if (report === undefined) throw new Error('cloudtest did not finish');
  return { report, lines };
}

function cloudtestInstancesOn(cloud: Cloud): string[] {
  return (cloud.stub?.liveInstances() ?? []).filter((instance) => instance.tags[tagKeys.pool] === 'drover-demo-cloudtest').map((instance) => instance.id);
}

describe('against the stub', () => {
  it('passes every step with the tags a pool create carries, in a pool tag of its own that the daemon never lists', async () => {
    vi.useFakeTimers();
    const config = stubConfig();
    const { cloud, creates } = await recordedCloud(config);
    const poolListingAfterCreate: string[][] = [];
    const { report, lines } = await onFakeTime(config, cloud, (line) => {
      // What a daemon of pool drover-demo lists while the cloudtest instance exists: only its seeds.
      if (line.includes('1/6 create: ok')) poolListingAfterCreate.push(cloud.stub!.liveInstances().filter((i) => i.tags[tagKeys.pool] === 'drover-demo').map((i) => i.id));
    });

    expect(report.failure).toBeNull();
    expect(report.leftBehind).toBeNull();
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.passed);
    expect(report.steps.map((step) => [step.step, step.ok])).toEqual(cloudtestSteps.map((step) => [step, true]));
    // The cheapest type; the stub's VMs boot 2–6 s after their create, which the ssh step waited out.
    expect(report.instanceType).toBe('small');
    const ssh = report.steps.find((step) => step.step === 'ssh')!;
    expect(ssh.elapsedMs).toBeGreaterThanOrEqual(2_000);
    for (const [index, step] of cloudtestSteps.entries()) {
      expect(lines.some((line) => new RegExp(`\\d+\\.\\ds  ${index + 1}/6 ${step}: ok in \\d+\\.\\ds: `).test(line))).toBe(true);
    }
    expect(lines.at(-1)).toMatch(/passed in \d+\.\ds/);
    expect(lines.join('\n')).toContain('drover-pool=drover-demo-cloudtest (not drover-demo)');

    expect(creates).toHaveLength(1);
    const { tags } = creates[0]!;
    expect(tags).toEqual({
      [tagKeys.pool]: 'drover-demo-cloudtest',
      [tagKeys.instanceType]: 'small',
      [tagKeys.idleBehavior]: 'hold',
      [tagKeys.createToken]: expect.stringMatching(/^[0-9a-f-]{36}$/),
      [tagKeys.secret]: expect.stringMatching(/^[0-9a-f]{64}$/),
      [cloudtestTagKey]: 'created',
    });
    expect(creates[0]!.initScript).toBeUndefined(); // the stub has no launch
    expect(poolListingAfterCreate).toEqual([['stub-1', 'stub-2', 'stub-3', 'stub-4']]);
    // Destroyed; the seeds untouched.
    expect(cloudtestInstancesOn(cloud)).toEqual([]);
    expect(cloud.stub!.liveCount()).toBe(4);
  });

  it('fails at the ssh step when every SSH command drops, after timeoutBooting, and destroys the instance', async () => {
    vi.useFakeTimers();
    const config = stubConfig({ 'cloud.stub.sshDropRate': 1, 'pool.timeoutBooting': '30s' });
    const { cloud } = await recordedCloud(config);
    const { report, lines } = await onFakeTime(config, cloud);

    expect(report.failure?.step).toBe('ssh');
    expect(report.failure?.message).toMatch(/within 30s of its create \(pool\.timeoutBooting.*last: ssh: connection dropped/);
    expect(report.steps.map((step) => step.step)).toEqual(['create', 'list', 'ssh']);
    expect(report.steps.at(-1)!.elapsedMs).toBeGreaterThanOrEqual(29_000);
    expect(report.leftBehind).toBeNull();
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.failed);
    expect(lines.some((line) => /3\/6 ssh: FAILED after \d+\.\ds: /.test(line))).toBe(true);
    expect(lines.some((line) => /clean-up: destroyed stub-5/.test(line))).toBe(true);
    expect(lines.at(-1)).toMatch(/FAILED at step 3\/6 ssh/);
    expect(cloudtestInstancesOn(cloud)).toEqual([]);
    expect(cloud.stub!.liveCount()).toBe(4);
  });

  it('names the cloud\'s error when the create fails, and finds nothing made under its create token', async () => {
    vi.useFakeTimers();
    const config = stubConfig({ 'cloud.stub.capacityErrorTypes': ['small'] });
    const { cloud } = await recordedCloud(config);
    const { report, lines } = await onFakeTime(config, cloud);

    expect(report.failure).toEqual({ step: 'create', message: 'CapacityError: no capacity for small' });
    expect(report.instanceId).toBeNull();
    expect(report.leftBehind).toBeNull();
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.failed);
    expect(lines.join('\n')).toContain('clean-up: the failed create made no instance');
    // The cloud refused the create (a typed answer, not a lost one): one listing is enough.
    expect(cloud.stub!.callCounts.list).toBe(1);
  });

  /** The cloud with a create that makes its VM but answers with an error, as when RunInstances' answer is lost. */
  function lostCreateAnswer(cloud: Cloud, listings: { failing: number; hiding: number; afterCreate?: number }): Cloud {
    const { driver } = cloud;
    let made: string | undefined;
    return {
      ...cloud,
      driver: {
        ...driver,
        create: async (request) => {
          made = (await driver.create(request)).id;
          throw new CloudError('ec2 RunInstances: socket hang up');
        },
        // Eventual consistency: the new VM shows in listings only after a while, and some listings fail.
        list: async (filter) => {
          if (made !== undefined) listings.afterCreate = (listings.afterCreate ?? 0) + 1;
          if (made !== undefined && listings.failing-- > 0) throw new CloudError('ec2 DescribeInstances: InternalError');
          const listed = await driver.list(filter);
          if (made === undefined || listings.hiding-- <= 0) return listed;
          return listed.filter((instance) => instance.id !== made);
        },
      },
    };
  }

  it('keeps listing by create token after a create whose answer was lost, finds the VM when it shows and destroys it', async () => {
    vi.useFakeTimers();
    const config = stubConfig();
    const { cloud } = await recordedCloud(config);
    const { report, lines } = await onFakeTime(config, lostCreateAnswer(cloud, { failing: 2, hiding: 3 }));

    expect(report.failure).toEqual({ step: 'create', message: 'CloudError: ec2 RunInstances: socket hang up' });
    expect(report.leftBehind).toBeNull();
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.failed);
    expect(lines.join('\n')).not.toContain('made no instance');
    expect(lines.some((line) => /clean-up: destroyed stub-5/.test(line))).toBe(true);
    expect(cloudtestInstancesOn(cloud)).toEqual([]);
  });

  it('after a create whose answer was lost, exits 3 naming the create token when no listing can tell until timeoutBooting', async () => {
    vi.useFakeTimers();
    const config = stubConfig({ 'pool.timeoutBooting': '30s' });
    const { cloud } = await recordedCloud(config);
    const listings = { failing: Infinity, hiding: 0, afterCreate: 0 };
    const { report, lines } = await onFakeTime(config, lostCreateAnswer(cloud, listings));

    const token = report.createToken;
    expect(report.leftBehind).toEqual({ instanceId: null, reason: expect.stringMatching(/no listing .* within 30s .*InternalError/) });
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.instanceLeft);
    expect(lines.at(-1)).toContain(`may have left an instance with create token ${token}; look for tag drover-create-token=${token}`);
    // Listed on, every probeInterval (2s), for the whole 30s.
    expect(listings.afterCreate).toBeGreaterThanOrEqual(15);
    expect(cloudtestInstancesOn(cloud)).toEqual(['stub-5']);
  });

  it('on an interrupt while waiting for the boot, abandons the step at once, destroys the instance and says it was interrupted', async () => {
    vi.useFakeTimers();
    const config = stubConfig({ 'cloud.stub.bootDelay': { min: '5m', max: '5m' }, 'pool.timeoutBooting': '10m' });
    const { cloud } = await recordedCloud(config);
    const interrupt = new AbortController();
    const { report, lines } = await onFakeTime(
      config,
      cloud,
      (line) => {
        if (line.includes('2/6 list: ok')) setTimeout(() => interrupt.abort('SIGINT'), 10_000);
      },
      { interrupt: interrupt.signal },
    );

    expect(report.interrupted).toBe(true);
    expect(report.failure).toEqual({ step: 'ssh', message: 'interrupted (SIGINT)' });
    expect(report.steps.at(-1)!.elapsedMs).toBeLessThan(11_000);
    expect(report.leftBehind).toBeNull();
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.interrupted);
    expect(lines.some((line) => /3\/6 ssh: INTERRUPTED after \d+\.\ds \(SIGINT\); cleaning up/.test(line))).toBe(true);
    expect(lines.some((line) => /clean-up: destroyed stub-5/.test(line))).toBe(true);
    expect(lines.at(-1)).toMatch(/INTERRUPTED at step 3\/6 ssh/);
    expect(cloudtestInstancesOn(cloud)).toEqual([]);
  });

  it('exits with its own code, naming the instance, when a failed run cannot destroy what it created', async () => {
    vi.useFakeTimers();
    const config = stubConfig({ 'cloud.stub.sshDropRate': 1, 'cloud.stub.destroyErrorRate': 1, 'pool.timeoutBooting': '10s', 'pool.timeoutShutdown': '5s' });
    const { cloud } = await recordedCloud(config);
    const { report, lines } = await onFakeTime(config, cloud);

    expect(report.failure?.step).toBe('ssh');
    expect(report.leftBehind).toEqual({ instanceId: 'stub-5', reason: expect.stringContaining('destroy failed: CloudError: destroy of stub-5 failed') });
    expect(cloudtestExitCode(report)).toBe(cloudtestExitCodes.instanceLeft);
    expect(lines.at(-1)).toMatch(/NOT destroyed: stub-5 \(drover-pool=drover-demo-cloudtest\): stub-5 still listed after 3 destroy calls 5s apart/);
    expect(cloudtestInstancesOn(cloud)).toEqual(['stub-5']);
  });
});

describe('against the loopback driver (real sandboxes, SSH and runner)', () => {
  function loopbackConfig(): Config {
    return parseConfig(
      shippedConfig('loopback.yml', {
        'cloud.loopback.directory': join(dir, 'loopback'),
        'pool.probeInterval': '100ms',
        'pool.timeoutBooting': '20s',
        'pool.timeoutShutdown': '2s',
      }),
      'loopback.yml',
      { home: dir },
    );
  }

  it('passes every step: the secret matched on first contact, the runner installed and listed', async () => {
    const config = loopbackConfig();
    const lines: string[] = [];
    const report = await cloudtest({ config, print: (line) => lines.push(line) });

    expect(report.failure).toBeNull();
    expect(report.steps.map((step) => [step.step, step.ok])).toEqual(cloudtestSteps.map((step) => [step, true]));
    const detail = (step: string) => report.steps.find((outcome) => outcome.step === step)!.detail;
    expect(detail('ssh')).toContain('the instance secret matched on first contact');
    expect(detail('runner')).toMatch(/runner installed at \.drover\/drover-runner; its list parsed \(0 running, 0 exited\)/);
    expect(detail('list')).toMatch(/address 127\.0\.0\.1:\d+/);
    const after = await LoopbackCloud.start({ directory: join(dir, 'loopback') });
    expect(await after.list({})).toEqual([]);
    await after.close();
  });

  it('fails at the ssh step at once when the instance does not hold its secret, and destroys it', async () => {
    const config = loopbackConfig();
    const loopback = await LoopbackCloud.start({ directory: join(dir, 'loopback') });
    // Not the VM the create made: its secret file says something else.
    const cloud: Cloud = {
      driver: {
        create: async (request) => {
          const instance = await loopback.create(request);
          await writeFile(join(loopback.homeOf(instance.id), instanceSecretFile), 'f'.repeat(64));
          return instance;
        },
        list: (filter) => loopback.list(filter),
        destroy: (id) => loopback.destroy(id),
        setTags: (id, tags) => loopback.setTags(id, tags),
      },
      executorFor: (target) => loopback.executorFor(target),
      deploysRunner: true,
      close: () => loopback.close(),
    };
    try {
      const report = await cloudtest({ config, cloud, print: () => {} });
      expect(report.failure?.step).toBe('ssh');
      expect(report.failure?.message).toMatch(/InstanceSecretMismatchError: Instance lo-[0-9a-f]{8} does not hold the secret/);
      // No retries until timeoutBooting: a wrong secret is final.
      expect(report.steps.at(-1)!.elapsedMs).toBeLessThan(10_000);
      expect(report.leftBehind).toBeNull();
      expect(await loopback.list({})).toEqual([]);
    } finally {
      await loopback.close();
    }
  });
});

describe('drover cloudtest', () => {
  it('runs against a stub config and exits 0, printing each step; an unknown --type is refused with 2', async () => {
    const path = join(dir, 'stub.yml');
    await writeFile(
      path,
      shippedConfig('stub.yml', {
        'cloud.stub.bootDelay': { min: '0s', max: '0s' },
        'queue.path': join(dir, 'state', 'queue.sqlite'),
        'http.tokenFile': join(dir, 'state', 'token'),
      }),
    );
    const env = { ...process.env, DROVER_HOME: dir };
    const run = await runDrover(['cloudtest', '--config', path], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(cloudtestExitCodes.passed);
    for (const [index, step] of cloudtestSteps.entries()) expect(run.stdout).toMatch(new RegExp(`${index + 1}/6 ${step}: ok in \\d+\\.\\ds`));
    expect(run.stdout).toMatch(/passed in \d+\.\ds: every step, and nothing left behind/);

    const refused = await runDrover(['cloudtest', '--config', path, '--type', 'huge'], env);
    expect(refused.code).toBe(cloudtestExitCodes.refused);
    expect(refused.stderr).toBe('drover: --type huge: no such instance type in the config; it has small, large; nothing was created\n');
  });

  /** A stub config whose VM takes 10 minutes to boot, so a signal arrives while cloudtest waits for it. */
  async function slowBootConfig(settings: Record<string, unknown> = {}): Promise<string> {
    const path = join(dir, 'stub.yml');
    await writeFile(
      path,
      shippedConfig('stub.yml', {
        'cloud.stub.bootDelay': { min: '10m', max: '10m' },
        'pool.timeoutBooting': '20m',
        'queue.path': join(dir, 'state', 'queue.sqlite'),
        'http.tokenFile': join(dir, 'state', 'token'),
        ...settings,
      }),
    );
    return path;
  }

  it('on SIGINT while waiting for the boot, destroys the instance and exits 130', async () => {
    const path = await slowBootConfig();
    let sent = false;
    const run = await runDrover(['cloudtest', '--config', path], { ...process.env, DROVER_HOME: dir }, {
      onStdout: (stdout, child) => {
        if (!sent && stdout.includes('2/6 list: ok')) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    });
    expect(run.code).toBe(cloudtestExitCodes.interrupted);
    expect(run.stderr).toContain('drover: SIGINT: cleaning up');
    expect(run.stdout).toMatch(/3\/6 ssh: INTERRUPTED after \d+\.\ds \(SIGINT\); cleaning up/);
    expect(run.stdout).toMatch(/clean-up: destroyed stub-5/);
    expect(run.stderr).toMatch(/cloudtest interrupted at step ssh \(SIGINT\); what it created is gone/);
  });

  it('on a second signal while cleaning up, exits 3 at once naming the instance that may be left', async () => {
    // Destroys always fail, so the clean-up would take 3 rounds of 10s.
    const path = await slowBootConfig({ 'cloud.stub.destroyErrorRate': 1 });
    let signals = 0;
    const startedAt = Date.now();
    const run = await runDrover(['cloudtest', '--config', path], { ...process.env, DROVER_HOME: dir }, {
      onStdout: (stdout, child) => {
        if (signals === 0 && stdout.includes('2/6 list: ok')) {
          signals++;
          child.kill('SIGTERM');
        }
      },
      onStderr: (stderr, child) => {
        if (signals === 1 && stderr.includes('cleaning up')) {
          signals++;
          child.kill('SIGINT');
        }
      },
    });
    expect(run.code).toBe(cloudtestExitCodes.instanceLeft);
    expect(run.stderr).toMatch(/drover: SIGINT again: stopped before the clean-up finished; may be left: stub-5 \(drover-pool=drover-demo-cloudtest\)/);
    expect(Date.now() - startedAt).toBeLessThan(20_000);
  });
});
