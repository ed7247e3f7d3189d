// The daemon's HTTP API: containers, instances and launch configs for the drover CLI, plus health,
// Prometheus metrics and the web view's page and data.
import type { AddressInfo } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifySchemaValidationError } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { idleBehaviors, type IdleBehavior } from '../../machines/instance.js';
import { tagKeys, type CloudInstance } from '../cloud/driver.js';
import {
  launchConfigActions,
  LaunchConfigStateError,
  UnknownLaunchConfigError,
  type LaunchConfigAction,
  type LaunchConfigControl,
  type LaunchConfigView,
} from '../pool/launch-config-view.js';
import { UnknownInstanceError, type InstanceView } from '../pool/pool.js';
import { InvalidContainerSpecError } from '../queue/sqlite-queue.js';
import { QueueUnavailableError, type QueueHealth } from '../queue/storage.js';
import {
  ContainerNotFoundError,
  ContainerStateError,
  type Constraints,
  type Container,
  type ContainerQueue,
  type ContainerState,
  logTailMarker,
  logTailMarkerPattern,
} from '../queue/types.js';
import type { PoolSample } from './pool-history.js';
import { checkRunnable, UnrunnableSpecError } from './submit-limits.js';
import { tokensMatch } from './token.js';
import { defaultWebRoot, readWebFile, webFiles, webHeaders, WebViewMissingError } from './web-view.js';

/** The part of the Pool the API drives. */
export interface PoolControl {
  instances(): InstanceView[];
  /** Instances with this pool's tag but an instance type the config does not define: listed, never managed. */
  orphans(): CloudInstance[];
  instance(id: string): InstanceView | undefined;
  setIdleBehavior(id: string, b: IdleBehavior): void;
  shutdown(target: { instanceId: string }): boolean;
}

export interface ApiDeps {
  queue: ContainerQueue;
  pool: PoolControl;
  /** The pool's launch configs and its create freeze (the Pool itself in the daemon). */
  launchConfigs: LaunchConfigControl;
  token: string;
  registry: Registry;
  /** `http.publicMetrics`: serve `/metrics` without the token, for a scraper on a trusted network; default false. */
  publicMetrics?: boolean;
  logger: Logger;
  /** A running container's output so far, from its instance; null if unavailable. */
  liveLogs?: (container: Container) => Promise<string | null>;
  /** `runner.docker`: submissions need an image when true and must not carry one when false (the default, as in the config). */
  docker?: boolean;
  /** The runner's path on the instances (`pool.runnerCommand`), counted in the start command's size; DEFAULT_RUNNER_PATH when absent. */
  runnerPath?: string;
  /** Why a queued container waits, as the scheduler's last pass saw it (Dispatcher.waitReason); absent: never known. */
  waitReason?: (uuid: string) => string | null;
  /** What `/healthz` answers: 200 when ok, else 503 with the reason; always ok when absent. */
  health?: () => QueueHealth;
  /** The samples `GET /history` serves (a PoolHistory in the daemon), started and stopped with the server; no such route when absent. */
  history?: HistorySource;
  /** The directory the web view's files are served from; defaultWebRoot() when absent, null: not built. */
  webRoot?: string | null;
}

/** What the server reads of the sampler behind `GET /history`, and starts and stops with itself. */
export interface HistorySource {
  readonly intervalMs: number;
  readonly windowMs: number;
  samples(): PoolSample[];
  current(): PoolSample;
  start(): void;
  stop(): void;
}

/** The body of `GET /history`: a sample every `intervalMs` over the last `windowMs`, oldest first, and one taken now. */
export interface HistoryResponse {
  intervalMs: number;
  windowMs: number;
  samples: PoolSample[];
  now: PoolSample;
}

/** The body of `GET /queue`: how many containers are queued, and the first `limit` of them in the order the scheduler takes them. */
export interface QueueResponse {
  queued: number;
  containers: ContainerEntry[];
}

