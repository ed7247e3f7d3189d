// Tests of config parsing: durations, defaults, and that every problem in a file is reported by key path.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { defaultStubFaults } from '../src/cloud/stub/faults.js';
import { formatDuration, parseDuration } from '../src/config/duration.js';
import { defaultLaunchConfig, launchConfigId } from '../src/config/launch-configs.js';
import { defaultConfigPath, packagedConfigPath, packageRoot, packageVersion, stateHome } from '../src/config/home.js';
import { ConfigError, loadConfig, parseConfig } from '../src/config/load.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

const minimal = `
cloud:
  driver: stub
instanceTypes:
  small: { providerType: t3.small, vcpus: 2, ramMiB: 2048, price: 0.02 }
`;

/** The ConfigError that parsing `yamlText` throws; fails the test if it parses. */
function configError(yamlText: string, source = 'test.yml'): ConfigError {
  try {
    parseConfig(yamlText, source);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, but the config parsed');
}

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['10s', 10_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1.5s', 1_500],
    ['1m30s', 90_000],
    ['1h30m', 5_400_000],
    ['2h0m5s250ms', 7_205_250],
    ['0s', 0],
  ])('reads %s as %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', '10', '-5s', '10 parsecs', '5d', 's', '1.s', '.5s', '10s ago', '1e3s', 'ms'])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(/expected a duration such as 10s, 5m or 1h30m, got/);
  });

  it('quotes the bad text in its message', () => {
    expect(() => parseDuration('10 parsecs')).toThrow('expected a duration such as 10s, 5m or 1h30m, got "10 parsecs"');
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [500, '500ms'],
    [1_500, '1.5s'],
    [90_000, '1m30s'],
    [3_600_000, '1h'],
    [5_400_000, '1h30m'],
    [7_205_250, '2h5.25s'],
  ])('writes %d ms as %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('writes what parseDuration reads back', () => {
    for (const ms of [1, 999, 1_000, 1_001, 59_999, 61_234, 3_599_999, 86_400_000, 123_456_789]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });
});

