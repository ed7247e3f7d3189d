// The web view: reads the daemon's API every two seconds with the operator's token and shows the
// pool, the queue and the last hour. It decides nothing itself: every number comes from the API
// (totals and the chart from GET /history, instances from GET /instances, the queue in scheduling
// order from GET /queue), and every button is an API call.

// What the page reads of the API's answers (src/http/server.ts); the rest of each body is ignored.
interface TransitionRecord {
  at: number;
  from: string | null;
  to: string;
  reason: string;
}

interface PoolInstance {
  orphan: false;
  workerId: string;
  instanceId: string | null;
  instanceType: string;
  price: number;
  state: string;
  idleBehavior: string;
  running: string[];
  appearedAt: number;
  lastError: string | null;
  history: TransitionRecord[];
}

interface OrphanInstance {
  orphan: true;
  instanceId: string;
  providerType: string;
  instanceTypeTag: string | null;
}

type InstanceEntry = PoolInstance | OrphanInstance;

interface QueuedContainer {
  uuid: string;
  submittedAt: number;
  waitReason: string | null;
}

interface Sample {
  at: number;
  instances: number;
  hourlySpend: number;
  running: number;
  queued: number;
}

interface HistoryBody {
  windowMs: number;
  samples: Sample[];
  now: Sample;
}

const tokenKey = 'drover-token';
const pollMs = 2_000;
const queueLimit = 100;
// The lifecycle states in the order an instance passes through them (machines/instance.ts).
const lifecycleOrder = ['creating', 'unknown', 'booting', 'idle', 'running', 'shutdown', 'failed'];
const behaviorActions = ['hold', 'drain', 'run'] as const;
const finalStates = new Set(['shutdown', 'failed']);

/** The daemon refused the token (401): the page forgets it and asks again. */
class TokenRefusedError extends Error {}

/** Any other answer than 2xx or 401, with the API's reason. */
class ApiError extends Error {}

function element<T extends Element = HTMLElement>(id: string): T {
  const found = document.querySelector<T>(`#${id}`);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found;
}

const ui = {
  tokenForm: element<HTMLFormElement>('token-form'),
  tokenInput: element<HTMLInputElement>('token-input'),
  tokenError: element('token-error'),
  forget: element<HTMLButtonElement>('forget-token'),
  status: element('status'),
  totals: element('totals'),
  view: element('view'),
  chart: element<SVGSVGElement>('chart'),
  instances: element('instances'),
  historySection: element('history-section'),
  historyTitle: element('history-title'),
  historyNote: element('history-note'),
  historyBody: element<HTMLTableElement>('history').tBodies[0],
  historyClose: element<HTMLButtonElement>('history-close'),
  queueSummary: element('queue-summary'),
  queueBody: element<HTMLTableElement>('queue').tBodies[0],
};

const state = {
  timer: null as ReturnType<typeof setTimeout> | null,
  // The daemon's clock minus the browser's, from the last GET /history: ages are on the daemon's clock.
  clockOffset: 0,
  instances: [] as InstanceEntry[],
  // What the instance tables were last drawn from, so a poll that changed nothing leaves the DOM (and a button about to be clicked) alone.
  drawnInstances: '',
  drawnQueue: '',
  selected: null as string | null,
  busy: new Set<string>(),
  // One refresh at a time: a button's refresh during a poll's runs once that one is done, so there is only ever one poll timer.
  refreshing: false,
  refreshAgain: false,
};

async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const token = sessionStorage.getItem(tokenKey);
  if (token === null) throw new TokenRefusedError('no token');
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  // Relative paths, so the page works behind a proxy that serves the daemon under a prefix.
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  if (response.status === 401) {
    sessionStorage.removeItem(tokenKey);
    throw new TokenRefusedError('the daemon refused the token');
  }
  const data: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = typeof data === 'object' && data !== null && 'error' in data ? String(data.error) : response.statusText;
    throw new ApiError(`${method} ${path}: ${response.status} ${reason}`);
  }
  return data as T;
}

function askForToken(message: string): void {
  stopPolling();
  ui.view.hidden = true;
  ui.totals.hidden = true;
  ui.forget.hidden = true;
  ui.tokenForm.hidden = false;
  ui.tokenError.textContent = message;
  setStatus('');
  ui.tokenInput.focus();
}

function showView(): void {
  ui.tokenForm.hidden = true;
  ui.view.hidden = false;
  ui.totals.hidden = false;
  ui.forget.hidden = false;
  state.drawnInstances = '';
  state.drawnQueue = '';
  void refresh();
}

