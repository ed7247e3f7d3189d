// How the CLI finds the daemon without being told: the same default config the daemon reads
// ($DROVER_HOME/config.yml, else the packaged one), and with http.port 0 the URL the daemon wrote.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiClient, ApiUnreachableError, ClientSettingsError, resolveClientSettings } from '../src/cli/client.js';
import { packagedConfigPath } from '../src/config/home.js';
import { daemonUrlFile, readDaemonUrl, removeDaemonUrl, writeDaemonUrl } from '../src/daemon/url-file.js';
import { closedUrl } from './support/run-drover.js';
import { shippedConfig } from './support/shipped-config.js';

let home: string;
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'drover-client-settings-'));
  vi.stubEnv('DROVER_HOME', home);
  vi.stubEnv('DROVER_URL', '');
  vi.stubEnv('DROVER_TOKEN', '');
});
afterEach(() => {
  vi.unstubAllEnvs();
});

describe('resolveClientSettings without --config', () => {
  it('reads the packaged config with its token file in DROVER_HOME', () => {
    writeFileSync(join(home, 'token'), 'from-home\n');
    expect(resolveClientSettings({})).toEqual({ url: 'http://127.0.0.1:8420', token: 'from-home', tokenSource: `DROVER_TOKEN or ${join(home, 'token')}` });
  });

  it('reads $DROVER_HOME/config.yml when it exists', () => {
    writeFileSync(join(home, 'config.yml'), shippedConfig('loopback.yml', { 'http.port': 9999, 'http.tokenFile': 'keys/api-token' }));
    expect(() => resolveClientSettings({})).toThrow(`there is no API token file at ${join(home, 'keys', 'api-token')} (http.tokenFile in ${join(home, 'config.yml')})`);
    vi.stubEnv('DROVER_TOKEN', 't');
    expect(resolveClientSettings({}).url).toBe('http://127.0.0.1:9999');
  });

  it('with http.port 0, reads the URL the daemon wrote next to its token before each request; none is the daemon unreachable', async () => {
    writeFileSync(join(home, 'config.yml'), shippedConfig('loopback.yml', { 'http.port': 0 }));
    vi.stubEnv('DROVER_TOKEN', 't');
    const file = join(home, 'daemon.url');
    const client = new ApiClient(resolveClientSettings({}));
    const missing = `cannot reach the drover daemon: http.port is 0 in ${join(home, 'config.yml')}, so its URL is read from ${file}, which does not exist; is the daemon running (drover run)? Or set DROVER_URL`;
    await expect(client.health()).rejects.toThrow(ApiUnreachableError);
    await expect(client.health()).rejects.toThrow(missing);
    expect(client.url).toBe(`the URL in ${file}`);

    // A daemon started, then another on a new port: each request goes where the file says now.
    for (const url of [await closedUrl(), await closedUrl()]) {
      writeDaemonUrl(file, url);
      await expect(client.health()).rejects.toThrow(`cannot reach the drover daemon at ${url}: connect ECONNREFUSED`);
      expect(client.url).toBe(url);
    }
    removeDaemonUrl(file, readDaemonUrl(file) ?? '');
    await expect(client.health()).rejects.toThrow(missing);

    // --url and DROVER_URL still win, and are never read again.
    vi.stubEnv('DROVER_URL', 'http://127.0.0.1:1');
    expect(resolveClientSettings({}).url).toBe('http://127.0.0.1:1');
    expect(resolveClientSettings({ url: 'http://127.0.0.1:2' }).url).toBe('http://127.0.0.1:2');
  });

  it('says no daemon has been started in this DROVER_HOME when its token file is missing, and how to start one', () => {
    const tokenFile = join(home, 'token');
    expect(() => resolveClientSettings({})).toThrow(ClientSettingsError);
    expect(() => resolveClientSettings({})).toThrow(
      `no daemon has been started in DROVER_HOME ${home}: there is no API token file at ${tokenFile} (http.tokenFile in ${packagedConfigPath()}), ` +
        'which the daemon writes on its first start; start it with `drover run` (`npm start` in the repository), or set DROVER_TOKEN to the token of a daemon running elsewhere',
    );
    // A config named on the command line is the one to start the daemon with.
    const config = join(home, 'other.yml');
    writeFileSync(config, shippedConfig('loopback.yml', { 'http.tokenFile': '/nonexistent/drover/token' }));
    expect(() => resolveClientSettings({ config })).toThrow(
      `no daemon has been started with ${config}: there is no API token file at /nonexistent/drover/token (http.tokenFile in ${config}), ` +
        'which the daemon writes on its first start; start it with `drover run --config ' + config + '`, or set DROVER_TOKEN to the token of a daemon running elsewhere',
    );
  });
});

describe('the daemon URL file', () => {
  it('is removed only while it still names the daemon removing it', () => {
    const file = daemonUrlFile({ tokenFile: join(home, 'token') });
    expect(readDaemonUrl(file)).toBeUndefined();
    writeDaemonUrl(file, 'http://127.0.0.1:1');
    writeDaemonUrl(file, 'http://127.0.0.1:2');
    removeDaemonUrl(file, 'http://127.0.0.1:1');
    expect(readDaemonUrl(file)).toBe('http://127.0.0.1:2');
    removeDaemonUrl(file, 'http://127.0.0.1:2');
    expect(readDaemonUrl(file)).toBeUndefined();
  });
});