describe('parseConfig', () => {
  it('reports a missing cloud.driver', () => {
    const error = configError(`instanceTypes:\n  small: { providerType: t3.small, vcpus: 2, ramMiB: 2048, price: 0.02 }\n`);
    expect(error.message).toContain('cloud.driver: required');
    expect(error.message.startsWith('test.yml: ')).toBe(true);
    expect(error.issues).toEqual([{ path: 'cloud.driver', message: 'required' }]);
  });

  it('reports a malformed duration with its key path and the bad text', () => {
    const error = configError(`${minimal}pool:\n  syncInterval: ten\n`, 'config/x.yml');
    expect(error.message).toBe(
      'config/x.yml: pool.syncInterval: expected a duration such as 10s, 5m or 1h30m, got "ten"',
    );
  });

  it('names an unknown key, so a typo does not silently fall back to a default', () => {
    const error = configError(`${minimal}pool:\n  sycnInterval: 5s\n`);
    expect(error.issues).toEqual([{ path: 'pool.sycnInterval', message: 'unknown key' }]);
    expect(error.message).toContain('pool.sycnInterval: unknown key');
  });

  it('applies defaults when whole sections are omitted', () => {
    const config = parseConfig(minimal, 'test.yml');
    expect(config.poolName).toBe('drover');
    expect(config.cloud.maxCloudOpsPerSecond).toBe(10);
    expect(config.pool).toEqual({
      syncInterval: 60_000,
      probeInterval: 10_000,
      maxProbesPerSecond: 10,
      probeRateCeiling: 500,
      timeoutIdle: 60_000,
      idlePolicy: 'adaptive',
      timeoutBooting: 600_000,
      timeoutProbe: 600_000,
      timeoutShutdown: 10_000,
      maxInstances: 64,
      maxConcurrentInstanceCreateOps: 1,
      maxRunningContainersPerInstance: 1,
      quotaErrorTTL: 60_000,
      bootProbeCommand: 'true',
      runnerCommand: 'drover-runner',
      logTailBytes: 65_536,
      maxInstanceLifetime: 345_600_000,
      timeoutTERM: 120_000,
      launchConfigRetryInterval: 300_000,
      launchConfigHealthWindow: 3_600_000,
      bootFailuresToBreak: 3,
      freezePoolAfterBootFailures: null,
    });
    expect(config.ssh).toEqual({ username: 'root', privateKeyFile: null, hostKeysFile: null });
    expect(config.http).toEqual({ address: '127.0.0.1', port: 8420, tokenFile: expect.stringMatching(/token$/), publicMetrics: false });
    expect(config.log).toEqual({ level: 'info', format: 'auto' });
    // Inspection is off until a URL is given; the default filter leaves instances out.
    expect(config.inspect).toEqual({ url: null, actors: ['pool'] });
    expect(config.cloud.stub).toEqual({ ...defaultStubFaults, seedInstances: [] });
    expect(config.instanceTypes.small).toEqual({
      name: 'small',
      providerType: 't3.small',
      vcpus: 2,
      ramMiB: 2048,
      scratchGiB: 0,
      gpus: 0,
      price: 0.02,
      preemptible: false,
    });
    expect(config.launchConfigs).toEqual([defaultLaunchConfig('small')]);
  });

  it('gives an empty section (null in YAML) its defaults too', () => {
    const config = parseConfig(`${minimal}pool:\nssh:\n`, 'test.yml');
    expect(config.pool.syncInterval).toBe(60_000);
    expect(config.ssh.username).toBe('root');
  });

  it('keeps defaults for the keys a section leaves out', () => {
    const config = parseConfig(`${minimal}pool:\n  maxInstances: 3\n`, 'test.yml');
    expect(config.pool.maxInstances).toBe(3);
    expect(config.pool.timeoutBooting).toBe(600_000);
  });

  it('converts durations to ms, including compound ones', () => {
    const config = parseConfig(
      `${minimal}pool:\n  timeoutIdle: 1m30s\n  timeoutShutdown: 1.5s\n  quotaErrorTTL: 250ms\n`,
      'test.yml',
    );
    expect(config.pool.timeoutIdle).toBe(90_000);
    expect(config.pool.timeoutShutdown).toBe(1_500);
    expect(config.pool.quotaErrorTTL).toBe(250);
  });

  it('maps cloud.stub durations onto the StubFaults ...Ms fields', () => {
    const config = parseConfig(
      `${minimal.replace('driver: stub', 'driver: stub\n  stub:\n    minCreateInterval: 2s\n    vanishAfter: 1m\n    bootDelay: { min: 1s, max: 3s }\n    seedInstances: [{ instanceType: small, count: 2, idleBehavior: hold }, { instanceType: small }]')}`,
      'test.yml',
    );
    expect(config.cloud.stub.minCreateIntervalMs).toBe(2_000);
    expect(config.cloud.stub.vanishAfterMs).toBe(60_000);
    expect(config.cloud.stub.bootDelayMs).toEqual({ min: 1_000, max: 3_000 });
    expect(config.cloud.stub.seedInstances).toEqual([
      { instanceType: 'small', count: 2, idleBehavior: 'hold' },
      { instanceType: 'small', count: 1, idleBehavior: 'run' },
    ]);
    expect(config.cloud.stub).not.toHaveProperty('minCreateInterval');
  });

  it('reads pool.probeRateCeiling, which may equal maxProbesPerSecond', () => {
    expect(parseConfig(`${minimal}pool:\n  probeRateCeiling: 2000\n`, 'test.yml').pool.probeRateCeiling).toBe(2_000);
    const config = parseConfig(`${minimal}pool:\n  maxProbesPerSecond: 25\n  probeRateCeiling: 25\n`, 'test.yml');
    expect(config.pool).toMatchObject({ maxProbesPerSecond: 25, probeRateCeiling: 25 });
  });

  it.each([
    ['0', 'must be greater than 0'],
    ['-5', 'must be greater than 0'],
    ['fast', 'expected a number, got "fast"'],
  ])('rejects pool.probeRateCeiling %s, naming the key', (value, message) => {
    const error = configError(`${minimal}pool:\n  probeRateCeiling: ${value}\n`);
    expect(error.issues).toEqual([{ path: 'pool.probeRateCeiling', message }]);
  });

  it('reads pool.idlePolicy fixed or adaptive, and refuses anything else naming the key and the choices', () => {
    expect(parseConfig(`${minimal}pool:\n  idlePolicy: fixed\n`, 'test.yml').pool.idlePolicy).toBe('fixed');
    const error = configError(`${minimal}pool:\n  idlePolicy: smart\n`);
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe('pool.idlePolicy');
    expect(error.message).toContain('test.yml: pool.idlePolicy:');
    expect(error.message).toMatch(/fixed.*adaptive/);
  });

  it('reads pool.logTailBytes from 1 KiB to 16 MiB', () => {
    for (const bytes of [1024, 1_000_000, 16 * 1024 * 1024]) {
      expect(parseConfig(`${minimal}pool:\n  logTailBytes: ${bytes}\n`, 'test.yml').pool.logTailBytes).toBe(bytes);
    }
  });

  it.each([
    ['1023', 'must be at least 1024'],
    ['0', 'must be at least 1024'],
    ['16777217', 'must be at most 16777216'],
    ['1500.5', 'expected a whole number, got 1500.5'],
    ['64KiB', 'expected a number, got "64KiB"'],
  ])('rejects pool.logTailBytes %s, naming the key', (value, message) => {
    const error = configError(`${minimal}pool:\n  logTailBytes: ${value}\n`);
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe('pool.logTailBytes');
    expect(error.issues[0]?.message).toContain(message);
    expect(error.message).toContain(`test.yml: pool.logTailBytes: ${message}`);
  });

  it('gives the scheduler type fallback its defaults: maxPriceFactor 1.5, preemptibleFallbackAfter 10m', () => {
    expect(parseConfig(minimal, 'test.yml').scheduler).toMatchObject({ maxPriceFactor: 1.5, preemptibleFallbackAfter: 600_000 });
    const config = parseConfig(`${minimal}scheduler:\n  maxPriceFactor: 1\n  preemptibleFallbackAfter: 2m30s\n`, 'test.yml');
    expect(config.scheduler).toMatchObject({ maxPriceFactor: 1, preemptibleFallbackAfter: 150_000 });
  });

  it.each([
    ['maxPriceFactor: 0.9', 'scheduler.maxPriceFactor', 'must be at least 1 (1: only the cheapest type that fits)'],
    ['maxPriceFactor: dear', 'scheduler.maxPriceFactor', 'expected a number, got "dear"'],
    ['preemptibleFallbackAfter: soon', 'scheduler.preemptibleFallbackAfter', 'soon'],
  ])('rejects scheduler.%s, naming the key', (line, path, message) => {
    const error = configError(`${minimal}scheduler:\n  ${line}\n`);
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe(path);
    expect(error.issues[0]?.message).toContain(message);
  });

  it('rejects a pool.probeRateCeiling below maxProbesPerSecond', () => {
    const error = configError(`${minimal}pool:\n  maxProbesPerSecond: 20\n  probeRateCeiling: 5\n`);
    expect(error.issues).toEqual([{ path: 'pool.probeRateCeiling', message: 'must be at least maxProbesPerSecond (20), got 5' }]);
    expect(error.message).toBe('test.yml: pool.probeRateCeiling: must be at least maxProbesPerSecond (20), got 5');
  });

  it('rejects a pool.probeRateCeiling below the default maxProbesPerSecond', () => {
    const error = configError(`${minimal}pool:\n  probeRateCeiling: 4\n`);
    expect(error.issues).toEqual([{ path: 'pool.probeRateCeiling', message: 'must be at least maxProbesPerSecond (10), got 4' }]);
  });

  it('reports a ceiling below the base rate together with the section\'s other problems', () => {
    const error = configError(`${minimal}pool:\n  maxProbesPerSecond: 20\n  probeRateCeiling: 5\n  maxInstances: -1\n`);
    expect(error.issues.map((issue) => issue.path).sort()).toEqual(['pool.maxInstances', 'pool.probeRateCeiling']);
  });

  it('rejects a seed instance whose type is not in instanceTypes', () => {
    const error = configError(
      minimal.replace('driver: stub', 'driver: stub\n  stub:\n    seedInstances: [{ instanceType: huge }]'),
    );
    expect(error.issues.map((issue) => issue.path)).toEqual(['cloud.stub.seedInstances[0].instanceType']);
    expect(error.message).toContain('cloud.stub.seedInstances[0].instanceType: unknown instance type "huge"');
  });

  it('rejects a boot delay whose min is greater than its max', () => {
    const error = configError(
      minimal.replace('driver: stub', 'driver: stub\n  stub:\n    bootDelay: { min: 6s, max: 2s }'),
    );
    expect(error.issues).toEqual([
      { path: 'cloud.stub.bootDelay', message: 'min (6s) must not be greater than max (2s)' },
    ]);
  });

  it('reports several problems together, one per line', () => {
    const error = configError(`
pool:
  syncInterval: soon
  sycnInterval: 5s
  maxInstances: -1
cloud:
  stub:
    seedInstances: [{ instanceType: huge }]
instanceTypes:
  small: { providerType: t3.small, vcpus: 2, ramMiB: 2048, price: 0.02 }
`);
    const lines = error.message.split('\n');
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(line.startsWith('test.yml: ')).toBe(true);
    expect(error.issues.map((issue) => issue.path).sort()).toEqual([
      'cloud.driver',
      'cloud.stub.seedInstances[0].instanceType',
      'pool.maxInstances',
      'pool.sycnInterval',
      'pool.syncInterval',
    ]);
  });

  it('requires at least one instance type', () => {
    const error = configError('cloud: { driver: stub }\ninstanceTypes: {}\n');
    expect(error.issues).toEqual([{ path: 'instanceTypes', message: 'at least one instance type is required' }]);
  });

  it('reports an empty file as missing its required keys', () => {
    const error = configError('');
    expect(error.issues.map((issue) => issue.path)).toEqual(['cloud.driver', 'instanceTypes']);
  });

  it('reports a YAML syntax error with its line and column', () => {
    const error = configError('cloud:\n  driver: stub\n  stub: [1, 2\nlog: { level: info }\n');
    expect(error.message).toMatch(/^test\.yml: YAML syntax error at line \d+, column \d+: /);
    expect(error.message).toMatch(/line 4,/);
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads config/stub.yml cleanly', () => {
    const config = loadConfig(join(repoRoot, 'config/stub.yml'));
    expect(config.poolName).toBe('drover-demo');
    expect(config.cloud.driver).toBe('stub');
    expect(config.pool.syncInterval).toBe(5_000);
    expect(config.pool.probeInterval).toBe(2_000);
    expect(config.pool.timeoutIdle).toBe(20_000);
    expect(config.pool.timeoutBooting).toBe(60_000);
    expect(config.pool.timeoutShutdown).toBe(10_000);
    expect(config.cloud.stub.bootDelayMs).toEqual({ min: 2_000, max: 6_000 });
    expect(Object.keys(config.instanceTypes).sort()).toEqual(['large', 'small']);
    expect(config.instanceTypes.small?.price).not.toBe(config.instanceTypes.large?.price);
    expect(config.cloud.stub.seedInstances).toEqual([
      { instanceType: 'small', count: 2, idleBehavior: 'run' },
      { instanceType: 'small', count: 1, idleBehavior: 'hold' },
      { instanceType: 'large', count: 1, idleBehavior: 'drain' },
    ]);
  });

  it('names the path of a missing file and says it does not exist', () => {
    const path = join(dir, 'nowhere.yml');
    expect(() => loadConfig(path)).toThrow(ConfigError);
    expect(() => loadConfig(path)).toThrow(`${path}: file does not exist`);
  });

  it('uses the file path as the source of its problems', () => {
    const path = join(dir, 'bad.yml');
    writeFileSync(path, `${minimal}pool:\n  syncInterval: ten\n`);
    expect(() => loadConfig(path)).toThrow(`${path}: pool.syncInterval: `);
  });
});