function stopPolling(): void {
  if (state.timer !== null) clearTimeout(state.timer);
  state.timer = null;
}

function setStatus(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
}

/** Reads everything once and draws it, then comes back in pollMs; a refused token stops it. */
async function refresh(): Promise<void> {
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  state.refreshAgain = false;
  stopPolling();
  try {
    const [instances, queue, history] = await Promise.all([
      api<{ instances: InstanceEntry[] }>('GET', 'instances'),
      api<{ queued: number; containers: QueuedContainer[] }>('GET', `queue?limit=${queueLimit}`),
      api<HistoryBody>('GET', 'history'),
    ]);
    state.clockOffset = history.now.at - Date.now();
    drawTotals(history.now);
    drawChart(history);
    drawInstances(instances.instances);
    drawQueue(queue.queued, queue.containers);
    drawHistory();
    drawClocks();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error instanceof TokenRefusedError) {
      state.refreshing = false;
      askForToken('The daemon refused the token; enter it again.');
      return;
    }
    setStatus(`update failed: ${error instanceof Error ? error.message : String(error)}`, true);
  }
  state.refreshing = false;
  if (state.refreshAgain) void refresh();
  else state.timer = setTimeout(() => void refresh(), pollMs);
}

function daemonNow(): number {
  return Date.now() + state.clockOffset;
}

function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function formatPrice(perHour: number): string {
  // Prices below a cent an hour exist (small preemptible types); two decimals would show them as $0.00.
  return perHour > 0 && perHour < 0.1 ? `$${perHour.toFixed(4).replace(/0{1,2}$/, '')}` : `$${perHour.toFixed(2)}`;
}

function cell(row: HTMLTableRowElement, text: string, className?: string): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = text;
  if (className !== undefined) td.className = className;
  return td;
}

function drawTotals(now: Sample): void {
  element('total-instances').textContent = String(now.instances);
  element('total-spend').textContent = formatPrice(now.hourlySpend);
  element('total-running').textContent = String(now.running);
  element('total-queued').textContent = String(now.queued);
}

/** Ages and wait times, which change every poll while nothing else does: drawn into the cells that carry their start time. */
function drawClocks(): void {
  const now = daemonNow();
  for (const td of document.querySelectorAll<HTMLElement>('[data-since]')) {
    td.textContent = formatDuration(now - Number(td.dataset.since));
  }
}

function drawInstances(instances: InstanceEntry[]): void {
  state.instances = instances;
  const drawn = JSON.stringify(instances.map((entry) => (entry.orphan ? entry : { ...entry, history: entry.history.length })));
  const busy = [...state.busy].join();
  if (drawn + busy === state.drawnInstances) {
    markSelected();
    return;
  }
  state.drawnInstances = drawn + busy;
  const groups = new Map<string, InstanceEntry[]>();
  for (const entry of instances) {
    const key = entry.orphan ? 'orphan' : entry.state;
    groups.set(key, [...(groups.get(key) ?? []), entry]);
  }
  const order = [...lifecycleOrder, ...[...groups.keys()].filter((key) => !lifecycleOrder.includes(key) && key !== 'orphan'), 'orphan'];
  const parts: HTMLElement[] = [];
  for (const key of order) {
    const entries = groups.get(key);
    if (entries === undefined) continue;
    const heading = document.createElement('h3');
    heading.textContent = key === 'orphan' ? `orphans (${entries.length}): this pool's tag, a type the config does not define` : `${key} (${entries.length})`;
    parts.push(heading, key === 'orphan' ? orphanTable(entries) : instanceTable(entries));
  }
  if (parts.length === 0) {
    const empty = document.createElement('p');
    empty.className = 'empty';
    empty.textContent = 'No instances.';
    parts.push(empty);
  }
  ui.instances.replaceChildren(...parts);
  markSelected();
}

