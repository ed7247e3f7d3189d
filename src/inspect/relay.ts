// The relay between a daemon streaming its actors (a WebSocket client) and the Stately inspector
// in a browser: it serves a page that embeds the inspector and passes it every message over a
// WebSocket of its own, as @statelyai/inspect's createInspectorServer does. That one listens on
// every interface with no authentication (and replays what it last saw to whoever connects), so
// this one listens on a loopback address only: from another machine it is reached through an SSH
// tunnel, which brings the SSH login with it.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { clientJoinedMessage } from './relay-protocol.js';
import { defaultRelayPort } from './settings.js';

export const statelyInspectorUrl = 'https://stately.ai/inspect';

export interface RelayOptions {
  /** A loopback address: 127.0.0.1 (default), another 127.x.y.z, or ::1. */
  host?: string;
  /** Default 8427; 0: any free port. */
  port?: number;
  /** Told of clients coming and going and of messages dropped for a slow one. */
  log?: (line: string) => void;
}

export interface Relay {
  host: string;
  port: number;
  /** What the daemon connects to (`drover run --inspect <url>`, config `inspect.url`). */
  url: string;
  /** The page to open in a browser on this machine (or at the near end of a tunnel). */
  pageUrl: string;
  close(): Promise<void>;
}

export class NonLoopbackHostError extends Error {
  constructor(readonly host: string) {
    super(
      `--host ${host}: the inspector relay has no authentication, so it listens on a loopback address only (127.0.0.1 or ::1); ` +
        `to watch from another machine, tunnel to it: ssh -L ${defaultRelayPort}:127.0.0.1:${defaultRelayPort} <this host>`,
    );
  }
}

/** A literal loopback address: 127.0.0.0/8 or ::1 (a name could resolve anywhere). */
export function isLoopbackAddress(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(bare) === 4) return bare.split('.')[0] === '127';
  if (isIP(bare) === 6) return new URL(`http://[${bare}]`).hostname === '[::1]';
  return false;
}

// A web page the operator visits elsewhere could otherwise talk to the relay from their browser:
// through a name made to resolve to 127.0.0.1 (the Host check), or straight to
// ws://127.0.0.1 (the Origin check; WebSockets are not held to the same-origin rule).
function loopbackHostHeader(req: IncomingMessage): boolean {
  const host = req.headers.host;
  if (host === undefined) return false;
  try {
    const { hostname } = new URL(`http://${host}`);
    return hostname === 'localhost' || isLoopbackAddress(hostname);
  } catch {
    return false;
  }
}

function sameOriginOrNone(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  // Not a browser (the daemon): nothing to check.
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/** Past this much unsent to one client (a browser tab that does not keep up), its messages are dropped. */
const maxBufferedBytes = 32 * 1024 * 1024;

// The page: the inspector in an iframe, fed over postMessage what the relay's socket brings.
function bridgePage(): string {
  return `<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>Drover: Stately inspector</title>
  <style>* { margin: 0; padding: 0; } html, body { height: 100%; } iframe { width: 100%; height: 100%; border: none; }</style>
</head>
<body>
  <iframe id="inspector" src="${statelyInspectorUrl}"></iframe>
  <script>
    const iframe = document.getElementById('inspector');
    const buffer = [];
    // Set from the inspector's own hello, so messages go to that origin only.
    let inspectorOrigin = null;
    window.addEventListener('message', (e) => {
      if (e.source !== iframe.contentWindow || !e.data || e.data.type !== '@statelyai.connected') return;
      inspectorOrigin = e.origin;
      for (const data of buffer) iframe.contentWindow.postMessage(data, inspectorOrigin);
      buffer.length = 0;
    });
    function connect() {
      const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host);
      ws.onmessage = (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch { return; }
        if (!data || typeof data.type !== 'string' || !data.type.startsWith('@xstate.')) return;
        if (inspectorOrigin !== null) iframe.contentWindow.postMessage(data, inspectorOrigin);
        else if (buffer.push(data) > 5000) buffer.shift();
      };
      ws.onclose = () => setTimeout(connect, 2000);
    }
    connect();
  </script>
</body>
</html>
`;
}

/** Starts the relay; throws NonLoopbackHostError for any other host, and the listen error (EADDRINUSE) as it comes. */
export async function startInspectorRelay(options: RelayOptions = {}): Promise<Relay> {
  const host = options.host ?? '127.0.0.1';
  if (!isLoopbackAddress(host)) throw new NonLoopbackHostError(host);
  const log = options.log ?? (() => {});
  const page = bridgePage();

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (!loopbackHostHeader(req)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden: not a loopback Host\n');
      return;
    }
    if (req.method !== 'GET' || (req.url !== '/' && req.url !== '/index.html')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page);
  });
  // Listening first: a WebSocketServer on a server that fails to listen re-emits the error unhandled.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? defaultRelayPort, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const wss = new WebSocketServer({
    server,
    maxPayload: 16 * 1024 * 1024,
    verifyClient: (info: { req: IncomingMessage }, done: (ok: boolean, code?: number, message?: string) => void) => {
      if (loopbackHostHeader(info.req) && sameOriginOrNone(info.req)) done(true);
      else done(false, 403, 'forbidden');
    },
  });
  // The listening server's own errors reach here once it is up; they end no client.
  wss.on('error', (error: Error) => log(`error: ${error.message}`));
  const dropping = new Set<WebSocket>();

  wss.on('connection', (socket: WebSocket, req: IncomingMessage) => {
    const who = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}${req.headers.origin ? ' (inspector page)' : ''}`;
    log(`connected: ${who}; ${wss.clients.size} connected`);
    for (const other of wss.clients) {
      if (other !== socket && other.readyState === WebSocket.OPEN) other.send(clientJoinedMessage);
    }
    socket.on('message', (data: RawData, isBinary: boolean) => {
      for (const other of wss.clients) {
        if (other === socket || other.readyState !== WebSocket.OPEN) continue;
        if (other.bufferedAmount > maxBufferedBytes) {
          if (!dropping.has(other)) log(`dropping messages for a client that does not keep up`);
          dropping.add(other);
          continue;
        }
        dropping.delete(other);
        other.send(data, { binary: isBinary });
      }
    });
    // A client that goes away mid-message: its close follows, nothing else to do.
    socket.on('error', () => {});
    socket.on('close', () => {
      dropping.delete(socket);
      log(`disconnected: ${who}; ${wss.clients.size} connected`);
    });
  });

  const { port } = server.address() as AddressInfo;
  const hostInUrl = isIP(host) === 6 ? `[${host}]` : host;
  return {
    host,
    port,
    url: `ws://${hostInUrl}:${port}`,
    pageUrl: `http://${hostInUrl}:${port}/`,
    async close() {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
