// Ctrl-C while `drover submit --wait` fetches a finished container's output ends it like Ctrl-C during the wait.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../src/cli/exit-codes.js';
import type { Container } from '../src/queue/types.js';
import { runDrover } from './support/run-drover.js';

const uuid = '0b7c4c8e-4f0e-4a43-9d67-0d0c1f5c2a10';
const container: Container = {
  uuid,
  state: 'complete',
  image: null,
  command: ['true'],
  env: {},
  constraints: { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false },
  priority: 0,
  attempts: 1,
  exitCode: 0,
  instanceId: 'i-1',
  instanceType: 'small',
  logTail: '',
  reason: null,
  submittedAt: 0,
  startedAt: 0,
  finishedAt: 0,
  updatedAt: 0,
};

/** Called when the CLI asks for the output; the request is never answered. */
let onLogsRequest: () => void = () => undefined;
const held: ServerResponse[] = [];

// A daemon that accepts the container, says it is complete, and never sends its output.
const server = createServer((request: IncomingMessage, response: ServerResponse) => {
  request.resume();
  if (request.url?.endsWith('/logs')) {
    held.push(response);
    onLogsRequest();
    return;
  }
  response.writeHead(request.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
  response.end(JSON.stringify(container));
});
let url: string;

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const response of held) response.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('submit --wait', () => {
  it('exits with the interrupted code, with no stack, on Ctrl-C while it fetches the output', async () => {
    let child: { kill(signal: NodeJS.Signals): void } | undefined;
    onLogsRequest = () => child?.kill('SIGINT');
    const result = await runDrover(['submit', '--wait', '--', 'true'], { ...process.env, DROVER_URL: url, DROVER_TOKEN: 't' }, (_stderr, process) => {
      child = process;
    });
    expect(result.code).toBe(exitCodes.interrupted);
    expect(result.stderr).toBe(`${uuid}\ndrover: interrupted; ${uuid} is complete, its output was not printed (drover logs ${uuid} prints it)\n`);
    expect(result.stdout).toBe('');
  });
});
