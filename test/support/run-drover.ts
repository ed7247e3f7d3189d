// Runs the real drover CLI as a child process, as an operator would, and collects what it prints.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { droverCli } from './cli-command.js';


export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Sees stderr so far after each chunk (the uuid, with --wait); may signal the child. */
  onStderr?: (stderr: string, child: { kill(signal: NodeJS.Signals): void }) => void;
  /** Sees stdout so far after each chunk. */
  onStdout?: (stdout: string, child: { kill(signal: NodeJS.Signals): void }) => void;
  /** SIGKILLs the child if it has not ended by then: a daemon that did start is stopped, so the test never leaves one running. */
  timeoutMs?: number;
}

/** Runs drover with `args` and `env`; `onStderr` may be given alone, as the first tests did. */
export function runDrover(args: string[], env: NodeJS.ProcessEnv, options: RunOptions | RunOptions['onStderr'] = {}): Promise<Run> {
  const { onStderr, onStdout, timeoutMs } = typeof options === 'function' ? { onStderr: options } : options;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...droverCli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      onStdout?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A daemon URL where nothing listens: a loopback port the system gave out and took back. */
export async function closedUrl(): Promise<string> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