describe('state paths and DROVER_HOME', () => {
  const home = mkdtempSync(join(tmpdir(), 'drover-config-home-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  const withState = (state: { queue?: string; token?: string; loopback?: string; runner?: string }) => `
cloud:
  driver: loopback
  loopback: { directory: ${state.loopback ?? 'loopback'} }
pool: { runnerCommand: ${state.runner ?? 'drover-runner'} }
queue: { path: ${state.queue ?? 'queue.sqlite'} }
http: { tokenFile: ${state.token ?? 'token'} }
instanceTypes:
  local: { providerType: loopback, vcpus: 1, ramMiB: 512, price: 0 }
`;

  it('resolves relative queue.path, http.tokenFile and cloud.loopback.directory against the home', () => {
    const config = parseConfig(withState({ queue: 'state/q.sqlite', token: './secret/token', loopback: 'sandboxes' }), 'test.yml', { home });
    expect(config.queue.path).toBe(join(home, 'state', 'q.sqlite'));
    expect(config.http.tokenFile).toBe(join(home, 'secret', 'token'));
    expect(config.cloud.loopback.directory).toBe(join(home, 'sandboxes'));
  });

  it('keeps absolute paths as written', () => {
    const config = parseConfig(withState({ queue: '/srv/drover/q.sqlite', token: '/etc/drover/token', loopback: '/var/lib/drover' }), 'test.yml', { home });
    expect(config.queue.path).toBe('/srv/drover/q.sqlite');
    expect(config.http.tokenFile).toBe('/etc/drover/token');
    expect(config.cloud.loopback.directory).toBe('/var/lib/drover');
  });

  it('resolves relative ssh.privateKeyFile and ssh.hostKeysFile against the home, and leaves them null when unset', () => {
    const config = parseConfig(`${withState({})}ssh: { privateKeyFile: keys/id_ed25519, hostKeysFile: /etc/drover/known_hosts }\n`, 'test.yml', { home });
    expect(config.ssh.privateKeyFile).toBe(join(home, 'keys', 'id_ed25519'));
    expect(config.ssh.hostKeysFile).toBe('/etc/drover/known_hosts');
    expect(parseConfig(withState({}), 'test.yml', { home }).ssh).toMatchObject({ privateKeyFile: null, hostKeysFile: null });
  });

  it('leaves pool.runnerCommand, a path on the instance, as written', () => {
    expect(parseConfig(withState({ runner: '.drover/drover-runner' }), 'test.yml', { home }).pool.runnerCommand).toBe('.drover/drover-runner');
  });

  it('puts the default state paths in the home', () => {
    const config = parseConfig(minimal, 'test.yml', { home });
    expect(config.queue.path).toBe(join(home, 'queue.sqlite'));
    expect(config.http.tokenFile).toBe(join(home, 'token'));
    expect(config.cloud.loopback.directory).toBe(join(home, 'loopback'));
  });

  it('takes the home from DROVER_HOME when none is given, in parseConfig and loadConfig alike', () => {
    vi.stubEnv('DROVER_HOME', home);
    expect(parseConfig(minimal, 'test.yml').queue.path).toBe(join(home, 'queue.sqlite'));
    // Neither the config file's directory nor the working directory counts.
    const elsewhere = join(home, 'configs');
    mkdirSync(elsewhere, { recursive: true });
    writeFileSync(join(elsewhere, 'drover.yml'), withState({}));
    const config = loadConfig(join(elsewhere, 'drover.yml'));
    expect(config.queue.path).toBe(join(home, 'queue.sqlite'));
    expect(config.cloud.loopback.directory).toBe(join(home, 'loopback'));
  });

  it('stateHome is DROVER_HOME (made absolute), else ~/.drover', () => {
    expect(stateHome({ DROVER_HOME: home })).toBe(home);
    expect(stateHome({ DROVER_HOME: 'rel/state' })).toBe(join(process.cwd(), 'rel', 'state'));
    expect(stateHome({})).toBe(join(homedir(), '.drover'));
    expect(stateHome({ DROVER_HOME: '' })).toBe(join(homedir(), '.drover'));
  });

  it('every test runs with a DROVER_HOME of its own, never ~/.drover', () => {
    expect(process.env.DROVER_HOME).toBeTruthy();
    expect(stateHome()).not.toBe(join(homedir(), '.drover'));
  });

  it('the default config is <home>/config.yml when it exists, else the packaged config/loopback.yml', () => {
    const fresh = mkdtempSync(join(home, 'fresh-'));
    expect(packagedConfigPath()).toBe(join(repoRoot, 'config', 'loopback.yml'));
    expect(defaultConfigPath(fresh)).toBe(packagedConfigPath());
    writeFileSync(join(fresh, 'config.yml'), minimal);
    expect(defaultConfigPath(fresh)).toBe(join(fresh, 'config.yml'));
    vi.stubEnv('DROVER_HOME', fresh);
    expect(defaultConfigPath()).toBe(join(fresh, 'config.yml'));
  });

  it('loads the shipped config/loopback.yml with its state in the home', () => {
    const config = loadConfig(packagedConfigPath(), { home });
    expect(config.cloud.driver).toBe('loopback');
    expect(config.queue.path).toBe(join(home, 'queue.sqlite'));
    expect(config.http.tokenFile).toBe(join(home, 'token'));
    expect(config.cloud.loopback.directory).toBe(join(home, 'loopback'));
    expect(config.pool.runnerCommand).toBe('.drover/drover-runner');
    expect(config.http.port).toBe(8420);
    expect(config.log.format).toBe('auto');
  });

  it('finds the package root and its version from the sources', () => {
    expect(packageRoot()).toBe(repoRoot.replace(/\/$/, ''));
    expect(packageVersion()).toBe((JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version);
  });
});

describe('log.format', () => {
  it('reads auto, pretty and json', () => {
    for (const format of ['auto', 'pretty', 'json']) {
      expect(parseConfig(`${minimal}log: { format: ${format} }\n`, 'test.yml').log.format).toBe(format);
    }
  });

  it('names the choices for anything else', () => {
    expect(configError(`${minimal}log: { format: fancy }\n`).message).toBe('test.yml: log.format: expected one of auto, pretty, json, got "fancy"');
  });
});

describe('inspect', () => {
  it('reads the relay URL, and actors as one selector or a list of them', () => {
    expect(parseConfig(`${minimal}inspect: { url: ws://127.0.0.1:8427 }\n`, 'test.yml').inspect).toEqual({ url: 'ws://127.0.0.1:8427', actors: ['pool'] });
    expect(parseConfig(`${minimal}inspect: { url: wss://relay.example/x, actors: all }\n`, 'test.yml').inspect).toEqual({ url: 'wss://relay.example/x', actors: ['all'] });
    expect(parseConfig(`${minimal}inspect:\n  actors: [pool, 'instance:i-0abc', 'instance:create-1']\n`, 'test.yml').inspect).toEqual({
      url: null,
      actors: ['pool', 'instance:i-0abc', 'instance:create-1'],
    });
    expect(parseConfig(`${minimal}inspect:\n`, 'test.yml').inspect).toEqual({ url: null, actors: ['pool'] });
  });

  it('names the key of a URL that is no ws:// or wss:// one', () => {
    expect(configError(`${minimal}inspect: { url: 'http://127.0.0.1:8427' }\n`).message).toBe(
      'test.yml: inspect.url: expected a ws:// or wss:// URL such as ws://127.0.0.1:8427, got "http://127.0.0.1:8427"',
    );
  });

  it('names the key and the choices of a bad actor selector, and reports every problem of the section', () => {
    const error = configError(`${minimal}inspect: { url: 8427, actors: [pool, instances, 'instance:'], actor: all }\n`);
    expect(error.issues).toEqual([
      { path: 'inspect.url', message: 'expected a ws:// or wss:// URL such as ws://127.0.0.1:8427, got 8427' },
      { path: 'inspect.actors[1]', message: 'expected pool, all or instance:<worker id or cloud instance id>, got "instances"' },
      { path: 'inspect.actors[2]', message: 'expected pool, all or instance:<worker id or cloud instance id>, got "instance:"' },
      { path: 'inspect.actor', message: 'unknown key' },
    ]);
    expect(configError(`${minimal}inspect: { actors: [] }\n`).issues).toEqual([{ path: 'inspect.actors', message: 'expected at least one of pool, all, instance:<id>' }]);
  });
});

describe('pool launch config keys', () => {
  it('reads launchConfigRetryInterval, launchConfigHealthWindow, bootFailuresToBreak and freezePoolAfterBootFailures', () => {
    const config = parseConfig(
      `${minimal}pool:\n  launchConfigRetryInterval: 90s\n  launchConfigHealthWindow: 30m\n  bootFailuresToBreak: 5\n  freezePoolAfterBootFailures: 20\n`,
      'test.yml',
    );
    expect(config.pool).toMatchObject({
      launchConfigRetryInterval: 90_000,
      launchConfigHealthWindow: 1_800_000,
      bootFailuresToBreak: 5,
      freezePoolAfterBootFailures: 20,
    });
  });

  it.each([
    ['launchConfigRetryInterval: soon', 'pool.launchConfigRetryInterval', 'expected a duration such as 10s, 5m or 1h30m, got "soon"'],
    ['launchConfigHealthWindow: 0s', 'pool.launchConfigHealthWindow', 'must be longer than 0s'],
    ['bootFailuresToBreak: 0', 'pool.bootFailuresToBreak', 'must be at least 1'],
    ['bootFailuresToBreak: 2.5', 'pool.bootFailuresToBreak', 'expected a whole number, got 2.5'],
    ['freezePoolAfterBootFailures: 0', 'pool.freezePoolAfterBootFailures', 'must be at least 1'],
  ])('rejects pool.%s, naming the key', (line, path, message) => {
    expect(configError(`${minimal}pool:\n  ${line}\n`).issues).toEqual([{ path, message }]);
  });
});

describe('launch configs', () => {
  const types = (small: string, large = '') => `
cloud:
  driver: stub
instanceTypes:
  small:
    providerType: t3.small
    vcpus: 2
    ramMiB: 2048
    price: 0.02
${small}  large:
    providerType: t3.large
    vcpus: 4
    ramMiB: 8192
    price: 0.08
${large}`;
  const parse = (small: string, large = '') => parseConfig(types(small, large), 'test.yml');
  const lcs = (...entries: string[]) => `    launchConfigs:\n${entries.map((entry) => `      - ${entry}\n`).join('')}`;

  it('gives a type without launch configs (absent, null or empty) its default one', () => {
    for (const small of ['', '    launchConfigs:\n', '    launchConfigs: []\n']) {
      expect(parse(small).launchConfigs).toEqual([defaultLaunchConfig('small'), defaultLaunchConfig('large')]);
    }
  });

  it('fills in defaults and hashes the content into the id when none is given', () => {
    const [config] = parse(lcs('{ zone: zone-a, image: img-1, extra: { keyName: ops } }')).launchConfigs;
    const content = { instanceType: 'small', zone: 'zone-a', region: null, subnet: null, image: 'img-1', extra: { keyName: 'ops' } };
    expect(config).toEqual({ id: launchConfigId(content), ...content, weight: 1, maxInstances: null, initialState: 'active' });
    expect(config?.id).toMatch(/^small-[0-9a-f]{12}$/);
  });

  it('reads weight, maxInstances, state and a given id, which is kept as written', () => {
    const [config] = parse(lcs('{ id: small.zone-a_1, zone: zone-a, weight: 2.5, maxInstances: 4, state: paused }')).launchConfigs;
    expect(config).toMatchObject({ id: 'small.zone-a_1', zone: 'zone-a', weight: 2.5, maxInstances: 4, initialState: 'paused' });
  });

  it('gives the same content the same id on every parse, whatever the key order; a changed image a new one', () => {
    const a = parse(lcs('{ zone: zone-a, image: img-1, extra: { a: 1, b: [2, 3] } }')).launchConfigs[0]?.id;
    const b = parse(lcs('{ extra: { b: [2, 3], a: 1 }, weight: 3, image: img-1, zone: zone-a }')).launchConfigs[0]?.id;
    const changed = parse(lcs('{ zone: zone-a, image: img-2, extra: { a: 1, b: [2, 3] } }')).launchConfigs[0]?.id;
    expect(a).toBeDefined();
    expect(b).toBe(a);
    expect(changed).not.toBe(a);
    // The same content for another type is another config.
    expect(parse('', lcs('{ zone: zone-a, image: img-1, extra: { a: 1, b: [2, 3] } }')).launchConfigs[1]?.id).not.toBe(a);
  });

  it('lists every type\'s launch configs in file order, and leaves InstanceType without them', () => {
    const config = parse(lcs('{ id: s1 }', '{ id: s2 }'), lcs('{ id: l1 }'));
    expect(config.launchConfigs.map((launchConfig) => [launchConfig.id, launchConfig.instanceType])).toEqual([
      ['s1', 'small'],
      ['s2', 'small'],
      ['l1', 'large'],
    ]);
    expect(config.instanceTypes.small).not.toHaveProperty('launchConfigs');
    expect(Object.keys(config.instanceTypes.small ?? {}).sort()).toEqual(['gpus', 'name', 'preemptible', 'price', 'providerType', 'ramMiB', 'scratchGiB', 'vcpus']);
  });

  it('rejects an id used twice across the pool, naming the key path and where it was first used', () => {
    const error = configError(types(lcs('{ id: shared, zone: zone-a }'), lcs('{ id: other }', '{ id: shared, zone: zone-b }')));
    expect(error.issues).toEqual([
      {
        path: 'instanceTypes.large.launchConfigs[1].id',
        message: 'duplicate launch config id "shared", already used by instanceTypes.small.launchConfigs[0]; launch config ids must be unique across the pool',
      },
    ]);
  });

  it('rejects two entries of the same content without ids, which would be one config', () => {
    const error = configError(types(lcs('{ zone: zone-a, weight: 1 }', '{ zone: zone-a, weight: 2 }')));
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe('instanceTypes.small.launchConfigs[1].id');
    expect(error.issues[0]?.message).toMatch(/^duplicate launch config id "small-[0-9a-f]{12}": the same content as instanceTypes\.small\.launchConfigs\[0\]/);
  });

  it('reports a duplicate id together with the other problems of the file', () => {
    const error = configError(types(lcs('{ id: twice }', '{ id: twice, weight: 0 }')));
    expect(error.issues.map((issue) => issue.path).sort()).toEqual(['instanceTypes.small.launchConfigs[1].id', 'instanceTypes.small.launchConfigs[1].weight']);
  });

  it.each([
    ['{ weight: 0 }', 'weight', 'must be greater than 0'],
    ['{ weight: -2 }', 'weight', 'must be greater than 0'],
    ['{ weight: heavy }', 'weight', 'expected a number, got "heavy"'],
    ['{ maxInstances: 0 }', 'maxInstances', 'must be at least 1'],
    ['{ maxInstances: 1.5 }', 'maxInstances', 'expected a whole number, got 1.5'],
    ['{ state: broken }', 'state', 'expected one of active, paused, got "broken"'],
    ['{ id: "has space" }', 'id', 'expected 1 to 64 characters from A-Z, a-z, 0-9, ., _ and -'],
    [`{ id: ${'x'.repeat(65)} }`, 'id', 'expected 1 to 64 characters from A-Z, a-z, 0-9, ., _ and -'],
    ['{ zone: "" }', 'zone', 'must not be empty'],
    ['{ image: 5 }', 'image', 'expected a string, got 5'],
    ['{ extra: [1] }', 'extra', 'expected a mapping, got a list'],
    ['{ zones: [a] }', 'zones', 'unknown key'],
  ])('rejects launch config %s, naming the key', (entry, key, message) => {
    const error = configError(types(lcs('{ id: fine }', entry)));
    expect(error.issues).toEqual([{ path: `instanceTypes.small.launchConfigs[1].${key}`, message }]);
  });

  it('rejects a launchConfigs that is not a list', () => {
    expect(configError(types('    launchConfigs: { zone: a }\n')).issues).toEqual([
      { path: 'instanceTypes.small.launchConfigs', message: 'expected a list, got a mapping' },
    ]);
  });

  it('checks nothing driver-specific for the stub: any region, zone or extra is read as written', () => {
    const [config] = parse(lcs('{ region: mars-1, zone: crater-a, extra: { anything: [1] } }')).launchConfigs;
    expect(config).toMatchObject({ region: 'mars-1', zone: 'crater-a', extra: { anything: [1] } });
  });

  describe('with the ec2 driver', () => {
    const ec2 = (small: string) =>
      types(small).replace(
        'driver: stub',
        'driver: ec2\n  ec2:\n    region: us-east-1\n    imageId: ami-0default\n    subnetId: subnet-0default\n    securityGroupIds: [sg-1]',
      );

    it('accepts a launch config of its region with an EC2 image, subnet and launch override fields in extra', () => {
      const config = parseConfig(
        ec2(lcs('{ region: us-east-1, zone: us-east-1b, image: ami-0abc, subnet: subnet-0b, extra: { securityGroupIds: [sg-2], rootVolumeGiB: 50 } }')),
        'test.yml',
      );
      expect(config.launchConfigs[0]).toMatchObject({ region: 'us-east-1', image: 'ami-0abc', extra: { securityGroupIds: ['sg-2'], rootVolumeGiB: 50 } });
    });

    it('rejects a region other than cloud.ec2.region, and a zone outside it', () => {
      const error = configError(ec2(lcs('{ id: west, region: us-west-2, zone: us-west-2a }')));
      expect(error.issues).toEqual([
        {
          path: 'instanceTypes.small.launchConfigs[0].region',
          message: 'must be cloud.ec2.region (us-east-1), the one region the ec2 driver creates in; got "us-west-2"',
        },
        {
          path: 'instanceTypes.small.launchConfigs[0].zone',
          message: 'expected an availability zone of cloud.ec2.region (us-east-1), such as us-east-1a; got "us-west-2a"',
        },
      ]);
    });

    it('rejects an image or subnet that is no AMI or subnet id', () => {
      const error = configError(ec2(lcs('{ image: debian-12, subnet: net-1 }')));
      expect(error.issues).toEqual([
        { path: 'instanceTypes.small.launchConfigs[0].image', message: 'expected an id such as ami-0123456789abcdef0' },
        { path: 'instanceTypes.small.launchConfigs[0].subnet', message: 'expected an id such as subnet-0123456789abcdef0' },
      ]);
    });

    it('checks extra against the EC2 launch override, naming each bad key', () => {
      const error = configError(ec2(lcs('{ extra: { rootVolumeGiB: big, securityGroupIds: [group-1], zone: us-east-1a } }')));
      expect(error.issues).toEqual([
        { path: 'instanceTypes.small.launchConfigs[0].extra.securityGroupIds[0]', message: 'expected an id such as sg-0123456789abcdef0' },
        { path: 'instanceTypes.small.launchConfigs[0].extra.rootVolumeGiB', message: 'expected a number, got "big"' },
        { path: 'instanceTypes.small.launchConfigs[0].extra.zone', message: expect.stringMatching(/^unknown key for the ec2 driver; extra takes imageId, subnetId, securityGroupIds/) },
      ]);
    });

    it('rejects extra repeating the image or subnet the launch config sets itself', () => {
      const error = configError(ec2(lcs('{ image: ami-0a, subnet: subnet-0a, extra: { imageId: ami-0b, subnetId: subnet-0b } }')));
      expect(error.issues.map((issue) => issue.path)).toEqual([
        'instanceTypes.small.launchConfigs[0].extra.imageId',
        'instanceTypes.small.launchConfigs[0].extra.subnetId',
      ]);
      expect(error.issues[0]?.message).toBe('given twice: this launch config sets image (ami-0a) itself; keep one');
    });
  });

  describe('with the gce driver', () => {
    const gce = (small: string, launch = '') =>
      types(small).replace(
        'driver: stub',
        `driver: gce\n  gce:\n    project: p\n    zones: [us-central1-a]\n    image: projects/debian-cloud/global/images/family/debian-12${launch}`,
      );

    it('accepts a zone in the config\'s region and GCE launch override fields in extra', () => {
      const config = parseConfig(gce(lcs('{ region: us-central1, zone: us-central1-f, extra: { bootDiskGiB: 50, acceleratorType: nvidia-tesla-t4 } }')), 'test.yml');
      expect(config.launchConfigs[0]).toMatchObject({ region: 'us-central1', zone: 'us-central1-f', extra: { bootDiskGiB: 50 } });
      // Without a zone of its own, the zone the type creates in must be in the region.
      expect(parseConfig(gce(lcs('{ region: us-central1 }')), 'test.yml').launchConfigs[0]?.region).toBe('us-central1');
    });

    it('rejects a region its zone is not in, naming where the zone comes from', () => {
      expect(configError(gce(lcs('{ region: europe-west4, zone: us-central1-b }'))).issues).toEqual([
        {
          path: 'instanceTypes.small.launchConfigs[0].region',
          message: 'the zone it creates in, us-central1-b (its zone), is not in region europe-west4: expected a zone whose name starts with europe-west4-',
        },
      ]);
      expect(configError(gce(lcs('{ region: us-central }'))).issues[0]?.message).toMatch(/us-central1-a \(cloud\.gce\.zones\[0\]\), is not in region us-central:/);
      const typeLaunch = '\n    launch:\n      small: { zone: us-east1-b }';
      expect(configError(gce(lcs('{ region: us-central1 }'), typeLaunch)).issues[0]?.message).toMatch(/us-east1-b \(cloud\.gce\.launch\.small\.zone\)/);
    });

    it('rejects a zone that is no GCE zone name, and checks extra against the GCE launch override', () => {
      const error = configError(gce(lcs('{ zone: central, extra: { bootDiskGiB: 5, imageId: x } }')));
      expect(error.issues).toEqual([
        { path: 'instanceTypes.small.launchConfigs[0].extra.bootDiskGiB', message: 'must be at least 10' },
        { path: 'instanceTypes.small.launchConfigs[0].extra.imageId', message: expect.stringMatching(/^unknown key for the gce driver; extra takes zone, image, bootDiskGiB/) },
        { path: 'instanceTypes.small.launchConfigs[0].zone', message: 'expected a zone name such as us-central1-a' },
      ]);
    });

    it('rejects extra repeating the zone, image or subnet the launch config sets itself', () => {
      const error = configError(gce(lcs('{ zone: us-central1-b, image: img, subnet: sub, extra: { zone: us-central1-c, image: other, subnetwork: sub2 } }')));
      expect(error.issues.map((issue) => issue.path)).toEqual([
        'instanceTypes.small.launchConfigs[0].extra.zone',
        'instanceTypes.small.launchConfigs[0].extra.image',
        'instanceTypes.small.launchConfigs[0].extra.subnetwork',
      ]);
    });
  });
});
