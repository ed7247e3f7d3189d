// How the CLI finds the daemon without being told: the same default config the daemon reads
// ($DROVER_HOME/config.yml, else the packaged one), and with http.port 0 the URL the daemon wrote.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClientSettingsError, resolveClientSettings } from '../src/cli/client.js';
import { daemonUrlFile, readDaemonUrl, removeDaemonUrl, writeDaemonUrl } from '../src/daemon/url-file.js';
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
    expect(() => resolveClientSettings({})).toThrow(`no API token file at ${join(home, 'keys', 'api-token')} (http.tokenFile in ${join(home, 'config.yml')}); the daemon writes it on its first start (drover run), or set DROVER_TOKEN`);
    vi.stubEnv('DROVER_TOKEN', 't');
    expect(resolveClientSettings({}).url).toBe('http://127.0.0.1:9999');
  });

  it('with http.port 0, takes the URL the daemon wrote next to its token, and says so when there is none', () => {
    writeFileSync(join(home, 'config.yml'), shippedConfig('loopback.yml', { 'http.port': 0 }));
    vi.stubEnv('DROVER_TOKEN', 't');
    const file = join(home, 'daemon.url');
    expect(() => resolveClientSettings({})).toThrow(ClientSettingsError);
    expect(() => resolveClientSettings({})).toThrow(
      `http.port is 0 in ${join(home, 'config.yml')}, so the daemon's URL is read from ${file}, which does not exist; is the daemon running (drover run)? Or set DROVER_URL`,
    );
    writeDaemonUrl(daemonUrlFile({ tokenFile: join(home, 'token') }), 'http://127.0.0.1:40123');
    expect(resolveClientSettings({}).url).toBe('http://127.0.0.1:40123');
    // --url and DROVER_URL still win.
    vi.stubEnv('DROVER_URL', 'http://127.0.0.1:1');
    expect(resolveClientSettings({}).url).toBe('http://127.0.0.1:1');
    expect(resolveClientSettings({ url: 'http://127.0.0.1:2' }).url).toBe('http://127.0.0.1:2');
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
