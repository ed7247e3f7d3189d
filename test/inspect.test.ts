// The Stately inspector stream (`inspect`): a real daemon on the stub cloud streams its actors,
// in @statelyai/inspect's messages, to a WebSocket server standing in for the relay; filtered by
// `inspect.actors`, trimmed, the instance secret redacted; with inspection off no socket opens.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { assign, createActor, createMachine, SimulatedClock } from 'xstate';
import { afterEach, describe, expect, it } from 'vitest';
import { exitCodes } from '../src/cli/exit-codes.js';
import { parseConfig } from '../src/config/load.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import { inspectOption } from '../src/inspect/actor-inspection.js';
import { startInspectorRelay, type Relay } from '../src/inspect/relay.js';
import { startStatelyInspection, type StatelyInspection } from '../src/inspect/stately-inspection.js';
import { spec } from './support/dispatch-harness.js';
import { runDrover } from './support/run-drover.js';
import { shippedConfig } from './support/shipped-config.js';

/** A message as @statelyai/inspect sends it (the fields the tests read). */
interface Message {
  type: string;
  sessionId: string;
  rootId?: string;
  name?: string;
  definition?: string;
  _version?: string;
  createdAt?: string;
  event?: { type: string };
  snapshot?: { status?: string; value?: unknown; context?: Record<string, unknown> };
}

interface Collector {
  url: string;
  port: number;
  connections: number;
  messages: Message[];
  close(): Promise<void>;
}

/** A WebSocket server on 127.0.0.1 standing in for the relay: it keeps every message. */
async function startCollector(port = 0): Promise<Collector> {
  const server = new WebSocketServer({ host: '127.0.0.1', port });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port: bound } = server.address() as { port: number };
  const collector: Collector = {
    url: `ws://127.0.0.1:${bound}`,
    port: bound,
    connections: 0,
    messages: [],
    async close() {
      for (const client of server.clients) client.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', (socket) => {
    collector.connections++;
    socket.on('message', (data) => collector.messages.push(JSON.parse(data.toString()) as Message));
  });
  return collector;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A daemon on the stub cloud (no seed instances, idle instances kept) with `inspect` as given, on a clock the test moves. */
