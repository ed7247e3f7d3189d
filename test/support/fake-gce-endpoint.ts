// A small Compute Engine REST endpoint on 127.0.0.1 for tests where the real @google-cloud/compute
// client speaks HTTP to it: insert (requestId idempotency), get, delete, setLabels and setMetadata
// (fingerprints checked), aggregated listing by label with paging, zone operations that finish
// after a set number of polls, and injected errors, on the call or in the operation. Deletes take
// effect at once here; on GCE they take a while.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An instance as the fake holds it: Compute's JSON resource. */
export type FakeInstance = Record<string, unknown> & {
  name: string;
  zone: string;
  status: string;
  labels: Record<string, string>;
  labelFingerprint: string;
  metadata: { fingerprint: string; items: { key: string; value: string }[] };
};

export type FakeCall = 'insert' | 'get' | 'delete' | 'setLabels' | 'setMetadata' | 'list' | 'operation';

export interface FakeRequest {
  call: FakeCall;
  method: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
  authorization: string | undefined;
}

export interface OperationErrorEntry {
  code: string;
  message: string;
}

export interface FakeGceEndpoint {
  /** `http://127.0.0.1:<port>`, for the settings' `apiEndpoint`. */
  url: string;
  /** Keyed `<zone>/<name>`, in creation order. */
  readonly instances: Map<string, FakeInstance>;
  readonly requests: FakeRequest[];
  /** Most instances one aggregated-list page holds. */
  pageSize: number;
  /** Operation polls answered RUNNING before the operation is DONE. */
  pollsUntilDone: number;
  /** Zones whose scope a listing reports as UNREACHABLE. */
  unreachableZones: string[];
  /** Answers the next `call` with this HTTP error body instead of carrying it out. */
  failNext(call: FakeCall, status: number, error: Record<string, unknown>): void;
  /** The next operation of `call` finishes DONE with these errors, and changes nothing. */
  failNextOperation(call: 'insert' | 'setLabels' | 'setMetadata', errors: OperationErrorEntry[], httpErrorStatusCode?: number): void;
  /** Runs `action` just before the next `call` is carried out, e.g. to change an instance as someone else would. */
  beforeNext(call: FakeCall, action: () => void): void;
  close(): Promise<void>;
}

const acceptedToken = 'Bearer fake-token';