function instanceTable(entries: InstanceEntry[]): HTMLTableElement {
  const table = document.createElement('table');
  const head = table.createTHead().insertRow();
  for (const title of ['instance', 'type', 'price/h', 'age', 'containers', 'idle behaviour', '']) cell(head, title);
  const body = table.createTBody();
  for (const entry of entries) {
    if (entry.orphan) continue;
    const row = body.insertRow();
    row.className = 'instance';
    row.dataset.worker = entry.workerId;
    if (entry.instanceId !== null) row.dataset.instanceId = entry.instanceId;
    row.title = 'Show its transitions';
    cell(row, entry.instanceId ?? `${entry.workerId} (no instance yet)`, 'id');
    cell(row, entry.instanceType);
    cell(row, formatPrice(entry.price));
    cell(row, '', 'age').dataset.since = String(entry.appearedAt);
    cell(row, entry.running.length === 0 ? '–' : `${entry.running.length}: ${entry.running.map((uuid) => uuid.slice(0, 8)).join(' ')}`, 'containers').title =
      entry.running.join('\n');
    const behavior = cell(row, entry.idleBehavior, 'idle-behavior');
    behavior.dataset.behavior = entry.idleBehavior;
    const actions = cell(row, '', 'actions');
    const final = finalStates.has(entry.state);
    const busy = state.busy.has(entry.workerId);
    for (const action of behaviorActions) {
      actions.append(actionButton(action, entry.workerId, final || busy || entry.idleBehavior === action));
    }
    actions.append(actionButton('kill', entry.workerId, final || busy));
  }
  return table;
}

function actionButton(action: (typeof behaviorActions)[number] | 'kill', workerId: string, disabled: boolean): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = action;
  button.className = action;
  button.dataset.action = action;
  button.dataset.worker = workerId;
  button.disabled = disabled;
  button.title =
    action === 'hold'
      ? 'No new work; never shut down by a timeout or as surplus'
      : action === 'drain'
        ? 'No new work; shut down once its containers are done'
        : action === 'run'
          ? 'Takes work; shut down once idle for its idle timeout'
          : 'Shut it down now, whatever it runs';
  return button;
}

function orphanTable(entries: InstanceEntry[]): HTMLTableElement {
  const table = document.createElement('table');
  const head = table.createTHead().insertRow();
  for (const title of ['instance', 'provider type', 'type tag']) cell(head, title);
  const body = table.createTBody();
  for (const entry of entries) {
    if (!entry.orphan) continue;
    const row = body.insertRow();
    cell(row, entry.instanceId, 'id');
    cell(row, entry.providerType);
    cell(row, entry.instanceTypeTag ?? '–');
  }
  return table;
}

function markSelected(): void {
  for (const row of ui.instances.querySelectorAll<HTMLTableRowElement>('tr.instance')) {
    row.classList.toggle('selected', row.dataset.worker === state.selected);
  }
}

async function act(action: string, workerId: string): Promise<void> {
  const entry = state.instances.find((candidate) => !candidate.orphan && candidate.workerId === workerId);
  const name = entry === undefined || entry.orphan ? workerId : (entry.instanceId ?? workerId);
  if (action === 'kill' && !confirm(`Kill ${name}? It is shut down at once; containers running on it go back to the queue (or fail, at maxAttempts).`)) return;
  state.busy.add(workerId);
  drawInstances(state.instances);
  try {
    const path = `instances/${encodeURIComponent(workerId)}/${action === 'kill' ? 'kill' : 'idle-behavior'}`;
    await api('POST', path, action === 'kill' ? undefined : { behavior: action });
    setStatus(action === 'kill' ? `kill of ${name} requested` : `${name}: idle behaviour ${action}`);
  } catch (error) {
    if (error instanceof TokenRefusedError) {
      askForToken('The daemon refused the token; enter it again.');
      return;
    }
    setStatus(`${action} ${name} failed: ${error instanceof Error ? error.message : String(error)}`, true);
  } finally {
    state.busy.delete(workerId);
  }
  await refresh();
}

function drawHistory(): void {
  const selected = state.selected;
  ui.historySection.hidden = selected === null;
  if (selected === null) return;
  const entry = state.instances.find((candidate): candidate is PoolInstance => !candidate.orphan && candidate.workerId === selected);
  // An instance the pool has forgotten keeps the last transitions the page saw.
  if (entry === undefined) {
    ui.historyNote.textContent = 'No longer in the pool; these are the last transitions seen.';
    return;
  }
  ui.historyTitle.textContent = entry.instanceId ?? entry.workerId;
  ui.historyNote.textContent = `${entry.instanceType}, ${entry.state}, idle behaviour ${entry.idleBehavior}${entry.lastError === null ? '' : `; last error: ${entry.lastError}`}. The last ${entry.history.length} transitions, newest first.`;
  const rows = [...entry.history].reverse().map((transition) => {
    const row = document.createElement('tr');
    cell(row, new Date(transition.at).toLocaleTimeString());
    cell(row, transition.from ?? '–');
    cell(row, transition.to);
    cell(row, transition.reason);
    return row;
  });
  ui.historyBody?.replaceChildren(...rows);
}