/** A pool instance in `GET /instances`: its InstanceView, fields unchanged, plus `orphan: false`. */
export type PoolInstanceEntry = InstanceView & { orphan: false };

/**
 * An orphan in `GET /instances`: an instance carrying this pool's tag but an instance type the config
 * does not define. The pool neither counts nor uses it, so it has no worker, state, idle behaviour or
 * containers; only what the cloud says of it.
 */
export interface OrphanEntry {
  orphan: true;
  instanceId: string;
  providerType: string;
  address: string | null;
  /** Its drover-instance-type tag, which names no type in the config; null when the tag is missing or empty. */
  instanceTypeTag: string | null;
}

/** One entry of `GET /instances`; `orphan` tells the two kinds apart. */
export type InstanceEntry = PoolInstanceEntry | OrphanEntry;

/** The body of `GET /instances`: the pool's instances (by worker id), then the orphans (by instance id). */
export interface InstancesResponse {
  instances: InstanceEntry[];
}

/** The body of `GET /launch-configs`: every launch config the pool knows, and why every create is frozen (null if not). */
export interface LaunchConfigsResponse {
  launchConfigs: LaunchConfigView[];
  createsFrozen: string | null;
}

/** The body of `POST /pool/resume`: false when creates were not frozen, so nothing changed. */
export interface PoolResumeResponse {
  resumed: boolean;
}

/** The body of `POST /containers`; omitted fields take the defaults below. */
export interface SubmitRequest {
  command: string[];
  image?: string | null;
  env?: Record<string, string>;
  priority?: number;
  constraints?: Partial<Constraints>;
}

export const defaultConstraints: Readonly<Constraints> = { vcpus: 1, ramMiB: 256, scratchGiB: 0, gpus: 0, preemptible: false };
export const defaultListLimit = 100;
export const maxListLimit = 1000;
/**
 * The largest request body accepted (fastify's default, stated): larger is 413 with a JSON reason.
 * A spec the runner can carry is at most MAX_START_COMMAND_BYTES (32 KiB) once quoted, which JSON
 * escaping can inflate up to six times; 1 MiB holds that with room, and bounds what a submit parses.
 */
export const maxBodyBytes = 1024 * 1024;

const containerStates: ContainerState[] = ['queued', 'locked', 'running', 'complete', 'failed', 'cancelled'];

// Routes a load balancer reaches without the admin token; `/metrics` too with `http.publicMetrics`.
// Metrics stay behind the token by default: instance counts, spend and queue depth describe the
// account to anyone who can reach the port.
// The web view's page and assets are open too: they hold no data, and the page asks for the token
// before it calls the API.
const webPaths = ['/', '/web/:file'];
const publicPaths: ReadonlySet<string> = new Set(['/healthz', ...webPaths]);
const publicMetricsPaths: ReadonlySet<string> = new Set(['/healthz', '/metrics', ...webPaths]);

// The realm named in every WWW-Authenticate challenge (RFC 7235 section 2.2).
const authRealm = 'drover';

const noQuery = { type: 'object', additionalProperties: false } as const;
const uuidParams = {
  type: 'object',
  required: ['uuid'],
  additionalProperties: false,
  properties: { uuid: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;
const instanceParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;

const launchConfigActionParams = {
  type: 'object',
  required: ['id', 'action'],
  additionalProperties: false,
  properties: {
    id: { type: 'string', minLength: 1, maxLength: 200 },
    action: { type: 'string', enum: launchConfigActions },
  },
} as const;

const submitBody = {
  type: 'object',
  required: ['command'],
  additionalProperties: false,
  properties: {
    command: { type: 'array', minItems: 1, items: { type: 'string' } },
    image: { type: ['string', 'null'], minLength: 1 },
    env: { type: 'object', additionalProperties: { type: 'string' } },
    priority: { type: 'integer' },
    constraints: {
      type: 'object',
      additionalProperties: false,
      properties: {
        vcpus: { type: 'integer', minimum: 1 },
        ramMiB: { type: 'integer', minimum: 1 },
        scratchGiB: { type: 'integer', minimum: 0 },
        gpus: { type: 'integer', minimum: 0 },
        preemptible: { type: 'boolean' },
      },
    },
  },
} as const;

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { type: 'string', enum: containerStates },
    limit: { type: 'integer', minimum: 1, maximum: maxListLimit },
  },
} as const;

const queueQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { limit: { type: 'integer', minimum: 1, maximum: maxListLimit } },
} as const;

const webFileParams = {
  type: 'object',
  required: ['file'],
  additionalProperties: false,
  properties: { file: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;

const logsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { since: { type: 'integer', minimum: 0 } },
} as const;

/** The header of `GET /containers/:uuid/logs` giving the output's size in bytes so far: the `since` to ask for next. */
export const outputBytesHeader = 'drover-output-bytes';
/**
 * The header of `GET /containers/:uuid/logs` giving the attempt (the container's `attempts`) the
 * output belongs to: a new attempt's output starts afresh, so a `since` counted in another's means nothing.
 */
export const attemptHeader = 'drover-attempt';

const idleBehaviorBody = {
  type: 'object',
  required: ['behavior'],
  additionalProperties: false,
  properties: { behavior: { type: 'string', enum: idleBehaviors } },
} as const;

/** A container as the API gives it: with why it waits, while it is queued (null otherwise, or before a pass has seen it). */
export type ContainerEntry = Container & { waitReason: string | null };

export function buildServer(deps: ApiDeps): FastifyInstance {
  const withWaitReason = (container: Container): ContainerEntry => ({
    ...container,
    waitReason: container.state === 'queued' ? (deps.waitReason?.(container.uuid) ?? null) : null,
  });
  const { queue, pool, launchConfigs, registry } = deps;
  const open = deps.publicMetrics === true ? publicMetricsPaths : publicPaths;
  // Widened to fastify's logger type so the instance is a plain FastifyInstance, not one generic over pino's Logger.
  const logger: FastifyBaseLogger = deps.logger;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: maxBodyBytes,
    // The CLI polls every 500 ms while waiting; a log line per request would drown the daemon's own.
    logController: new LogController({ disableRequestLogging: true }),
    ajv: {
      customOptions: {
        // Fastify's defaults silently drop unknown properties and turn "5" into 5 or "ls" into ["ls"];
        // an API that is strict about its input reports a typo instead of ignoring it.
        removeAdditional: false,
        coerceTypes: false,
      },
    },
    schemaErrorFormatter: describeValidationErrors,
  });

  // The auth contract (RFC 6750 / RFC 7235): a missing, malformed or wrong bearer token is 401 with a
  // `WWW-Authenticate: Bearer realm="drover"` challenge, plus `error="invalid_token"` when a token was
  // given but is wrong. 403 would mean a valid token not allowed the action; Drover has one token with
  // every right, so the API never answers 403.
  app.addHook('onRequest', async (request, reply) => {
    if (request.method === 'GET' || request.method === 'HEAD') {
      if (open.has(request.routeOptions.url ?? '')) return;
    }
    const header = request.headers.authorization;
    if (header === undefined || header.trim() === '') return refuse(reply, 'missing bearer token', false);
    const match = /^(\S+)(?:\s+(.*))?$/.exec(header.trim());
    if (!match || match[1]?.toLowerCase() !== 'bearer') return refuse(reply, 'expected an Authorization: Bearer <token> header', false);
    const given = (match[2] ?? '').trim();
    if (given === '') return refuse(reply, 'missing bearer token', false);
    // An empty configured token would otherwise match an empty bearer; it must lock the API instead.
    if (deps.token === '') return refuse(reply, 'the API token is empty; every request is refused', true);
    if (!tokensMatch(given, deps.token)) return refuse(reply, 'invalid token', true);
  });

  app.setNotFoundHandler((request, reply) => reply.code(404).send({ error: `no route ${request.method} ${request.url}` }));

  app.setErrorHandler((error, request, reply) => {
    const { status, message } = classify(error);
    // The queue logs its own storage failures once; a request it refused is no news. A web view
    // that was never built is the reply's news, not the daemon's.
    if (status >= 500 && !(error instanceof QueueUnavailableError) && !(error instanceof WebViewMissingError)) {
      request.log.error({ err: error }, 'API request failed');
    }
    return reply.code(status).send({ error: message });
  });

  app.post<{ Body: SubmitRequest }>('/containers', { schema: { body: submitBody, querystring: noQuery } }, async (request, reply) => {
    const body = request.body;
    const spec = { command: body.command, image: body.image ?? null, env: body.env ?? {} };
    checkRunnable(spec, { docker: deps.docker ?? false, runnerPath: deps.runnerPath });
    const container = queue.submit({
      ...spec,
      priority: body.priority ?? 0,
      constraints: { ...defaultConstraints, ...body.constraints },
    });
    return reply.code(201).send(withWaitReason(container));
  });

  app.get<{ Querystring: { state?: ContainerState; limit?: number } }>(
    '/containers',
    {
      schema: { querystring: listQuery },
      // Query values are always text; with coercion off globally, this one numeric parameter is converted here.
      preValidation: async (request) => {
        const query = request.query as Record<string, unknown>;
        if (typeof query.limit === 'string' && /^-?\d+$/.test(query.limit)) query.limit = Number(query.limit);
      },
    },
    async (request) => {
      const { state, limit = defaultListLimit } = request.query;
      return { containers: queue.list({ states: state ? [state] : undefined, limit }).map(withWaitReason) };
    },
  );

  // The queued containers in scheduling order (the queue's pending(), which the scheduler reads): a
  // container's position is its index + 1. GET /containers lists newest first, which is not that order.
  app.get<{ Querystring: { limit?: number } }>(
    '/queue',
    {
      schema: { querystring: queueQuery },
      preValidation: async (request) => {
        const query = request.query as Record<string, unknown>;
        if (typeof query.limit === 'string' && /^-?\d+$/.test(query.limit)) query.limit = Number(query.limit);
      },
    },
    async (request): Promise<QueueResponse> => {
      const { limit = defaultListLimit } = request.query;
      const containers: ContainerEntry[] = [];
      let queued = 0;
      for (const container of queue.pending()) {
        if (container.state !== 'queued') continue;
        queued++;
        if (containers.length < limit) containers.push(withWaitReason(container));
      }
      return { queued, containers };
    },
  );

  app.get<{ Params: { uuid: string } }>('/containers/:uuid', { schema: { params: uuidParams, querystring: noQuery } }, async (request) =>
    withWaitReason(mustGet(queue, request.params.uuid)),
  );

  app.post<{ Params: { uuid: string } }>(
    '/containers/:uuid/cancel',
    { schema: { params: uuidParams, querystring: noQuery } },
    async (request) => withWaitReason(queue.cancel(request.params.uuid)),
  );

  // The output's tail as text; with `since`, only the output from that byte on (see outputSince).
  // Either way the Drover-Output-Bytes header says how many bytes of output there are so far.
  app.get<{ Params: { uuid: string }; Querystring: { since?: number } }>(
    '/containers/:uuid/logs',
    {
      schema: { params: uuidParams, querystring: logsQuery },
      preValidation: async (request) => {
        const query = request.query as Record<string, unknown>;
        if (typeof query.since === 'string' && /^\d+$/.test(query.since)) query.since = Number(query.since);
      },
    },
    async (request, reply) => {
      const container = mustGet(queue, request.params.uuid);
      let live: string | null = null;
      if (container.state === 'running' && deps.liveLogs) {
        try {
          live = await deps.liveLogs(container);
        } catch (err) {
          // The stored tail is still an answer; an unreachable instance should not turn it into a 500.
          request.log.warn({ err, uuid: container.uuid }, 'could not fetch live logs; returning the stored tail');
        }
      }
      const tail = live === null ? markedTail(container.logTail) : withoutPartialCharacter(markedTail(live));
      const piece = outputSince(tail, request.query.since);
      return reply
        .type('text/plain; charset=utf-8')
        .header(outputBytesHeader, String(piece.totalBytes))
        .header(attemptHeader, String(container.attempts))
        .send(piece.text);
    },
  );

  app.get('/instances', { schema: { querystring: noQuery } }, async (): Promise<InstancesResponse> => ({
    instances: [
      ...pool.instances().map((view): PoolInstanceEntry => ({ ...view, orphan: false })),
      ...pool
        .orphans()
        .map(orphanEntry)
        .sort((a, b) => a.instanceId.localeCompare(b.instanceId)),
    ],
  }));

  app.post<{ Params: { id: string }; Body: { behavior: IdleBehavior } }>(
    '/instances/:id/idle-behavior',
    { schema: { params: instanceParams, body: idleBehaviorBody, querystring: noQuery } },
    async (request) => {
      const { id } = request.params;
      pool.setIdleBehavior(id, request.body.behavior);
      return mustGetInstance(pool, id);
    },
  );

  app.post<{ Params: { id: string } }>(
    '/instances/:id/kill',
    { schema: { params: instanceParams, querystring: noQuery } },
    async (request) => {
      const { id } = request.params;
      const before = mustGetInstance(pool, id);
      pool.shutdown({ instanceId: id });
      // The pool may forget a worker the moment it is shut down; the last view still tells what happened.
      return pool.instance(id) ?? before;
    },
  );

  app.get('/launch-configs', { schema: { querystring: noQuery } }, async (): Promise<LaunchConfigsResponse> => ({
    launchConfigs: launchConfigs.launchConfigs(),
    createsFrozen: launchConfigs.createsFrozen(),
  }));

  // pause, resume or archive: the action is a path segment checked against launchConfigActions, so
  // another word is a 400 naming the ones there are. Answers the config as it is after the change.
  app.post<{ Params: { id: string; action: LaunchConfigAction } }>(
    '/launch-configs/:id/:action',
    { schema: { params: launchConfigActionParams, querystring: noQuery } },
    async (request): Promise<LaunchConfigView> => launchConfigs.changeLaunchConfig(request.params.id, request.params.action),
  );

  // Lifts the freeze of every create that repeated boot failures set; idempotent, so a second call answers false.
  app.post('/pool/resume', { schema: { querystring: noQuery } }, async (): Promise<PoolResumeResponse> => ({
    resumed: launchConfigs.resumeCreates(),
  }));

  // A supervisor or load balancer learns that the queue cannot take changes (disk full, corrupt file).
  app.get('/healthz', { schema: { querystring: noQuery } }, async (_request, reply) => {
    const health = deps.health?.() ?? { ok: true };
    return reply.code(health.ok ? 200 : 503).send(health);
  });

  app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  // The web view's chart and totals: the last hour, which neither the pool nor the queue keeps, and the counts now.
  const history = deps.history;
  if (history !== undefined) {
    app.get('/history', { schema: { querystring: noQuery } }, async (): Promise<HistoryResponse> => ({
      intervalMs: history.intervalMs,
      windowMs: history.windowMs,
      samples: history.samples(),
      now: history.current(),
    }));
    app.addHook('onReady', async () => history.start());
    app.addHook('onClose', async () => history.stop());
  }

  // The web view (src/web, built into dist/web): a page that reads the routes above with the token it asks for.
  // Looked up per request, so a daemon started before `npm run build` serves the page once it is built.
  const webRoot = () => (deps.webRoot === undefined ? defaultWebRoot() : deps.webRoot);
  const sendWebFile = async (reply: FastifyReply, name: string) => {
    const body = await readWebFile(webRoot(), name);
    return reply.headers(webHeaders).type(webFiles[name] ?? 'application/octet-stream').send(body);
  };
  app.get('/', { schema: { querystring: noQuery } }, async (_request, reply) => sendWebFile(reply, 'index.html'));
  // Only the files the page loads, by name: nothing else under the directory (a source map, a
  // stray file) is served, and a name is never a path.
  app.get<{ Params: { file: string } }>('/web/:file', { schema: { params: webFileParams, querystring: noQuery } }, async (request, reply) =>
    Object.hasOwn(webFiles, request.params.file) ? sendWebFile(reply, request.params.file) : reply.callNotFound(),
  );

  return app;
}

