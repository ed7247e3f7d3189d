// `drover run --config config/ec2.yml` (or gce.yml) as an operator without credentials meets it:
// one line naming what is missing and exit code 2, before anything is created or listed; and with
// credentials but no SSH key, the same for ssh.privateKeyFile.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runDrover, type Run } from './support/run-drover.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function runConfig(configFile: string, extraEnv: Record<string, string> = {}): Promise<Run> {
  const home = mkdtempSync(join(tmpdir(), 'drover-ec2-'));
  dirs.push(home);
  // No credentials anywhere the SDK's default chain looks: no AWS_* variables, an empty HOME (no
  // ~/.aws), and both clouds' instance metadata services switched off, even were CI on a cloud VM.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('AWS_') && !key.startsWith('GOOGLE_')));
  Object.assign(env, { HOME: home, DROVER_HOME: home, AWS_EC2_METADATA_DISABLED: 'true', METADATA_SERVER_DETECTION: 'none', ...extraEnv });
  // A daemon that did start would run on; it is stopped so the test ends either way.
  return runDrover(['run', '--config', configFile], env, { timeoutMs: 30_000 });
}

describe('drover run on a cloud it has no credentials for', () => {
  it('without credentials: exit 2 and one line saying which credentials to set', async () => {
    const result = await runConfig('config/ec2.yml');
    expect(result.stderr).toMatch(/^drover: .*no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.code).toBe(2);
  });

  it('with credentials but no SSH key: exit 2 naming ssh.privateKeyFile', async () => {
    const result = await runConfig('config/ec2.yml', { AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'example' });
    expect(result.stderr).toMatch(/^drover: ssh\.privateKeyFile: .*id_ed25519: cannot be read/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.code).toBe(2);
  });

  it('GCE without application default credentials: exit 2 and one line saying what to set', async () => {
    const result = await runConfig('config/gce.yml');
    expect(result.stderr).toMatch(/^drover: GCE: no usable Google credentials for project .*set GOOGLE_APPLICATION_CREDENTIALS/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.code).toBe(2);
  });
});
