// `drover run` as an operator starts it: a bad config stops start-up naming the key; the stub
// config from README's first command starts the pool and logs instance transitions.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const cli = ['--import', 'tsx', 'src/cli/main.ts'];

function runDrover(args: string[], until?: (stdout: string) => boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let stopping = false;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (!stopping && until?.(stdout)) {
        stopping = true;
        child.kill('SIGINT');
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('drover run', () => {
  it('refuses a bad config with the key and the reason, and exit code 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-cli-'));
    const path = join(dir, 'bad.yml');
    writeFileSync(path, readFileSync('config/stub.yml', 'utf8').replace('syncInterval: 5s', 'syncInterval: 5 seconds'));
    const result = await runDrover(['run', '--config', path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('pool.syncInterval');
    expect(result.stderr).toContain('5 seconds');
    expect(result.stdout).toBe('');
  });

  it('starts the pool on the stub cloud and logs each instance transition as JSON', async () => {
    // The stub config as shipped, but with the daemon's files and port kept out of the way.
    const dir = mkdtempSync(join(tmpdir(), 'drover-cli-'));
    const path = join(dir, 'stub.yml');
    writeFileSync(
      path,
      `${readFileSync('config/stub.yml', 'utf8')}\nqueue: { path: ${join(dir, 'queue.sqlite')} }\nhttp: { port: 0, tokenFile: ${join(dir, 'token')} }\n`,
    );
    const result = await runDrover(['run', '--config', path], (stdout) =>
      stdout.includes('"to":"idle"'),
    );
    const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const transitions = lines.filter((line) => line.msg === 'instance state changed');
    expect(transitions.filter((line) => line.to === 'unknown')).toHaveLength(4);
    expect(transitions.some((line) => line.to === 'idle' && typeof line.instanceId === 'string' && line.instanceType === 'small')).toBe(true);
    expect(lines.at(-1)?.msg).toBe('drover stopped');
    expect(result.code).toBe(0);
  });

  it('refuses to start when the API port is taken, naming the key, and creates nothing', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), 'drover-cli-'));
    const path = join(dir, 'stub.yml');
    writeFileSync(
      path,
      `${readFileSync('config/stub.yml', 'utf8')}\nqueue: { path: ${join(dir, 'queue.sqlite')} }\nhttp: { port: ${port}, tokenFile: ${join(dir, 'token')} }\n`,
    );
    const result = await runDrover(['run', '--config', path]);
    blocker.close();
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('drover: http.port:');
    expect(result.stderr).toContain('EADDRINUSE');
    expect(result.stdout).not.toContain('instance state changed');
  });
});