/** Listens on `address:port` (port 0 picks a free one) and returns the URL clients should use. */
export async function startServer(deps: ApiDeps, listen: { address: string; port: number }): Promise<{ url: string; close(): Promise<void> }> {
  const app = buildServer(deps);
  await app.listen({ host: listen.address, port: listen.port });
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    close: () => app.close(),
  };
}

/** Answers 401 with a Bearer challenge; `invalidToken` when a token was given but is not the daemon's. */
function refuse(reply: FastifyReply, reason: string, invalidToken: boolean): FastifyReply {
  const challenge = invalidToken ? `Bearer realm="${authRealm}", error="invalid_token"` : `Bearer realm="${authRealm}"`;
  return reply.code(401).header('www-authenticate', challenge).send({ error: reason });
}

function mustGet(queue: ContainerQueue, uuid: string): Container {
  const container = queue.get(uuid);
  if (!container) throw new ContainerNotFoundError(uuid);
  return container;
}

/** A tail split after its logTailMarker line, read once per request. */
interface MarkedTail {
  /** The logTailMarker line, '' when the tail holds the whole output. */
  marker: string;
  /** The output's size and the bytes the tail kept, as the marker says; 0 without one. */
  totalBytes: number;
  keptBytes: number;
  body: string;
}

function markedTail(text: string): MarkedTail {
  const marker = logTailMarkerPattern.exec(text);
  if (!marker) return { marker: '', totalBytes: 0, keptBytes: 0, body: text };
  return { marker: marker[0], totalBytes: Number(marker[1]), keptBytes: Number(marker[2]), body: text.slice(marker[0].length) };
}

