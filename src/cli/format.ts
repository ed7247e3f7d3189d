// How the client commands print containers, instances and launch configs: tables for listings, labelled lines for one container.
import type { InstanceEntry } from '../http/server.js';
import type { LaunchConfigView } from '../pool/launch-config-view.js';
import type { InstanceView } from '../pool/pool.js';
import type { Container } from '../queue/types.js';

/** A container as the API lists it: older daemons send no waitReason. */
export type ContainerEntry = Container & { waitReason?: string | null };
import { shellWord } from '../shell-quote.js';

/** The fewest characters of a REASON kept, however narrow the line. */
const minReasonWidth = 20;

/**
 * The containers as a table, REASON last: one line each (whitespace collapsed), shortened with an
 * ellipsis so the line fits `lineWidth` when one is given, '-' when there is none.
 */
export function containerTable(containers: ContainerEntry[], now: number, lineWidth?: number): string {
  const header = ['UUID', 'STATE', 'PRIORITY', 'ATTEMPTS', 'EXIT', 'INSTANCE', 'AGE', 'REASON'];
  const rows = containers.map((c) => [
    c.uuid,
    c.state,
    String(c.priority),
    String(c.attempts),
    c.exitCode === null ? '-' : String(c.exitCode),
    c.instanceId ?? '-',
    formatAge(now - c.submittedAt),
    // A queued container's REASON is why it waits now; `show` keeps why it was last requeued too.
    oneLine((c.state === 'queued' ? c.waitReason : null) ?? c.reason) ?? '-',
  ]);
  if (lineWidth !== undefined) fitLastColumn(header, rows, lineWidth);
  return table(header, rows);
}

/** Shortens every row's last cell so its line fits `lineWidth`, keeping at least minReasonWidth characters of it. */
function fitLastColumn(header: string[], rows: string[][], lineWidth: number): void {
  // Every column but the last is padded to its widest cell, two spaces apart.
  const before = columnWidths(header, rows).slice(0, -1).reduce((sum, width) => sum + width + 2, 0);
  const room = Math.max(minReasonWidth, lineWidth - before);
  for (const row of rows) row[row.length - 1] = shorten(row[row.length - 1] ?? '', room);
}

// An orphan's TYPE is its unknown type tag and its STATE is `orphan`; it has no idle behaviour or containers.
export function instanceTable(instances: InstanceEntry[]): string {
  return table(
    ['INSTANCE', 'TYPE', 'STATE', 'IDLE', 'RUNNING'],
    instances.map((i) =>
      i.orphan
        ? [i.instanceId, i.instanceTypeTag ?? '-', 'orphan', '-', '-']
        : [instanceName(i), i.instanceType, i.state, i.idleBehavior, String(i.running.length)],
    ),
  );
}

/** What the operator should do about the orphans in the listing; null if there are none. */
export function orphanHint(instances: InstanceEntry[]): string | null {
  const orphans = instances.filter((i) => i.orphan).length;
  if (orphans === 0) return null;
  const [count, carry, it, its] = orphans === 1 ? ['1 orphan', 'carries', 'it', 'its'] : [`${orphans} orphans`, 'carry', 'them', 'their'];
  return (
    `hint: ${count} ${carry} this pool's tag but an instance type the config does not define (${its} TYPE above); ` +
    `the pool neither counts nor manages ${it}, and \`drover instance kill\` cannot reach ${it}. ` +
    `Destroy ${it} with the cloud's own tools, or add ${its} type to instanceTypes in the config.\n`
  );
}

/**
 * The launch configs as a table, LAST ERROR last (its age, then its message on one line, shortened
 * to fit `lineWidth` when one is given, as containerTable's REASON). WEIGHT is the configured
 * weight → the one creates use now; INSTANCES is `n/max` when the config has a cap; RECENT is
 * boots/failures over the pool's window.
 */
