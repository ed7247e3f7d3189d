// The first-boot init script, run for real under sh with a temp directory as the user's home.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
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

function runScript(script: string, env: NodeJS.ProcessEnv = process.env): void {
  const path = join(dir, 'init.sh');
  writeFileSync(path, script);
  execFileSync('sh', [path], { stdio: ['ignore', 'pipe', 'pipe'], env });
}

/** Runs the script expecting it to fail; its stderr. */
function failingScript(script: string): string {
  try {
    runScript(script);
  } catch (error) {
    return String((error as { stderr?: Buffer }).stderr ?? '');
  }
  throw new Error('the init script succeeded');
}

/** A file outside the home that a planted symlink points at: root must never write through it. */
function victim(): { path: string; untouched: () => void } {
  const path = join(dir, 'victim');
  writeFileSync(path, 'not yours\n', { mode: 0o644 });
  return {
    path,
    untouched: () => {
      expect(readFileSync(path, 'utf8')).toBe('not yours\n');
      expect(mode(path)).toBe(0o644);
    },
  };
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

  it("succeeds when the user appears between its check and useradd (GCE's guest agent), with no adduser -D", () => {
    // Shims: id says no such user once, then asks the real one; useradd finds it exists; a
    // Debian adduser has no -D.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const realId = execFileSync('sh', ['-c', 'command -v id']).toString().trim();
    const shim = (name: string, body: string) => writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    shim('id', `if [ "$#" = 1 ] && [ ! -e ${JSON.stringify(join(dir, 'seen'))} ]; then : >${JSON.stringify(join(dir, 'seen'))}; exit 1; fi\nexec ${realId} "$@"`);
    shim('useradd', `echo "useradd: user '$5' already exists" >&2; exit 9`);
    shim('adduser', 'echo "adduser: Unknown option: D" >&2; exit 1');
    runScript(initScript({ username, sshPublicKey, secret, home }), { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` });
    expect(readFileSync(join(home, instanceSecretFile), 'utf8')).toBe(`${secret}\n`);
  });

  it('refuses, loudly, to write through an authorized_keys the user made a symlink', () => {
    const target = victim();
    mkdirSync(join(home, '.ssh'));
    symlinkSync(target.path, join(home, '.ssh', 'authorized_keys'));
    expect(failingScript(initScript({ username, sshPublicKey, secret, home }))).toMatch(/authorized_keys is a symbolic link/);
    target.untouched();
  });

  it('refuses a symlinked secret file, ~/.ssh or ~/.drover, writing nothing through them', () => {
    const target = victim();
    mkdirSync(join(home, '.drover'));
    symlinkSync(target.path, join(home, instanceSecretFile));
    expect(failingScript(initScript({ username, sshPublicKey, secret, home }))).toMatch(/instance-secret is a symbolic link/);
    target.untouched();

    for (const name of ['.ssh', '.drover']) {
      rmSync(home, { recursive: true });
      mkdirSync(home);
      const elsewhere = join(dir, `elsewhere${name}`);
      mkdirSync(elsewhere, { mode: 0o755 });
      symlinkSync(elsewhere, join(home, name));
      expect(failingScript(initScript({ username, sshPublicKey, secret, home }))).toMatch(new RegExp(`\\${name} is a symbolic link`));
      expect(readdirSync(elsewhere)).toEqual([]);
      expect(mode(elsewhere)).toBe(0o755);
    }
  });

  it('removes a temp file the user planted as a symlink instead of writing through it', () => {
    const target = victim();
    mkdirSync(join(home, '.drover'));
    mkdirSync(join(home, '.ssh'));
    symlinkSync(target.path, join(home, `${instanceSecretFile}.tmp`));
    symlinkSync(target.path, join(home, '.ssh', 'authorized_keys.tmp'));
    runScript(initScript({ username, sshPublicKey, secret, home }));
    target.untouched();
    expect(readFileSync(join(home, instanceSecretFile), 'utf8')).toBe(`${secret}\n`);
    expect(readFileSync(join(home, '.ssh', 'authorized_keys'), 'utf8')).toBe(`${sshPublicKey}\n`);
  });

  it('adds its key on a line of its own after a last key without a newline', () => {
    mkdirSync(join(home, '.ssh'));
    writeFileSync(join(home, '.ssh', 'authorized_keys'), 'ssh-ed25519 AAAA theirs');
    runScript(initScript({ username, sshPublicKey, secret, home }));
    expect(readFileSync(join(home, '.ssh', 'authorized_keys'), 'utf8')).toBe(`ssh-ed25519 AAAA theirs\n${sshPublicKey}\n`);
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