/**
 * What the logs route answers for a tail (the runner's or the stored one, after a logTailMarker
 * line when its start was dropped), and the output's size in bytes. Without `since`, the tail as
 * it is. With it, the output from byte `since` on: when the tail starts after that byte, a line
 * saying how many bytes were dropped comes first, so a client polling with the last size it saw
 * prints every byte once or says what it missed. Offsets count the UTF-8 bytes of the text, from
 * its end; a piece never starts inside a character.
 */
function outputSince(marked: MarkedTail, since: number | undefined): { text: string; totalBytes: number } {
  const tail = Buffer.from(marked.body, 'utf8');
  // At least the tail: bytes that were not UTF-8 come back as U+FFFD, which can make the tail longer than the runner counted.
  const totalBytes = Math.max(marked.totalBytes, tail.length);
  if (since === undefined) return { text: marked.marker + marked.body, totalBytes };
  const tailStart = totalBytes - tail.length;
  if (since >= totalBytes) return { text: '', totalBytes };
  if (since < tailStart) {
    const dropped = `[drover: ${tailStart - since} bytes of output, from byte ${since} to ${tailStart}, were dropped before they were read; the daemon keeps the last ${tail.length}]\n`;
    return { text: dropped + tail.toString('utf8'), totalBytes };
  }
  let start = since - tailStart;
  // Skip continuation bytes (10xxxxxx): the character they belong to was in the previous piece.
  while (start < tail.length && ((tail[start] ?? 0) & 0xc0) === 0x80) start++;
  return { text: tail.subarray(start).toString('utf8'), totalBytes };
}