function drawQueue(total: number, containers: QueuedContainer[]): void {
  ui.queueSummary.textContent =
    total === 0 ? 'Nothing queued.' : total > containers.length ? `${total} queued; the first ${containers.length} in scheduling order.` : `${total} queued, in scheduling order.`;
  const drawn = JSON.stringify(containers);
  if (drawn === state.drawnQueue) return;
  state.drawnQueue = drawn;
  const rows = containers.map((container, index) => {
    const row = document.createElement('tr');
    row.dataset.uuid = container.uuid;
    cell(row, String(index + 1));
    cell(row, container.uuid, 'uuid');
    cell(row, '', 'wait').dataset.since = String(container.submittedAt);
    cell(row, container.waitReason ?? 'not yet seen by a scheduling pass', 'wait-reason');
    return row;
  });
  ui.queueBody?.replaceChildren(...rows);
}

const svgNs = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(name: K, attributes: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const node = document.createElementNS(svgNs, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Instances and queue length over the window, one line each, on one scale from 0. */
function drawChart(history: HistoryBody): void {
  const width = 640;
  const height = 170;
  const left = 40;
  const right = 10;
  const top = 10;
  const bottom = 22;
  const samples = [...history.samples, history.now];
  const end = history.now.at;
  const start = end - history.windowMs;
  const peak = Math.max(1, ...samples.map((s) => Math.max(s.instances, s.queued)));
  // A round top for the scale: 1, 2 or 5 times a power of ten.
  const magnitude = 10 ** Math.floor(Math.log10(peak));
  const scaleTop = [1, 2, 5, 10].map((step) => step * magnitude).find((value) => value >= peak) ?? peak;
  const x = (at: number) => left + ((Math.max(at, start) - start) / (end - start || 1)) * (width - left - right);
  const y = (value: number) => top + (1 - value / scaleTop) * (height - top - bottom);
  const line = (pick: (sample: Sample) => number, className: string) =>
    svg('polyline', { class: className, points: samples.map((sample) => `${x(sample.at).toFixed(1)},${y(pick(sample)).toFixed(1)}`).join(' ') });
  const minutes = Math.round(history.windowMs / 60_000);
  ui.chart.replaceChildren(
    svg('line', { class: 'axis', x1: left, y1: y(0), x2: width - right, y2: y(0) }),
    svg('line', { class: 'axis', x1: left, y1: y(scaleTop), x2: width - right, y2: y(scaleTop) }),
    svg('text', { x: left - 6, y: y(scaleTop) + 4, 'text-anchor': 'end' }, String(scaleTop)),
    svg('text', { x: left - 6, y: y(0) + 4, 'text-anchor': 'end' }, '0'),
    svg('text', { x: left, y: height - 6 }, `−${minutes} min`),
    svg('text', { x: (left + width - right) / 2, y: height - 6, 'text-anchor': 'middle' }, `−${Math.round(minutes / 2)} min`),
    svg('text', { x: width - right, y: height - 6, 'text-anchor': 'end' }, 'now'),
    line((sample) => sample.instances, 'line-instances'),
    line((sample) => sample.queued, 'line-queued'),
  );
}

ui.tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.tokenInput.value.trim();
  if (token === '') return;
  sessionStorage.setItem(tokenKey, token);
  ui.tokenInput.value = '';
  ui.tokenError.textContent = '';
  showView();
});

ui.forget.addEventListener('click', () => {
  sessionStorage.removeItem(tokenKey);
  askForToken('');
});

// One listener for every table the instances are drawn in, so a redraw needs no new listeners.
ui.instances.addEventListener('click', (event) => {
  const target = event.target as Element;
  const button = target.closest<HTMLButtonElement>('button[data-action]');
  if (button !== null) {
    const { action, worker } = button.dataset;
    if (action !== undefined && worker !== undefined) void act(action, worker);
    return;
  }
  const row = target.closest<HTMLTableRowElement>('tr.instance');
  if (row?.dataset.worker === undefined) return;
  state.selected = row.dataset.worker;
  markSelected();
  drawHistory();
  ui.historySection.scrollIntoView({ block: 'nearest' });
});

ui.historyClose.addEventListener('click', () => {
  state.selected = null;
  markSelected();
  drawHistory();
});

if (sessionStorage.getItem(tokenKey) === null) askForToken('');
else showView();