async function daemonWith(inspect: Record<string, unknown> | null): Promise<{ daemon: Daemon; clock: SimulatedClock }> {
  const dir = mkdtempSync(join(tmpdir(), 'drover-inspect-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const settings: Record<string, unknown> = { 'http.port': 0, 'cloud.stub.seedInstances': [], 'pool.timeoutIdle': '1h' };
  if (inspect) settings.inspect = inspect;
  const config = parseConfig(shippedConfig('stub.yml', settings), 'config/stub.yml (test copy)', { home: dir });
  const clock = new SimulatedClock();
  clock.set(Date.now());
  const daemon = await startDaemon(config, { clock, logger: pino({ level: 'silent' }) });
  cleanups.push(() => daemon.stop());
  return { daemon, clock };
}

/** Moves the daemon's clock on in small steps, giving sockets and timers real time between them. */
async function drive(clock: SimulatedClock, until: () => boolean, limitRealMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + limitRealMs;
  while (Date.now() < deadline) {
    if (until()) return true;
    clock.increment(250);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return until();
}

async function waitFor(until: () => boolean, limitMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline && !until()) await new Promise((resolve) => setTimeout(resolve, 10));
  return until();
}

function registrations(messages: Message[], name: string): Message[] {
  return messages.filter((message) => message.type === '@xstate.actor' && message.name === name);
}

function lifecycleOf(message: Message): string | null {
  const value = message.snapshot?.value as { lifecycle?: string | Record<string, unknown> } | undefined;
  const lifecycle = value?.lifecycle;
  if (lifecycle === undefined) return null;
  return typeof lifecycle === 'string' ? lifecycle : (Object.keys(lifecycle)[0] ?? null);
}

/**
 * The instance machine's lifecycles in the order its snapshots showed them, repeats folded. (Not
 * its registration's: @statelyai/inspect reads that snapshot a timer later, when it may be past.)
 */
function lifecycles(messages: Message[], sessionId: string): string[] {
  const seen: string[] = [];
  for (const message of messages) {
    if (message.type !== '@xstate.snapshot' || message.sessionId !== sessionId) continue;
    const lifecycle = lifecycleOf(message);
    if (lifecycle !== null && seen.at(-1) !== lifecycle) seen.push(lifecycle);
  }
  return seen;
}

/** Every snapshot and event is about an actor registered before it, as the inspector needs. */
function expectRegisteredFirst(messages: Message[]): void {
  const registered = new Set<string>();
  for (const message of messages) {
    if (message.type === '@xstate.actor') registered.add(message.sessionId);
    else expect(registered.has(message.sessionId), `${message.type} ${message.event?.type ?? ''} for ${message.sessionId} before its registration`).toBe(true);
  }
}

describe('inspection on a running daemon', () => {
  it('with inspect.actors all, streams an instance machine going creating → booting → idle, in @statelyai/inspect messages', async () => {
    const collector = await startCollector();
    cleanups.push(() => collector.close());
    const { daemon, clock } = await daemonWith({ url: collector.url, actors: 'all' });
    // Connected: what was created before was announced as it then stood, not as it began.
    expect(await waitFor(() => registrations(collector.messages, 'pool').length > 0)).toBe(true);
    const { uuid } = daemon.queue.submit(spec());

    const instanceSession = () => registrations(collector.messages, 'instance')[0]?.sessionId;
    const reachedIdle = () => {
      const session = instanceSession();
      if (session === undefined) return false;
      const seen = lifecycles(collector.messages, session);
      return seen.includes('booting') && seen.lastIndexOf('idle') > seen.indexOf('booting');
    };
    expect(await drive(clock, () => reachedIdle() && daemon.queue.get(uuid)?.state === 'complete')).toBe(true);
    // The last snapshots are sent a timer after the transition.
    await waitFor(reachedIdle);

    expect(collector.connections).toBe(1);
    const [registration] = registrations(collector.messages, 'instance');
    expect(registration).toMatchObject({
      type: '@xstate.actor',
      name: 'instance',
      sessionId: expect.any(String),
      _version: expect.any(String),
      createdAt: expect.any(String),
      definition: expect.stringContaining('"id":"instance"'),
    });
    // A root actor: its own root.
    expect(registration!.rootId).toBe(registration!.sessionId);
    const session = registration!.sessionId;
    const seen = lifecycles(collector.messages, session);
    expect(seen[0]).toBe('creating');
    expect(seen.indexOf('booting')).toBeGreaterThan(seen.indexOf('creating'));
    expect(seen.lastIndexOf('idle')).toBeGreaterThan(seen.indexOf('booting'));

    const events = collector.messages.filter((message) => message.type === '@xstate.event' && message.sessionId === session);
    expect(events.map((message) => message.event?.type)).toEqual(expect.arrayContaining(['xstate.init', 'PROBE_DUE']));
    const snapshot = collector.messages.find((message) => message.type === '@xstate.snapshot' && message.sessionId === session && lifecycleOf(message) === 'booting');
    expect(snapshot).toMatchObject({ rootId: session, _version: expect.any(String), event: { type: expect.any(String) }, snapshot: { status: 'active' } });

    // The rest of the daemon is there too: the pool, the scheduler and the container's attempt.
    for (const name of ['pool', 'scheduler', 'container']) expect(registrations(collector.messages, name).length, name).toBeGreaterThan(0);
    expectRegisteredFirst(collector.messages);

    // The instance secret stays in the daemon.
    const withInstance = collector.messages.find((message) => message.type === '@xstate.snapshot' && message.sessionId === session && message.snapshot?.context?.instance);
    const tags = (withInstance!.snapshot!.context!.instance as { tags: Record<string, string> }).tags;
    expect(tags['drover-pool']).toBe('drover-demo');
    expect(tags['drover-secret']).toBe('[redacted]');
    const secrets = JSON.stringify(collector.messages).match(/"drover-secret":"[^"]*"/g) ?? [];
    expect(new Set(secrets)).toEqual(new Set(['"drover-secret":"[redacted]"']));
  });

  it('by default sends the pool, scheduler and container actors, and no instance machine', async () => {
    const collector = await startCollector();
    cleanups.push(() => collector.close());
    const { daemon, clock } = await daemonWith({ url: collector.url });
    const { uuid } = daemon.queue.submit(spec());
    expect(await drive(clock, () => daemon.queue.get(uuid)?.state === 'complete')).toBe(true);
    const containerDone = () =>
      collector.messages.some((message) => message.type === '@xstate.snapshot' && message.snapshot?.status === 'done' && message.snapshot.context?.uuid === uuid);
    expect(await waitFor(containerDone)).toBe(true);

    for (const name of ['pool', 'scheduler', 'container', 'launchConfig']) expect(registrations(collector.messages, name).length, name).toBeGreaterThan(0);
    expect(registrations(collector.messages, 'instance')).toEqual([]);
    // Nor anything of one: no snapshot has an instance's lifecycle.
    expect(collector.messages.some((message) => lifecycleOf(message) !== null)).toBe(false);
    expectRegisteredFirst(collector.messages);
  });

  it('with inspection off, opens no socket', async () => {
    const collector = await startCollector();
    cleanups.push(() => collector.close());
    const { daemon, clock } = await daemonWith(null);
    const { uuid } = daemon.queue.submit(spec());
    expect(await drive(clock, () => daemon.queue.get(uuid)?.state === 'complete')).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(collector.connections).toBe(0);
    expect(collector.messages).toEqual([]);
  });
});

describe('drover run --inspect', () => {
  function stubConfigFile(): string {
    const dir = mkdtempSync(join(tmpdir(), 'drover-inspect-cli-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'stub.yml');
    writeFileSync(path, shippedConfig('stub.yml', { 'http.port': 0, 'queue.path': join(dir, 'queue.sqlite'), 'http.tokenFile': join(dir, 'token') }));
    return path;
  }

  it('streams to the URL given, over the config (which has none), and stops cleanly', async () => {
    const collector = await startCollector();
    cleanups.push(() => collector.close());
    let stopping = false;
    const run = await runDrover(['run', '--config', stubConfigFile(), '--inspect', collector.url], process.env, {
      timeoutMs: 20_000,
      onStdout: (stdout, child) => {
        // Started (so SIGINT stops it cleanly), and streaming to the relay. Once: a second SIGINT is not caught.
        if (stopping || !stdout.includes('drover started') || !stdout.includes('streaming actors')) return;
        stopping = true;
        void waitFor(() => registrations(collector.messages, 'pool').length > 0).then(() => child.kill('SIGINT'));
      },
    });
    expect(run.code, run.stderr).toBe(0);
    expect(collector.connections).toBe(1);
    expect(registrations(collector.messages, 'pool').length).toBeGreaterThan(0);
    expect(run.stdout).toContain('streaming actors to the Stately inspector relay');
  });

  it('refuses a URL that is no ws:// or wss:// one as a usage error', async () => {
    const run = await runDrover(['run', '--config', stubConfigFile(), '--inspect', 'http://127.0.0.1:8427'], process.env, { timeoutMs: 20_000 });
    expect(run.code).toBe(exitCodes.usage);
    expect(run.stderr).toContain('expected a ws:// or wss:// URL such as ws://127.0.0.1:8427, got "http://127.0.0.1:8427"');
  });
});

// A small machine standing in for an instance: the cloud id arrives with an event.
const toy = createMachine({
  id: 'toy',
  initial: 'creating',
  context: { instance: null as { id: string } | null, listing: [] as string[], note: '' },
  states: {
    creating: { on: { CREATED: { target: 'idle', actions: assign({ instance: { id: 'i-42' } }) } } },
    idle: {
      on: {
        LISTED: { actions: assign({ listing: () => Array.from({ length: 5_000 }, (_, i) => `instance-${i}`), note: () => 'x'.repeat(10_000) }) },
        STOP: 'done',
      },
    },
    done: { type: 'final' },
  },
});

describe('startStatelyInspection', () => {
  function inspectionFor(collector: Collector | { url: string }, actors: string[]): StatelyInspection {
    const inspection = startStatelyInspection({ url: collector.url, actors, logger: pino({ level: 'silent' }), reconnectMs: 50 });
    cleanups.push(() => inspection.stop());
    return inspection;
  }

  async function connected(collector: Collector): Promise<void> {
    expect(await waitFor(() => collector.connections > 0)).toBe(true);
    // The client's side opens a moment after the server's.
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  it('sends an instance named by its cloud id from the moment it has that id, registering it first', async () => {
    const collector = await startCollector();
    cleanups.push(() => collector.close());
    const inspection = inspectionFor(collector, ['instance:i-42']);
    await connected(collector);
    let actor: ReturnType<typeof createActor<typeof toy>> | undefined = undefined;
    const observer = inspection.observerFor({ kind: 'instance', workerId: 'create-1', instanceId: () => actor?.getSnapshot().context.instance?.id ?? null });
    expect(observer).toBeDefined();
    actor = createActor(toy, { ...inspectOption(observer) });
    actor.start();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(collector.messages).toEqual([]);

    actor.send({ type: 'CREATED' });
    expect(await waitFor(() => collector.messages.some((message) => message.type === '@xstate.snapshot'))).toBe(true);
    expect(collector.messages[0]).toMatchObject({ type: '@xstate.actor', name: 'toy' });
    expect(collector.messages[1]).toMatchObject({ type: '@xstate.snapshot', snapshot: { value: 'idle', context: { instance: { id: 'i-42' } } }, event: { type: 'CREATED' } });
    actor.stop();
  });

  it('leaves out what the filter does not name, at no cost: no observer at all', async () => {
    const inspection = inspectionFor({ url: 'ws://127.0.0.1:9' }, ['pool']);
    expect(inspection.observerFor({ kind: 'instance', workerId: 'create-1', instanceId: () => 'i-1' })).toBeUndefined();
    expect(inspection.observerFor({ kind: 'pool' })).toBeDefined();
    expect(inspection.observerFor({ kind: 'container', uuid: 'u' })).toBeDefined();
    const instancesOnly = inspectionFor({ url: 'ws://127.0.0.1:9' }, ['instance:create-2']);
    expect(instancesOnly.observerFor({ kind: 'pool' })).toBeUndefined();
    expect(instancesOnly.observerFor({ kind: 'scheduler' })).toBeUndefined();
    expect(instancesOnly.observerFor({ kind: 'instance', workerId: 'create-2', instanceId: () => null })).toBeDefined();
  });

  it('trims large context and event fields to their size', async () => {
    const collector = await startCollector();
    cleanups.push(() => collector.close());
    const inspection = inspectionFor(collector, ['all']);
    await connected(collector);
    const actor = createActor(toy, { ...inspectOption(inspection.observerFor({ kind: 'pool' })) });
    actor.start();
    actor.send({ type: 'CREATED' });
    actor.send({ type: 'LISTED', instances: Array.from({ length: 2_000 }, (_, i) => ({ id: `i-${i}` })) });
    const listed = () => collector.messages.find((message) => message.type === '@xstate.snapshot' && message.event?.type === 'LISTED');
    expect(await waitFor(() => listed() !== undefined)).toBe(true);
    const { snapshot, event } = listed()!;
    expect(snapshot!.context!.listing).toMatch(/^\[trimmed: \d+ KB\]$/);
    expect(snapshot!.context!.note).toBe('[trimmed: 10 KB]');
    expect(snapshot!.context!.instance).toEqual({ id: 'i-42' });
    expect((event as unknown as { instances: unknown }).instances).toMatch(/^\[trimmed: \d+ KB\]$/);
    actor.stop();
  });

  it('reconnects to a relay that went away, and announces the live actors again', async () => {
    const first = await startCollector();
    const inspection = inspectionFor(first, ['all']);
    await connected(first);
    const actor = createActor(toy, { ...inspectOption(inspection.observerFor({ kind: 'pool' })) });
    actor.start();
    expect(await waitFor(() => registrations(first.messages, 'toy').length === 1)).toBe(true);
    await first.close();

    const second = await startCollector(first.port);
    cleanups.push(() => second.close());
    expect(await waitFor(() => second.connections > 0)).toBe(true);
    expect(await waitFor(() => registrations(second.messages, 'toy').length === 1)).toBe(true);
    actor.send({ type: 'CREATED' });
    expect(await waitFor(() => second.messages.some((message) => message.type === '@xstate.snapshot' && message.event?.type === 'CREATED'))).toBe(true);
    actor.stop();
  });

  it('announces the live actors again when an inspector page joins the relay late', async () => {
    let relay: Relay | undefined = await startInspectorRelay({ port: 0 });
    cleanups.push(() => relay?.close());
    const inspection = inspectionFor(relay, ['all']);
    const actor = createActor(toy, { ...inspectOption(inspection.observerFor({ kind: 'pool' })) });
    actor.start();
    actor.send({ type: 'CREATED' });
    await new Promise((resolve) => setTimeout(resolve, 200));

    const page = new WebSocket(relay.url);
    cleanups.push(() => page.terminate());
    const received: Message[] = [];
    page.on('message', (data) => received.push(JSON.parse(data.toString()) as Message));
    expect(await waitFor(() => registrations(received, 'toy').length === 1)).toBe(true);
    expect(registrations(received, 'toy')[0]!.snapshot).toMatchObject({ value: 'idle' });
    actor.stop();
    await relay.close();
    relay = undefined;
  });
});