/**
 * A live read of a running container's output as if it had ended before a character the container
 * was still writing. A read can end after the first bytes of one, which the SSH executor decodes
 * as one U+FFFD: printed and counted, the next poll would ask from past them and the character
 * would never be printed. Left out of the text and of the count (the marker line, when the start
 * was dropped, counts the bytes that remain), the next poll reads it whole. A U+FFFD the output
 * holds itself waits for the next read too, or for the stored tail once the container is final.
 */
function withoutPartialCharacter(marked: MarkedTail): MarkedTail {
  if (!marked.body.endsWith('\uFFFD')) return marked;
  const body = marked.body.slice(0, -1);
  if (marked.marker === '') return { ...marked, body };
  // The tail may also start inside a character: each byte before its first whole one is a U+FFFD of its own.
  const cut = /^\uFFFD{0,3}/.exec(body)?.[0].length ?? 0;
  const partial = marked.keptBytes - cut - Buffer.byteLength(body.slice(cut), 'utf8');
  // A character is cut short after 1 to 3 of its bytes; any other count means this U+FFFD stands for something else.
  if (!(partial >= 1 && partial <= 3)) return marked;
  const totalBytes = marked.totalBytes - partial;
  const keptBytes = marked.keptBytes - partial;
  return { marker: logTailMarker(totalBytes, keptBytes), totalBytes, keptBytes, body };
}

