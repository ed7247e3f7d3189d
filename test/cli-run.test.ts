// `drover run` as an operator starts it: a bad config stops start-up naming the key; the stub
// config from README's first command starts the pool and logs instance transitions.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDocument, type Document } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { droverCli } from './support/cli-command.js';

// The temp directories stubConfig made, removed after each test (its daemon has stopped by then).
const made: string[] = [];
afterEach(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function runDrover(args: string[], until?: (stdout: string) => boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...droverCli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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

/**
 * The stub config as shipped, with the daemon's files in a fresh temp directory and the API on a
 * port the OS picks (or `port`); `edit` changes anything else. Keys are set in place, never added
 * twice. Returns the new file's path.
 */
function stubConfig(edit: (doc: Document) => void = () => {}, port = 0): string {
  const dir = mkdtempSync(join(tmpdir(), 'drover-cli-'));
  made.push(dir);
  const doc = parseDocument(readFileSync('config/stub.yml', 'utf8'));
  doc.setIn(['queue', 'path'], join(dir, 'queue.sqlite'));
  doc.setIn(['http', 'tokenFile'], join(dir, 'token'));
  doc.setIn(['http', 'port'], port);
  edit(doc);
  const path = join(dir, 'stub.yml');
  writeFileSync(path, doc.toString());
  return path;
}

describe('drover run', () => {
  it('refuses a bad config with the key and the reason, and exit code 2', async () => {
    const path = stubConfig((doc) => doc.setIn(['pool', 'syncInterval'], '5 seconds'));
    const result = await runDrover(['run', '--config', path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('pool.syncInterval');
    expect(result.stderr).toContain('5 seconds');
    expect(result.stdout).toBe('');
  });

  it('starts the pool on the stub cloud and logs each instance transition as JSON', async () => {
    const result = await runDrover(['run', '--config', stubConfig()], (stdout) =>
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
    const result = await runDrover(['run', '--config', stubConfig(() => {}, port)]);
    blocker.close();
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('drover: http.port:');
    expect(result.stderr).toContain('EADDRINUSE');
    expect(result.stdout).not.toContain('instance state changed');
  });
});

describe('the stub demo (config/stub.yml)', () => {
  it('keeps its own queue, token and port, apart from the loopback daemon\'s', () => {
    const stub = loadConfig('config/stub.yml');
    const loopback = loadConfig('config/loopback.yml');
    expect(stub.cloud.driver).toBe('stub');
    expect(stub.queue.path).not.toBe(loopback.queue.path);
    expect(stub.http.tokenFile).not.toBe(loopback.http.tokenFile);
    expect(stub.http.port).not.toBe(loopback.http.port);
  });

  it("runs nothing, and the sample container's output says so", async () => {
    const result = await runDrover(['run', '--sample', '--config', stubConfig()], (stdout) => stdout.includes('sample container finished'));
    const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const sample = lines.find((line) => line.msg === 'sample container finished');
    expect(sample).toMatchObject({ state: 'complete', exitCode: 0 });
    expect(sample?.output).toMatch(/^\[stub cloud: nothing ran; this is simulated output for [0-9a-f-]{36}\]\n$/);
    expect(result.code).toBe(0);
  });
});
