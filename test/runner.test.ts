// drover-runner.sh run directly with a POSIX sh (dash where installed) on real processes.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { waitFor } from './support/fixtures.js';
import { parseRunnerList } from '../src/pool/runner-list.js';
import { runnerExit } from '../src/runner/deploy.js';

const SCRIPT = fileURLToPath(new URL('../src/runner/drover-runner.sh', import.meta.url));
// dash is the strictest common sh; running under it keeps bash-isms out of the script.
const SHELL = existsSync('/bin/dash') || existsSync('/usr/bin/dash') ? 'dash' : 'sh';
const HAS_PROC = existsSync('/proc/self/stat');

interface Result {
  stdout: string;
  stderr: string;
  code: number | null;
}

let dir: string;

function runner(...args: string[]): Promise<Result> {
  return runnerWith({}, ...args);
}

function runnerWith(env: Record<string, string>, ...args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(SHELL, [SCRIPT, ...args], {
      env: { ...process.env, DROVER_RUNNER_DIR: dir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), code }),
    );
  });
}

async function ok(...args: string[]): Promise<string> {
  const result = await runner(...args);
  if (result.code !== 0) throw new Error(`runner ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

async function list(): Promise<ReturnType<typeof parseRunnerList>> {
  return parseRunnerList(await ok('list'));
}

function exitCodeOf(uuid: string): Promise<number> {
  return waitFor(`${uuid} to exit`, async () => (await list()).exited.get(uuid));
}

/** Lets a container started with `gated(...)` go on. */
function release(uuid: string): Promise<void> {
  return writeFile(join(dir, uuid, 'work', 'go'), '');
}

/** A command that waits in its work directory for release(), then runs `then`. */
function gated(then: string): string[] {
  return ['sh', '-c', `while [ ! -f go ]; do sleep 0.02; done; ${then}`];
}

/** Runs the runner with `args` and how many ms it took. */
async function timed(...args: string[]): Promise<{ stdout: string; ms: number }> {
  const started = Date.now();
  const stdout = await ok(...args);
  return { stdout, ms: Date.now() - started };
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  return false;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drover-runner-'));
});

afterEach(async () => {
  // Leave no stray processes behind, whatever a test did.
  const { running } = await list().catch(() => ({ running: [] as string[] }));
  for (const uuid of running) await runner('kill', 'KILL', uuid);
  await rm(dir, { recursive: true, force: true });
});

describe('drover-runner', () => {
  it('starts a container, lists it running then exited with its code, and keeps its output', async () => {
    expect(await ok('start', 'c1', '--env', 'N=7', '--', ...gated('echo out-$N; echo err >&2; exit 3'))).toBe('');
    expect(await ok('list')).toBe('c1 running\n');

    await release('c1');
    expect(await exitCodeOf('c1')).toBe(3);
    expect(await ok('list')).toBe('c1 exited 3\n');
    const logs = await ok('logs', 'c1');
    expect(logs).toContain('out-7');
    expect(logs).toContain('err');
    expect(await ok('logs', 'c1', '4')).toBe('[drover: 10 bytes of output; the first 6 were dropped, the last 4 kept]\nerr\n');
  });

  it('never starts a uuid twice', async () => {
    await ok('start', 'c1', '--', ...gated('echo first'));
    const again = await runner('start', 'c1', '--', 'sh', '-c', 'echo second');
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('already exists');

    await release('c1');
    expect(await exitCodeOf('c1')).toBe(0);
    expect(await ok('logs', 'c1')).toBe('first\n');
  });

  it('passes arguments and environment values through intact', async () => {
    const args = ['a b', "it's", 'line1\nline2', '', '"dq"', '$HOME', '*', '\\', 'trailing\n', "'"];
    await ok('start', 'args', '--', 'sh', '-c', 'printf "%s|" "$@"', 'argv0', ...args);
    expect(await exitCodeOf('args')).toBe(0);
    expect(await ok('logs', 'args')).toBe(args.map((arg) => `${arg}|`).join(''));

    const value = "it's a $VALUE\nwith `ticks` and \\ and trailing newline\n";
    await ok('start', 'env', '--env', `V=${value}`, '--env', 'EMPTY=', '--', 'sh', '-c', 'printf "%s|%s" "$V" "${EMPTY-unset}"');
    expect(await exitCodeOf('env')).toBe(0);
    expect(await ok('logs', 'env')).toBe(`${value}|`);
  });

  it('starts the tail of long output with a line saying how much was dropped', async () => {
    // 200,007 bytes: the digits 0-9 over and over, then THE END.
    await ok('start', 'big', '--', 'awk', 'BEGIN { for (i = 0; i < 200000; i++) printf "%d", i % 10; printf "THE END" }');
    expect(await exitCodeOf('big')).toBe(0);
    const expected = Array.from({ length: 200_000 }, (_, i) => String(i % 10)).join('') + 'THE END';
    const logs = await ok('logs', 'big', '65536');
    const marker = '[drover: 200007 bytes of output; the first 134471 were dropped, the last 65536 kept]\n';
    expect(logs.startsWith(marker)).toBe(true);
    expect(logs.slice(marker.length)).toBe(expected.slice(-65536));
    expect(logs.endsWith('6789THE END')).toBe(true);
    // The default BYTES is 65536 too; leading zeros are decimal, not octal.
    expect(await ok('logs', 'big')).toBe(logs);
    expect(await ok('logs', 'big', '010')).toBe(
      '[drover: 200007 bytes of output; the first 199997 were dropped, the last 10 kept]\n789THE END',
    );
    // All of it, or more: no line.
    expect(await ok('logs', 'big', '200007')).toBe(expected);
    expect(await ok('logs', 'big', '99999999999999999999')).toBe(expected);
  });

  it('prints short output as it is, with no line about dropped bytes', async () => {
    await ok('start', 'small', '--', 'sh', '-c', 'echo just this');
    expect(await exitCodeOf('small')).toBe(0);
    expect(await ok('logs', 'small', '65536')).toBe('just this\n');
    expect(await ok('logs', 'small', '10')).toBe('just this\n');
    expect(await ok('logs', 'small', '9')).toBe('[drover: 10 bytes of output; the first 1 were dropped, the last 9 kept]\nust this\n');
  });

  it('runs the command in the container work directory', async () => {
    await ok('start', 'wd', '--', 'pwd');
    expect(await exitCodeOf('wd')).toBe(0);
    expect((await ok('logs', 'wd')).trim()).toMatch(/\/wd\/work$/);
  });

  it('kills the whole process group and reports 128 + signal', async () => {
    await ok('start', 'term', '--', 'sleep', '30');
    await ok('start', 'tree', '--', 'sh', '-c', 'sleep 30 & sleep 30; wait');
    await ok('start', 'hard', '--', 'sleep', '30');
    expect((await list()).running).toEqual(['hard', 'term', 'tree']);

    await ok('kill', 'TERM', 'term');
    await ok('kill', 'SIGTERM', 'tree');
    await ok('kill', '9', 'hard');
    expect(await exitCodeOf('term')).toBe(143);
    expect(await exitCodeOf('tree')).toBe(143);
    // KILL takes the wrapper down too, so the code comes from the signal kill recorded.
    expect(await exitCodeOf('hard')).toBe(137);
    // Nothing of the group survives: no sleep of ours is left.
    const pid = Number(await readFile(join(dir, 'tree', 'pid'), 'utf8'));
    if (HAS_PROC) {
      await waitFor('the group to end', async () => ((await processesInGroup(pid)).length === 0 ? true : undefined));
    }
    // Killing a finished container is not an error.
    await ok('kill', 'TERM', 'term');
  });

  it('refuses to remove a running container and removes a finished one', async () => {
    await ok('start', 'c1', '--', ...gated('exit 0'));
    const refused = await runner('remove', 'c1');
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('still running');

    await release('c1');
    await exitCodeOf('c1');
    await ok('remove', 'c1');
    expect(await ok('list')).toBe('');
    expect((await runner('logs', 'c1')).code).toBe(4);
  });

  it('runs the container detached: it outlives the shell that started it', async () => {
    // The starting shell stays alive in its own process group, which is then killed outright,
    // as an SSH session's processes would be.
    const starter = spawn(
      'sh',
      ['-c', `${SHELL} "$0" start bg -- sh -c 'while [ ! -f go ]; do sleep 0.02; done; echo finished' && echo started && exec sleep 30`, SCRIPT],
      { detached: true, env: { ...process.env, DROVER_RUNNER_DIR: dir }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      starter.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('started')) resolve();
      });
      starter.on('exit', () => reject(new Error('the starting shell ended before it started the container')));
    });
    const starterGone = new Promise((resolve) => starter.on('exit', resolve));
    process.kill(-(starter.pid as number), 'SIGKILL');
    await starterGone;

    expect((await list()).running).toEqual(['bg']);
    const pid = Number(await readFile(join(dir, 'bg', 'pid'), 'utf8'));
    if (HAS_PROC) {
      // pid is the leader of its own session and process group, which is what `kill` signals.
      const fields = await statFields(pid);
      expect(fields.pgrp).toBe(pid);
      expect(fields.session).toBe(pid);
    }
    await release('bg');
    expect(await exitCodeOf('bg')).toBe(0);
    expect(await ok('logs', 'bg')).toBe('finished\n');
  });

  it('refuses bad uuids and creates nothing for them', async () => {
    for (const uuid of ['../x', 'a/b', '.', '..', 'a b', '', 'x;y', 'é']) {
      const result = await runner('start', uuid, '--', 'true');
      expect(result.code, `uuid ${JSON.stringify(uuid)}`).toBe(2);
      expect(result.stderr).toContain('invalid container uuid');
    }
    expect((await runner('logs', '../x')).code).toBe(2);
    expect(await readdir(dir)).toEqual([]);
  });

  it('answers usage errors, unknown uuids and version', async () => {
    const unknown = await runner('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('usage:');
    expect((await runner()).code).toBe(2);
    expect((await runner('start', 'c1', 'sleep', '1')).code).toBe(2);
    expect((await runner('start', 'c1', '--')).code).toBe(2);
    expect((await runner('start', 'c1', '--docker', '--', 'true')).code).toBe(2);
    expect((await runner('start', 'c1', '--env', '1X=2', '--', 'true')).code).toBe(2);
    expect((await runner('kill', 'TERM', 'nope')).code).toBe(4);
    expect((await runner('logs', 'nope')).code).toBe(4);
    expect((await runner('remove', 'nope')).code).toBe(4);
    await ok('start', 'c1', '--', 'true');
    expect((await runner('kill', 'NOSUCHSIGNAL', 'c1')).code).toBe(2);
    expect(await ok('version')).toBe('drover-runner 1\n');
  });

  it('reads a container without a pid yet as running, and one that vanished as exited 255', async () => {
    expect(await ok('list')).toBe('');

    // Mid-start: the directory exists and the start process (here: this one) is alive.
    await mkdir(join(dir, 'starting'));
    await writeFile(join(dir, 'starting', 'starter'), `${process.pid}\n`);

    // Its wrapper is gone and never wrote an exit code: killed hard, or the VM rebooted.
    const dead = spawn('true');
    await new Promise((resolve) => dead.on('close', resolve));
    await mkdir(join(dir, 'vanished'));
    await writeFile(join(dir, 'vanished', 'pid'), `${dead.pid}\n`);

    expect(processGone(dead.pid as number)).toBe(true);
    expect(await ok('list')).toBe('starting running\nvanished exited 255\n');
    // Nothing runs there for afterEach to kill.
    await rm(join(dir, 'starting'), { recursive: true });
  });
});

describe('drover-runner wait', () => {
  it('returns at once when a container has exited that the caller does not know of', async () => {
    await ok('start', 'done', '--', 'sh', '-c', 'exit 4');
    await ok('start', 'busy', '--', ...gated('exit 0'));
    expect(await exitCodeOf('done')).toBe(4);

    const { stdout, ms } = await timed('wait', '30');
    expect(stdout).toBe('busy running\ndone exited 4\n');
    expect(ms).toBeLessThan(5_000);
    // Output and parser are list's.
    expect(stdout).toBe(await ok('list'));
  });

  it('returns when a running container ends, well before SECONDS, listing its code', async () => {
    await ok('start', 'slow', '--', 'sh', '-c', 'sleep 1; exit 7');
    expect(await ok('list')).toBe('slow running\n');

    const { stdout, ms } = await timed('wait', '30');
    expect(parseRunnerList(stdout).exited).toEqual(new Map([['slow', 7]]));
    expect(ms).toBeLessThan(10_000);
  });

  it('returns after SECONDS with the list when nothing new ends', async () => {
    await ok('start', 'busy', '--', ...gated('exit 0'));
    const { stdout, ms } = await timed('wait', '1');
    expect(stdout).toBe('busy running\n');
    expect(ms).toBeGreaterThanOrEqual(950);
    expect(ms).toBeLessThan(5_000);

    // 0 looks once: a list that also says whether anything new ended.
    expect((await timed('wait', '0')).stdout).toBe('busy running\n');
  });

  it('ignores exited containers passed as known, and wakes for one that is not', async () => {
    await ok('start', 'old', '--', 'true');
    await ok('start', '.old2', '--', 'sh', '-c', 'exit 2');
    expect(await exitCodeOf('old')).toBe(0);
    expect(await exitCodeOf('.old2')).toBe(2);

    const idle = await timed('wait', '1', 'old', '.old2');
    expect(idle.stdout).toBe('.old2 exited 2\nold exited 0\n');
    expect(idle.ms).toBeGreaterThanOrEqual(950);

    // Known but unrelated uuids (long gone, or never here) change nothing.
    await ok('start', 'new', '--', 'sh', '-c', 'sleep 0.5; exit 1');
    const woken = await timed('wait', '30', 'old', '.old2', 'gone');
    expect(parseRunnerList(woken.stdout).exited.get('new')).toBe(1);
    expect(woken.ms).toBeLessThan(10_000);
  });

  it('refuses a bad SECONDS or uuid with exit 2', async () => {
    for (const args of [[], ['-1'], ['1.5'], ['x'], [''], ['1234567890'], ['1', '../x'], ['1', '.']]) {
      const result = await runner('wait', ...args);
      expect(result.code, `wait ${JSON.stringify(args)}`).toBe(runnerExit.usage);
    }
    // Leading zeros are decimal, not octal.
    await ok('start', 'done', '--', 'true');
    expect(await exitCodeOf('done')).toBe(0);
    expect((await timed('wait', '08')).stdout).toBe('done exited 0\n');
    expect((await timed('wait', '000')).stdout).toBe('done exited 0\n');
  });
});

describe('drover-runner tombstones and exit codes', () => {
  it('never lists a tombstone, and starts and removes its uuid afresh', async () => {
    // What a remove killed between its rename and the end of its rm -rf leaves behind.
    for (const tomb of ['c1.123', '.dot.456']) {
      await mkdir(join(dir, '+tombs', tomb, 'work'), { recursive: true });
      await writeFile(join(dir, '+tombs', tomb, 'exit'), '9\n');
      await writeFile(join(dir, '+tombs', tomb, 'pid'), '1\n');
    }
    expect(await ok('list')).toBe('');
    expect((await timed('wait', '0')).stdout).toBe('');
    expect((await runner('logs', 'c1')).code).toBe(runnerExit.unknown);
    expect((await runner('remove', 'c1')).code).toBe(runnerExit.unknown);
    expect((await runner('logs', '+tombs')).code).toBe(runnerExit.usage);

    await ok('start', 'c1', '--', 'sh', '-c', 'echo fresh');
    expect(await exitCodeOf('c1')).toBe(0);
    expect(await ok('list')).toBe('c1 exited 0\n');
    expect(await ok('logs', 'c1')).toBe('fresh\n');
    await ok('remove', 'c1');
    expect(await ok('list')).toBe('');
    // The remove renamed c1 away and deleted it, and swept up what older removes left.
    expect(await readdir(dir)).toEqual(['+tombs']);
    expect(await readdir(join(dir, '+tombs'))).toEqual([]);
    // A removed uuid can be started again.
    await ok('start', 'c1', '--', 'true');
    expect(await exitCodeOf('c1')).toBe(0);
  });

  it('answers 5, not 1, for a start whose command may run but whose pid never came', async () => {
    // Shims: a no-op sleep makes the runner's two 10 s waits for the pid instant, and an mv that
    // refuses to rename anything onto `pid` keeps the wrapper (which claims and runs) silent.
    // Outside the state directory, where it would be listed as a container.
    const bin = await mkdtemp(join(tmpdir(), 'drover-runner-bin-'));
    onTestFinished(() => rm(bin, { recursive: true, force: true }));
    const mv = await realPath('mv');
    await writeFile(join(bin, 'sleep'), '#!/bin/sh\nexit 0\n');
    await writeFile(join(bin, 'mv'), `#!/bin/sh\nfor to; do :; done\ncase $to in */pid) exit 1 ;; esac\nexec '${mv}' "$@"\n`);
    await chmod(join(bin, 'sleep'), 0o755);
    await chmod(join(bin, 'mv'), 0o755);

    const result = await runnerWith({ PATH: `${bin}:${process.env.PATH ?? ''}` }, 'start', 'mute', '--', 'sh', '-c', 'echo ran');
    expect(result.stderr).toContain('did not report its pid');
    expect(result.code).toBe(runnerExit.unsure);
    // list knows: it ran.
    expect(await exitCodeOf('mute')).toBe(0);
    expect(await ok('logs', 'mute')).toBe('ran\n');
  });

  it('documents every exit code of runnerExit in its header', async () => {
    const header = (await readFile(SCRIPT, 'utf8')).split('\nset -u\n')[0] ?? '';
    for (const code of Object.values(runnerExit)) expect(header).toMatch(new RegExp(`^#   ${code} `, 'm'));
  });
});

async function realPath(command: string): Promise<string> {
  const result = await new Promise<string>((resolve, reject) => {
    const child = spawn('sh', ['-c', `command -v ${command}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.on('error', reject);
    child.on('close', () => resolve(Buffer.concat(out).toString('utf8').trim()));
  });
  if (!result.startsWith('/')) throw new Error(`no ${command} on PATH`);
  return result;
}

async function statFields(pid: number): Promise<{ pgrp: number; session: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm) ": state, ppid, pgrp, session, ...
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return { pgrp: Number(fields[2]), session: Number(fields[3]) };
}

async function processesInGroup(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') members.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return members;
}
