// README's quick start as a new user meets it, from a directory that is not the repository: the
// `drover` command that `npm link` installs (here into a temp prefix, not the machine's), a state
// directory of its own (DROVER_HOME) whose config.yml takes any free port, and `npx drover` for
// every client command. It runs the compiled CLI in dist/, which `npm ci` builds (prepare).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shippedConfig } from './support/shipped-config.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'drover-quick-start-'));
const home = join(root, 'home');
const work = join(root, 'work');
const prefix = join(root, 'prefix');
const children = new Set<ChildProcess>();

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

// A user's environment: none of the npm_* settings of the npm that runs the tests (its prefix
// would be the repository), no daemon settings, and the temp prefix's bin on PATH as a global
// install would be.
const env: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key) && key !== 'DROVER_URL' && key !== 'DROVER_TOKEN'),
);
Object.assign(env, {
  DROVER_HOME: home,
  npm_config_prefix: prefix,
  npm_config_update_notifier: 'false',
  npm_config_fund: 'false',
  npm_config_audit: 'false',
  PATH: `${join(prefix, 'bin')}${delimiter}${process.env.PATH ?? ''}`,
});

function start(command: string, args: string[], cwd: string): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done };
}

const run = (command: string, args: string[], cwd = work) => start(command, args, cwd).done;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist', 'src', 'cli', 'main.js'))) {
    throw new Error(`${join(repoRoot, 'dist')} is missing: run npm run build (npm ci does it)`);
  }
  mkdirSync(home, { mode: 0o700 });
  mkdirSync(work);
  // Without its scripts: prepare would build dist/ again, which npm ci (or npm test) has just done.
  const linked = await run('npm', ['link', '--ignore-scripts'], repoRoot);
  expect(linked, linked.stderr).toMatchObject({ code: 0 });
});

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('the quick start, from another directory', () => {
  it('runs a daemon, submits and waits, lists, prints the version, and stops on SIGINT with exit code 0', async () => {
    // The state directory's config.yml is the default config; port 0 keeps 8420 free for anyone else.
    writeFileSync(join(home, 'config.yml'), shippedConfig('loopback.yml', { 'http.port': 0 }));
    const daemon = start(join(prefix, 'bin', 'drover'), ['run'], work);
    let exited: Run | undefined;
    void daemon.done.then((result) => (exited = result));

    // The daemon writes the URL it listens on next to its token; that is how the CLI finds it.
    const urlFile = join(home, 'daemon.url');
    const deadline = Date.now() + 20_000;
    while (!existsSync(urlFile) && exited === undefined && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(exited, `the daemon ended early: ${exited?.stderr}`).toBeUndefined();
    expect(readFileSync(urlFile, 'utf8')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\n$/);

    const submitted = await run('npx', ['drover', 'submit', '--wait', '--', 'sh', '-c', 'echo hello; exit 3']);
    expect(submitted.stdout).toBe('hello\n');
    expect(submitted.stderr).toMatch(/^[0-9a-f-]{36}\n$/);
    expect(submitted.code).toBe(3);
    const uuid = submitted.stderr.trim();

    const containers = await run('npx', ['drover', 'containers']);
    expect(containers.code, containers.stderr).toBe(0);
    expect(containers.stdout.split('\n').find((line) => line.startsWith(uuid))?.split(/\s+/).slice(0, 2)).toEqual([uuid, 'complete']);

    const version = await run('npx', ['drover', '--version']);
    const { version: packaged } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    expect(version).toMatchObject({ code: 0, stdout: `${packaged}\n` });

    daemon.child.kill('SIGINT');
    const stopped = await daemon.done;
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain('"msg":"drover stopped"');
    expect(existsSync(urlFile)).toBe(false);
    // Its state went to DROVER_HOME, not the working directory.
    expect(existsSync(join(home, 'queue.sqlite'))).toBe(true);
    expect(existsSync(join(home, 'token'))).toBe(true);
    expect(existsSync(join(work, '.drover'))).toBe(false);
  });
});
