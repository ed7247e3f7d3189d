// The first-boot init script, run for real under sh with a temp directory as the user's home.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { initScript, instanceSecretFile, readInstanceSecretCommand } from '../src/cloud/init-script.js';

const sshPublicKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmXdDfDGQEwMf1e7bPHd8Fj3l3MdJr4ahN1IvprqyP4 drover';
const secret = '0f'.repeat(32);
// The user running the test: the script then needs no root for chown.
const username = userInfo().username;

let dir: string;
let home: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'init-script-test-'));
  home = join(dir, 'home');
  mkdirSync(home);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

function runScript(script: string): void {
  const path = join(dir, 'init.sh');
  writeFileSync(path, script);
  execFileSync('sh', [path], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

describe('initScript', () => {
  it('installs the key and the secret, private to the user', () => {
    runScript(initScript({ username, sshPublicKey, secret, home }));
    const authorizedKeys = join(home, '.ssh', 'authorized_keys');
    const secretPath = join(home, instanceSecretFile);
    expect(readFileSync(authorizedKeys, 'utf8')).toBe(`${sshPublicKey}\n`);
    expect(readFileSync(secretPath, 'utf8')).toBe(`${secret}\n`);
    expect(mode(authorizedKeys)).toBe(0o600);
    expect(mode(secretPath)).toBe(0o600);
    expect(mode(join(home, '.ssh'))).toBe(0o700);
    expect(mode(join(home, '.drover'))).toBe(0o700);
    for (const path of [authorizedKeys, secretPath]) expect(statSync(path).uid).toBe(userInfo().uid);
  });

  it('keeps keys already authorized and adds its own once', () => {
    mkdirSync(join(home, '.ssh'));
    const theirs = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKeyOth cloud';
    writeFileSync(join(home, '.ssh', 'authorized_keys'), `${theirs}\n`);
    const script = initScript({ username, sshPublicKey, secret, home });
    runScript(script);
    runScript(script);
    expect(readFileSync(join(home, '.ssh', 'authorized_keys'), 'utf8')).toBe(`${theirs}\n${sshPublicKey}\n`);
  });

  it('writes a secret that the read-back command prints', () => {
    runScript(initScript({ username, sshPublicKey, secret, home }));
    const out = execFileSync('sh', ['-c', readInstanceSecretCommand], { env: { ...process.env, HOME: home } });
    expect(out.toString().trim()).toBe(secret);
  });

  it('quotes what it embeds, so a home with quotes and spaces is safe', () => {
    const odd = join(dir, `it's a $(home)`);
    mkdirSync(odd);
    runScript(initScript({ username, sshPublicKey, secret, home: odd }));
    expect(readFileSync(join(odd, instanceSecretFile), 'utf8')).toBe(`${secret}\n`);
  });

  it('looks the home directory up on a real instance', () => {
    expect(initScript({ username: 'drover', sshPublicKey, secret })).toContain(`home=$(getent passwd "$user" | cut -d: -f6)`);
  });

  it('refuses input that is not a key, a login name or a hex secret', () => {
    expect(() => initScript({ username: 'a b', sshPublicKey, secret })).toThrow(/login name/);
    expect(() => initScript({ username, sshPublicKey: `${sshPublicKey}\nrm -rf /`, secret })).toThrow(/sshPublicKey/);
    expect(() => initScript({ username, sshPublicKey, secret: "x'; rm -rf /" })).toThrow(/hex/);
  });
});
