// A small EC2 query-API endpoint on 127.0.0.1 for tests where the real SDK speaks HTTP: the four
// actions the driver calls, ClientToken idempotency, tag and state filters, paging, and injected
// errors and lost answers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeInstance {
  id: string;
  instanceType: string;
  privateIp: string;
  state: 'pending' | 'running' | 'shutting-down' | 'terminated';
  tags: Record<string, string>;
  /** Form parameters of the RunInstances that made it. */
  launch: Record<string, string>;
}

export interface FakeEc2Endpoint {
  /** `http://127.0.0.1:<port>`, for the driver's `endpoint`. */
  url: string;
  readonly instances: FakeInstance[];
  /** Every request, in order: its action and form parameters. */
  readonly requests: { action: string; params: Record<string, string> }[];
  /** Most instances one DescribeInstances page returns, whatever MaxResults asks. */
  pageSize: number;
  /** Answers the next `action` with this EC2 error instead. */
  failNext(action: string, code: string, status?: number): void;
  /** Carries out the next `action` but closes the connection instead of answering, as a lost answer. */
  loseNextAnswer(action: string): void;
  close(): Promise<void>;
}

const xmlns = 'http://ec2.amazonaws.com/doc/2016-11-15/';

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** `Prefix.1.Suffix`, `Prefix.2.Suffix`, ... as a list, for the query API's numbered lists. */
function numbered(params: Record<string, string>, prefix: string): string[] {
  const values: string[] = [];
  for (let n = 1; params[`${prefix}.${n}`] !== undefined; n++) values.push(params[`${prefix}.${n}`] ?? '');
  return values;
}

function tagsIn(params: Record<string, string>, prefix: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (let n = 1; params[`${prefix}.${n}.Key`] !== undefined; n++) tags[params[`${prefix}.${n}.Key`] ?? ''] = params[`${prefix}.${n}.Value`] ?? '';
  return tags;
}

function instanceXml(instance: FakeInstance): string {
  const tags = Object.entries(instance.tags)
    .map(([key, value]) => `<item><key>${escapeXml(key)}</key><value>${escapeXml(value)}</value></item>`)
    .join('');
  return (
    `<item><instanceId>${instance.id}</instanceId><instanceType>${instance.instanceType}</instanceType>` +
    `<instanceState><code>0</code><name>${instance.state}</name></instanceState>` +
    `<privateIpAddress>${instance.privateIp}</privateIpAddress><tagSet>${tags}</tagSet></item>`
  );
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

export async function startFakeEc2Endpoint(): Promise<FakeEc2Endpoint> {
  const instances: FakeInstance[] = [];
  const requests: { action: string; params: Record<string, string> }[] = [];
  const byClientToken = new Map<string, FakeInstance>();
  const failures = new Map<string, { code: string; status: number }>();
  const lostAnswers = new Set<string>();
  let requestCount = 0;
  let pageSize = 1000;

  function matches(instance: FakeInstance, params: Record<string, string>): boolean {
    for (let n = 1; params[`Filter.${n}.Name`] !== undefined; n++) {
      const name = params[`Filter.${n}.Name`] ?? '';
      const values = numbered(params, `Filter.${n}.Value`);
      const actual =
        name === 'instance-state-name' ? instance.state : name === 'instance-id' ? instance.id : name.startsWith('tag:') ? instance.tags[name.slice(4)] : undefined;
      if (actual === undefined || !values.includes(actual)) return false;
    }
    return true;
  }

  // Each action's answer body, or an error [code, message].
  const actions: Record<string, (params: Record<string, string>) => string | [string, string]> = {
    RunInstances: (params) => {
      const token = params.ClientToken ?? '';
      let instance = token ? byClientToken.get(token) : undefined;
      if (!instance) {
        const n = instances.length + 1;
        instance = {
          id: `i-${n.toString(16).padStart(17, '0')}`,
          instanceType: params.InstanceType ?? '',
          privateIp: `10.0.${Math.floor(n / 250)}.${(n % 250) + 1}`,
          state: 'pending',
          tags: tagsIn(params, 'TagSpecification.1.Tag'),
          launch: params,
        };
        instances.push(instance);
        if (token) byClientToken.set(token, instance);
      }
      return `<reservationId>r-${instance.id.slice(2)}</reservationId><instancesSet>${instanceXml(instance)}</instancesSet>`;
    },
    DescribeInstances: (params) => {
      const found = instances.filter((instance) => matches(instance, params));
      const start = Number(params.NextToken ?? 0);
      const size = Math.min(pageSize, Number(params.MaxResults ?? 1000));
      const page = found.slice(start, start + size);
      const reservations = page.map((instance) => `<item><reservationId>r-${instance.id.slice(2)}</reservationId><instancesSet>${instanceXml(instance)}</instancesSet></item>`);
      const next = start + size < found.length ? `<nextToken>${start + size}</nextToken>` : '';
      return `<reservationSet>${reservations.join('')}</reservationSet>${next}`;
    },
    TerminateInstances: (params) => {
      const ids = numbered(params, 'InstanceId');
      const missing = ids.find((id) => !instances.some((instance) => instance.id === id));
      if (missing) return ['InvalidInstanceID.NotFound', `The instance ID '${missing}' does not exist`];
      for (const instance of instances) if (ids.includes(instance.id)) instance.state = 'shutting-down';
      return `<instancesSet>${ids.map((id) => `<item><instanceId>${id}</instanceId></item>`).join('')}</instancesSet>`;
    },
    CreateTags: (params) => {
      const ids = numbered(params, 'ResourceId');
      for (const instance of instances) if (ids.includes(instance.id)) Object.assign(instance.tags, tagsIn(params, 'Tag'));
      return '<return>true</return>';
    },
  };

  function sendError(response: ServerResponse, status: number, code: string, message: string): void {
    response.writeHead(status, { 'content-type': 'text/xml' });
    response.end(
      `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>${code}</Code><Message>${escapeXml(message)}</Message></Error></Errors><RequestID>req-${requestCount}</RequestID></Response>`,
    );
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    requestCount++;
    const params = Object.fromEntries(new URLSearchParams(await readBody(request)));
    const action = params.Action ?? '';
    requests.push({ action, params });
    const failure = failures.get(action);
    if (failure) {
      failures.delete(action);
      return sendError(response, failure.status, failure.code, `injected ${failure.code}`);
    }
    const handler = actions[action];
    if (!handler) return sendError(response, 400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
    const answer = handler(params);
    if (lostAnswers.delete(action)) {
      response.socket?.destroy();
      return;
    }
    if (Array.isArray(answer)) return sendError(response, 400, answer[0], answer[1]);
    response.writeHead(200, { 'content-type': 'text/xml' });
    response.end(`<?xml version="1.0" encoding="UTF-8"?><${action}Response xmlns="${xmlns}"><requestId>req-${requestCount}</requestId>${answer}</${action}Response>`);
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => sendError(response, 500, 'InternalError', String(error)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    instances,
    requests,
    get pageSize() {
      return pageSize;
    },
    set pageSize(size: number) {
      pageSize = size;
    },
    failNext: (action, code, status = 400) => failures.set(action, { code, status }),
    loseNextAnswer: (action) => lostAnswers.add(action),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