function orphanEntry(instance: CloudInstance): OrphanEntry {
  return {
    orphan: true,
    instanceId: instance.id,
    providerType: instance.providerType,
    address: instance.address,
    instanceTypeTag: instance.tags[tagKeys.instanceType] || null,
  };
}

function mustGetInstance(pool: PoolControl, id: string): InstanceView {
  const view = pool.instance(id);
  if (!view) throw new UnknownInstanceError(id);
  return view;
}

/** Maps anything thrown while serving a request to the status and the one-line reason the client sees. */
function classify(error: unknown): { status: number; message: string } {
  if (error instanceof ContainerNotFoundError || error instanceof UnknownInstanceError || error instanceof UnknownLaunchConfigError) {
    return { status: 404, message: error.message };
  }
  if (error instanceof ContainerStateError || error instanceof LaunchConfigStateError) return { status: 409, message: error.message };
  if (error instanceof InvalidContainerSpecError || error instanceof UnrunnableSpecError) return { status: 400, message: error.message };
  // The queue file refused it (disk full, read-only, corrupt): nothing changed, and /healthz says why.
  if (error instanceof QueueUnavailableError) return { status: 503, message: error.message };
  if (error instanceof WebViewMissingError) return { status: 503, message: error.message };
  if (error instanceof Error) {
    // Fastify's own client errors (validation, malformed or empty JSON, body too large, bad media type) carry their status.
    const status = (error as { statusCode?: unknown }).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) return { status, message: error.message };
  }
  return { status: 500, message: 'internal error; see the daemon log' };
}

// Ajv's defaults say "body must NOT have additional properties" without naming the property; every
// reason here names the field it is about, as a path such as body/constraints/vcpus.
function describeValidationErrors(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const reasons = errors.map((e) => {
    const at = `${dataVar}${e.instancePath}`;
    const { additionalProperty, missingProperty, allowedValues } = e.params;
    if (e.keyword === 'additionalProperties' && typeof additionalProperty === 'string') return `${at}/${additionalProperty} is not a known property`;
    if (e.keyword === 'required' && typeof missingProperty === 'string') return `${at}/${missingProperty} is required`;
    if (e.keyword === 'enum' && Array.isArray(allowedValues)) return `${at} must be one of ${allowedValues.map(String).join(', ')}`;
    return `${at} ${e.message ?? 'is invalid'}`;
  });
  return new Error(reasons.join(', '));
}