interface FakeOperation {
  name: string;
  zone: string;
  operationType: string;
  pollsLeft: number;
  error?: { errors: OperationErrorEntry[] };
  httpErrorStatusCode?: number;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function httpError(code: number, reason: string, message: string): Record<string, unknown> {
  return { error: { code, message, errors: [{ message, domain: 'global', reason }] } };
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

/** The `(labels.k = "v")` terms of a Compute filter, as the driver writes them. */
function labelTerms(filter: string | undefined): [string, string][] {
  return [...(filter ?? '').matchAll(/\(labels\.([a-z0-9_-]+) = "([a-z0-9_-]*)"\)/g)].map((m) => [m[1] ?? '', m[2] ?? '']);
}

export async function startFakeGceEndpoint(): Promise<FakeGceEndpoint> {
  const instances = new Map<string, FakeInstance>();
  const requests: FakeRequest[] = [];
  const operations = new Map<string, FakeOperation>();
  const byRequestId = new Map<string, FakeOperation>();
  const failures = new Map<FakeCall, { status: number; error: Record<string, unknown> }>();
  const operationFailures = new Map<string, { errors: OperationErrorEntry[]; httpErrorStatusCode?: number }>();
  const actions = new Map<FakeCall, () => void>();
  let counter = 0;
  const fingerprint = () => Buffer.from(`fp-${++counter}`).toString('base64');

  function operationJson(operation: FakeOperation): Record<string, unknown> {
    const done = operation.pollsLeft <= 0;
    return {
      kind: 'compute#operation',
      name: operation.name,
      zone: `https://compute.example/compute/v1/projects/p/zones/${operation.zone}`,
      operationType: operation.operationType,
      status: done ? 'DONE' : 'RUNNING',
      ...(done && operation.error ? { error: operation.error, httpErrorStatusCode: operation.httpErrorStatusCode } : {}),
    };
  }

  /** A new operation; its change is made at once unless it is to fail, and it reads DONE after pollsUntilDone polls. */
  function startOperation(zone: string, operationType: string, change: () => void): FakeOperation {
    const failure = operationFailures.get(operationType);
    operationFailures.delete(operationType);
    const operation: FakeOperation = { name: `operation-${++counter}`, zone, operationType, pollsLeft: endpoint.pollsUntilDone };
    if (failure) {
      operation.error = { errors: failure.errors };
      operation.httpErrorStatusCode = failure.httpErrorStatusCode ?? 400;
    } else {
      change();
    }
    operations.set(operation.name, operation);
    return operation;
  }

  function instanceJson(instance: FakeInstance): FakeInstance {
    return structuredClone(instance);
  }

  function route(method: string, path: string): { call: FakeCall; zone: string; name: string } | undefined {
    const zoned = path.match(/^\/compute\/v1\/projects\/[^/]+\/zones\/([^/]+)\/(instances|operations)(?:\/([^/]+))?(?:\/(setLabels|setMetadata))?$/);
    if (path.match(/^\/compute\/v1\/projects\/[^/]+\/aggregated\/instances$/) && method === 'GET') return { call: 'list', zone: '', name: '' };
    if (!zoned) return undefined;
    const [, zone = '', collection, name = '', action] = zoned;
    if (collection === 'operations' && method === 'GET') return { call: 'operation', zone, name };
    if (action === 'setLabels' || action === 'setMetadata') return { call: action, zone, name };
    if (method === 'POST' && !name) return { call: 'insert', zone, name };
    if (method === 'GET' && name) return { call: 'get', zone, name };
    if (method === 'DELETE' && name) return { call: 'delete', zone, name };
    return undefined;
  }

  function handle(request: FakeRequest, zone: string, name: string, res: ServerResponse): void {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const id = `${zone}/${name}`;
    switch (request.call) {
      case 'insert': {
        const requestId = request.query.requestId;
        const earlier = requestId ? byRequestId.get(requestId) : undefined;
        if (earlier) return send(res, 200, operationJson(earlier));
        const resource = structuredClone(body) as Record<string, unknown> & { name: string; metadata?: { items?: { key: string; value: string }[] } };
        const newId = `${zone}/${resource.name}`;
        if (instances.has(newId)) return send(res, 409, httpError(409, 'alreadyExists', `The resource '${newId}' already exists`));
        const n = instances.size + 1;
        const operation = startOperation(zone, 'insert', () => {
          const interfaces = (resource.networkInterfaces ?? []) as { accessConfigs?: Record<string, unknown>[] }[];
          instances.set(newId, {
            ...resource,
            name: resource.name,
            zone: `https://compute.example/compute/v1/projects/p/zones/${zone}`,
            machineType: `https://compute.example/compute/v1/projects/p/${String(resource.machineType)}`,
            status: 'RUNNING',
            labels: (resource.labels ?? {}) as Record<string, string>,
            labelFingerprint: fingerprint(),
            metadata: { fingerprint: fingerprint(), items: resource.metadata?.items ?? [] },
            networkInterfaces: interfaces.map((nic) => ({
              ...nic,
              networkIP: `10.0.0.${n}`,
              accessConfigs: (nic.accessConfigs ?? []).map((config) => ({ ...config, natIP: `203.0.113.${n}` })),
            })),
          });
        });
        if (requestId) byRequestId.set(requestId, operation);
        return send(res, 200, operationJson(operation));
      }
      case 'get': {
        const instance = instances.get(id);
        return instance ? send(res, 200, instanceJson(instance)) : send(res, 404, httpError(404, 'notFound', `The resource '${id}' was not found`));
      }
      case 'delete': {
        if (!instances.has(id)) return send(res, 404, httpError(404, 'notFound', `The resource '${id}' was not found`));
        return send(res, 200, operationJson(startOperation(zone, 'delete', () => instances.delete(id))));
      }
      case 'setLabels':
      case 'setMetadata': {
        const instance = instances.get(id);
        if (!instance) return send(res, 404, httpError(404, 'notFound', `The resource '${id}' was not found`));
        const labels = request.call === 'setLabels';
        const current = labels ? instance.labelFingerprint : instance.metadata.fingerprint;
        const given = labels ? body.labelFingerprint : body.fingerprint;
        if (given !== current) {
          const what = labels ? 'Labels' : 'Metadata';
          return send(res, 412, httpError(412, 'conditionNotMet', `${what} fingerprint either invalid or resource ${what.toLowerCase()} have changed`));
        }
        const operation = startOperation(zone, request.call, () => {
          if (labels) {
            instance.labels = (body.labels ?? {}) as Record<string, string>;
            instance.labelFingerprint = fingerprint();
          } else {
            instance.metadata = { fingerprint: fingerprint(), items: (body.items ?? []) as { key: string; value: string }[] };
          }
        });
        return send(res, 200, operationJson(operation));
      }
      case 'operation': {
        const operation = operations.get(name);
        if (!operation) return send(res, 404, httpError(404, 'notFound', `The resource '${name}' was not found`));
        operation.pollsLeft--;
        return send(res, 200, operationJson(operation));
      }
      case 'list': {
        const terms = labelTerms(request.query.filter);
        const matching = [...instances.values()].filter((instance) => terms.every(([key, value]) => instance.labels[key] === value));
        const offset = Number(request.query.pageToken ?? 0);
        const page = matching.slice(offset, offset + endpoint.pageSize);
        const items: Record<string, unknown> = { 'zones/empty-zone1-a': { warning: { code: 'NO_RESULTS_ON_PAGE', message: 'There are no results for scope' } } };
        for (const zoneName of endpoint.unreachableZones) {
          items[`zones/${zoneName}`] = { warning: { code: 'UNREACHABLE', message: `The zone '${zoneName}' is unavailable` } };
        }
        for (const instance of page) {
          const scope = `zones/${instance.zone.slice(instance.zone.lastIndexOf('/') + 1)}`;
          const scoped = (items[scope] ??= { instances: [] }) as { instances: FakeInstance[] };
          scoped.instances.push(instanceJson(instance));
        }
        const next = offset + endpoint.pageSize;
        return send(res, 200, { kind: 'compute#instanceAggregatedList', items, ...(next < matching.length ? { nextPageToken: String(next) } : {}) });
      }
    }
  }

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const method = req.method ?? 'GET';
      const target = route(method, url.pathname);
      const body = await readBody(req);
      if (!target) return send(res, 404, httpError(404, 'notFound', `no route for ${method} ${url.pathname}`));
      const request: FakeRequest = {
        call: target.call,
        method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        body,
        authorization: req.headers.authorization,
      };
      requests.push(request);
      if (request.authorization !== acceptedToken) return send(res, 401, httpError(401, 'authError', 'Invalid Credentials'));
      const action = actions.get(target.call);
      actions.delete(target.call);
      action?.();
      const failure = failures.get(target.call);
      if (failure) {
        failures.delete(target.call);
        return send(res, failure.status, failure.error);
      }
      handle(request, target.zone, target.name, res);
    })().catch((error: unknown) => send(res, 500, httpError(500, 'backendError', String(error))));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const endpoint: FakeGceEndpoint = {
    url: `http://127.0.0.1:${port}`,
    instances,
    requests,
    pageSize: 500,
    pollsUntilDone: 1,
    unreachableZones: [],
    failNext(call, status, error) {
      failures.set(call, { status, error });
    },
    failNextOperation(call, errors, httpErrorStatusCode) {
      operationFailures.set(call, { errors, httpErrorStatusCode });
    },
    beforeNext(call, action) {
      actions.set(call, action);
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
  return endpoint;
}

/** The token the fake accepts; a test's auth client presents it. */
export const fakeGceAccessToken = acceptedToken.slice('Bearer '.length);
