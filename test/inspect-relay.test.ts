// `drover inspect-relay`: passes messages between its clients, serves the inspector page, and
// cannot be reached from anywhere but this machine (it has no authentication).
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { WebSocket } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { clientJoinedMessage } from '../src/inspect/relay-protocol.js';
import { isLoopbackAddress, NonLoopbackHostError, startInspectorRelay, type Relay } from '../src/inspect/relay.js';
import { runDrover } from './support/run-drover.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function relayOn(options: Parameters<typeof startInspectorRelay>[0] = {}): Promise<Relay> {
  const relay = await startInspectorRelay({ port: 0, ...options });
  cleanups.push(() => relay.close());
  return relay;
}

interface Client {
  socket: WebSocket;
  received: string[];
}

async function client(url: string, headers: Record<string, string> = {}): Promise<Client> {
  const socket = new WebSocket(url, { headers });
  cleanups.push(() => socket.terminate());
  const received: string[] = [];
  socket.on('message', (data) => received.push(data.toString()));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return { socket, received };
}

/** How a WebSocket handshake with these headers ends: 'open', or the HTTP status it was refused with. */
function handshake(url: string, headers: Record<string, string>): Promise<'open' | number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('open', () => {
      socket.terminate();
      resolve('open');
    });
    socket.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      socket.terminate();
    });
    socket.once('error', (error) => {
      if (socket.readyState !== WebSocket.CLOSED) reject(error);
    });
  });
}

async function waitFor(until: () => boolean, limitMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline && !until()) await new Promise((resolve) => setTimeout(resolve, 10));
  return until();
}

/** Tries a TCP connection: 'connected', or the error code (ECONNREFUSED), or 'timeout'. */
function tcpConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (outcome: string) => {
      socket.destroy();
      resolve(outcome);
    };
    socket.setTimeout(3_000, () => done('timeout'));
    socket.once('connect', () => done('connected'));
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
  });
}

/** This machine's addresses other than loopback ones, IPv6 link-local ones with their interface. */
const outsideAddresses = Object.entries(networkInterfaces()).flatMap(([name, addresses]) =>
  (addresses ?? [])
    .filter((address) => !address.internal && !isLoopbackAddress(address.address))
    .map((address) => (address.family === 'IPv6' && address.address.toLowerCase().startsWith('fe80') ? `${address.address}%${name}` : address.address)),
);

describe('the inspector relay', () => {
  it('passes every message from one client to the others, and tells them when someone joins', async () => {
    const relay = await relayOn();
    expect(relay.url).toBe(`ws://127.0.0.1:${relay.port}`);
    const daemon = await client(relay.url);
    const page = await client(relay.url);
    // The daemon hears that the page joined, so it can announce its actors again.
    expect(await waitFor(() => daemon.received.includes(clientJoinedMessage))).toBe(true);

    const message = JSON.stringify({ type: '@xstate.snapshot', sessionId: 'x:1', snapshot: { value: 'idle' } });
    daemon.socket.send(message);
    expect(await waitFor(() => page.received.includes(message))).toBe(true);
    page.socket.send('from the page');
    expect(await waitFor(() => daemon.received.includes('from the page'))).toBe(true);
    // Not echoed back to the sender.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(daemon.received).not.toContain(message);
    expect(page.received).not.toContain('from the page');
  });

  it('serves the page that embeds the Stately inspector', async () => {
    const relay = await relayOn();
    const response = await fetch(relay.pageUrl);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    const page = await response.text();
    expect(page).toContain('<iframe id="inspector" src="https://stately.ai/inspect">');
    expect(page).toContain("new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host)");
    expect((await fetch(`${relay.pageUrl}other`)).status).toBe(404);
  });

  it('refuses a browser on another site: a Host that is no loopback name, an Origin other than its own page', async () => {
    const relay = await relayOn();
    const host = `127.0.0.1:${relay.port}`;
    // A name that resolves to 127.0.0.1 for someone's web page (DNS rebinding).
    const rebound = await new Promise<number>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: relay.port }, () => socket.write('GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n'));
      let reply = '';
      socket.on('data', (chunk) => (reply += chunk.toString()));
      socket.on('end', () => resolve(Number(reply.split(' ')[1])));
      socket.on('error', reject);
    });
    expect(rebound).toBe(403);
    expect(await handshake(relay.url, { Host: 'evil.example' })).toBe(403);
    expect(await handshake(relay.url, { Origin: 'https://evil.example' })).toBe(403);
    expect(await handshake(relay.url, { Origin: `http://${host}` })).toBe('open');
    expect(await handshake(relay.url, {})).toBe('open');
  });

  it.skipIf(outsideAddresses.length === 0)('is not reachable on any address of this machine but loopback', async () => {
    const relay = await relayOn();
    expect(relay.host).toBe('127.0.0.1');
    expect(await tcpConnect('127.0.0.1', relay.port)).toBe('connected');
    for (const address of outsideAddresses) {
      expect(await tcpConnect(address, relay.port), address).not.toBe('connected');
    }
  });

  it('listens on loopback addresses only', async () => {
    for (const host of ['0.0.0.0', '::', '10.1.2.3', '192.168.0.1', 'localhost', 'example.com', '::ffff:127.0.0.1']) {
      await expect(startInspectorRelay({ host, port: 0 }), host).rejects.toBeInstanceOf(NonLoopbackHostError);
    }
    expect(['127.0.0.1', '127.0.0.2', '::1', '0:0:0:0:0:0:0:1', '[::1]'].every(isLoopbackAddress)).toBe(true);
  });
});

describe('drover inspect-relay', () => {
  it('refuses --host 0.0.0.0 with exit code 2, saying why', async () => {
    const run = await runDrover(['inspect-relay', '--host', '0.0.0.0', '--port', '0'], process.env, { timeoutMs: 20_000 });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--host 0.0.0.0: the inspector relay has no authentication, so it listens on a loopback address only');
    expect(run.stdout).toBe('');
  });

  it('prints where to connect the daemon and the browser, relays, and stops cleanly on SIGINT', async () => {
    let url: string | undefined;
    const run = await runDrover(['inspect-relay', '--port', '0'], process.env, {
      timeoutMs: 20_000,
      onStdout: (stdout, child) => {
        const found = /listening on (ws:\/\/127\.0\.0\.1:\d+) /.exec(stdout)?.[1];
        if (found === undefined || url !== undefined) return;
        url = found;
        void (async () => {
          const one = await client(found);
          const two = await client(found);
          one.socket.send('hello');
          await waitFor(() => two.received.includes('hello'));
          child.kill('SIGINT');
        })();
      },
    });
    expect(run.code).toBe(0);
    expect(url).toBeDefined();
    const port = new URL(url!).port;
    expect(run.stdout).toContain(`daemon:    drover run --inspect ${url}`);
    expect(run.stdout).toContain(`inspector: open http://127.0.0.1:${port}/ in a browser`);
    expect(run.stdout).toContain(`ssh -L ${port}:127.0.0.1:${port} <this host>`);
    expect(run.stderr).toMatch(/connected: 127\.0\.0\.1:\d+; 2 connected/);
  });
});