export function launchConfigTable(configs: LaunchConfigView[], now: number, lineWidth?: number): string {
  const header = ['ID', 'TYPE', 'STATE', 'WEIGHT', 'INSTANCES', 'RECENT', 'LAST ERROR'];
  const rows = configs.map((c) => [
    c.id,
    c.instanceType,
    c.state,
    `${formatWeight(c.weight)}→${formatWeight(c.effectiveWeight)}`,
    c.maxInstances === null ? String(c.instances) : `${c.instances}/${c.maxInstances}`,
    `${c.recent.successes}/${c.recent.failures}`,
    c.lastError === null ? '-' : `${formatAge(now - c.lastError.at)} ago: ${oneLine(c.lastError.message) ?? '-'}`,
  ]);
  if (lineWidth !== undefined) fitLastColumn(header, rows, lineWidth);
  return table(header, rows);
}

/** What the operator should know when every create is frozen; null while they are not. */
export function frozenHint(createsFrozen: string | null): string | null {
  if (createsFrozen === null) return null;
  return `warning: every create is frozen: ${oneLine(createsFrozen) ?? '-'}. Once its cause is fixed, \`drover pool resume\` lifts the freeze.\n`;
}

/**
 * Every field of one container, a labelled line each. The environment shows its names only: its
 * values may be secrets, and `drover show --json` prints them for whoever needs them.
 */
export function containerDetails(c: ContainerEntry, now: number): string {
  const { vcpus, ramMiB, scratchGiB, gpus, preemptible } = c.constraints;
  const envNames = Object.keys(c.env).sort();
  const fields: [string, string][] = [
    ['uuid', c.uuid],
    ['state', c.state],
    ['exit code', c.exitCode === null ? '-' : String(c.exitCode)],
    ['reason', c.reason ?? '-'],
    ...(c.state === 'queued' ? [['waiting', c.waitReason ?? 'not yet seen by a scheduling pass'] as [string, string]] : []),
    ['attempts', String(c.attempts)],
    ['instance', c.instanceId ?? '-'],
    ['type', c.instanceType ?? '-'],
    ['priority', String(c.priority)],
    [
      'constraints',
      `${plural(vcpus, 'vCPU')}, ${ramMiB} MiB RAM, ${scratchGiB} GiB scratch, ${plural(gpus, 'GPU')}, ${preemptible ? 'preemptible' : 'not preemptible'}`,
    ],
    ['image', c.image ?? '-'],
    ['command', c.command.map(shellWord).join(' ')],
    ['env', envNames.length === 0 ? '-' : `${envNames.join(' ')} (values not shown)`],
    ['submitted', formatTime(c.submittedAt, now)],
    ['started', c.startedAt === null ? '-' : formatTime(c.startedAt, now)],
    ['finished', c.finishedAt === null ? '-' : formatTime(c.finishedAt, now)],
    ['updated', formatTime(c.updatedAt, now)],
  ];
  const width = Math.max(...fields.map(([label]) => label.length)) + 2;
  // A value of several lines (a long reason, say) keeps them, indented under its first.
  return fields.map(([label, value]) => `${label.padEnd(width)}${value.replace(/\n/g, `\n${' '.repeat(width)}`)}\n`).join('');
}

// An instance still being created has no cloud id yet; its worker id is what the pool accepts instead.
export function instanceName(view: InstanceView): string {
  return view.instanceId ?? view.workerId;
}

function table(header: string[], rows: string[][]): string {
  const widths = columnWidths(header, rows);
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .concat('\n');
  return [header, ...rows].map(line).join('');
}

function columnWidths(header: string[], rows: string[][]): number[] {
  return header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)));
}

function oneLine(text: string | null): string | null {
  const line = text?.replace(/\s+/g, ' ').trim();
  return line ? line : null;
}

function shorten(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

/** A weight as an operator reads it: at most two decimals, `<0.01` for a positive one that would round to 0. */
function formatWeight(weight: number): string {
  const rounded = Number(weight.toFixed(2));
  return rounded === 0 && weight > 0 ? '<0.01' : String(rounded);
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function formatTime(ms: number, now: number): string {
  return `${new Date(ms).toISOString()} (${formatAge(now - ms)} ago)`;
}

function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}
