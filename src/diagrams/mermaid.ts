// A machine's definition as a Mermaid stateDiagram-v2, read from the machine object (its root
// StateNode), so the diagram cannot drift from the code the way a hand-drawn one would.
//
// Mermaid's state diagrams fail to render, or silently drop the edge, when a transition starts
// or ends on a composite state: inside parallel regions it throws (mermaid-js/mermaid#4052), a
// nested composite's self-loop throws (#4866, #5255), and parent-to-child edges are not drawn
// (#5560). So no edge here touches a compound or parallel state:
// - a transition into one is drawn into the leaf it enters (following `initial` down), which is
//   where XState puts the machine;
// - a transition of one (it applies whichever of its states is active, unless a deeper state
//   handles the event) is drawn from an "(any)" node inside it.
// Each edge is written in the innermost block holding both ends, after every state is declared,
// so Mermaid never meets a state first in a block it does not belong to (#5290).
//
// Targetless transitions (actions only, or an empty one that blocks an ancestor's) change no
// state and are not drawn; a transition that targets its own state is, as a self-loop, because
// re-entering restarts the state's timers and invocations.
import type { AnyStateMachine, AnyStateNode, AnyTransitionDefinition } from 'xstate';

type Block = AnyStateNode | null; // null: the diagram's top level

const indentUnit = '  ';

export function toMermaid(machine: AnyStateMachine): string {
  const root = machine.root;
  const ids = mermaidIds(root);
  const id = (node: AnyStateNode): string => ids.get(node) as string;
  const markerId = (node: AnyStateNode) => `${id(node)}__any`;

  const edges = new Map<Block, string[]>();
  const markers = new Map<Block, AnyStateNode[]>();
  const marked = new Set<AnyStateNode>();

  for (const node of descendants(root)) {
    for (const { transition, label } of labelled(node)) {
      if (!transition.target?.length) continue;
      const fromHome = isLeaf(node) ? enclosingBlock(node) : markerHome(node);
      const from = isLeaf(node) ? id(node) : markerId(node);
      if (!isLeaf(node) && !marked.has(node)) {
        marked.add(node);
        push(markers, fromHome, node);
      }
      for (const target of transition.target) {
        for (const leaf of entryLeaves(target)) {
          const block = outsideParallel(commonBlock(fromHome, enclosingBlock(leaf)));
          push(edges, block, `${from} --> ${id(leaf)} : ${label}`);
        }
      }
    }
  }
  const taken = new Set(ids.values());
  for (const node of marked) {
    if (taken.has(markerId(node))) throw new Error(`toMermaid: the (any) node of ${node.id} would clash with a state drawn as ${markerId(node)}`);
  }

  const lines = ['stateDiagram-v2', `${indentUnit}[*] --> ${id(root)}`];
  const markerLine = (node: AnyStateNode, pad: string) =>
    `${pad}state "${node.type === 'parallel' ? `(any ${safe(node.key)})` : '(any)'}" as ${markerId(node)}`;

  const render = (node: AnyStateNode, depth: number): void => {
    const pad = indentUnit.repeat(depth);
    const name = safe(node.key);
    if (isLeaf(node)) {
      const shown = node.type === 'history' ? (node.history === 'deep' ? 'H*' : 'H') : name;
      lines.push(`${pad}state "${shown}" as ${id(node)}`);
      return;
    }
    const inner = pad + indentUnit;
    lines.push(`${pad}state "${name}" as ${id(node)} {`);
    const children = Object.values(node.states);
    if (node.type === 'parallel') {
      children.forEach((child, i) => {
        if (i > 0) lines.push(`${inner}--`);
        render(child, depth + 1);
      });
    } else {
      const initial = node.initial.target[0];
      if (initial) lines.push(`${inner}[*] --> ${id(initial)}`);
      for (const marker of markers.get(node) ?? []) lines.push(markerLine(marker, inner));
      for (const child of children) render(child, depth + 1);
      for (const edge of edges.get(node) ?? []) lines.push(inner + edge);
      for (const child of children) if (child.type === 'final') lines.push(`${inner}${id(child)} --> [*]`);
    }
    lines.push(`${pad}}`);
  };
  render(root, 1);
  for (const marker of markers.get(null) ?? []) lines.push(markerLine(marker, indentUnit));
  for (const edge of edges.get(null) ?? []) lines.push(indentUnit + edge);
  return `${lines.join('\n')}\n`;
}

/** Every state node under (and including) `node`, in definition order. */
function descendants(node: AnyStateNode): AnyStateNode[] {
  return [node, ...Object.values(node.states).flatMap((child) => descendants(child))];
}

/** Mermaid ids: the machine id and the state's path, joined by `_` (Mermaid ids take no `.` or `-`). */
function mermaidIds(root: AnyStateNode): Map<AnyStateNode, string> {
  const ids = new Map<AnyStateNode, string>();
  const seen = new Map<string, AnyStateNode>();
  for (const node of descendants(root)) {
    const id = [root.id, ...node.path].map((part) => part.replace(/[^A-Za-z0-9_]/g, '_')).join('_');
    const clash = seen.get(id);
    // Rather a loud failure than two states drawn as one.
    if (clash) throw new Error(`toMermaid: states ${clash.id} and ${node.id} would both be drawn as ${id}`);
    seen.set(id, node);
    ids.set(node, id);
  }
  return ids;
}

function isLeaf(node: AnyStateNode): boolean {
  return node.type !== 'compound' && node.type !== 'parallel';
}

/** The leaves the machine is in after entering `node`. */
function entryLeaves(node: AnyStateNode): AnyStateNode[] {
  if (isLeaf(node)) return [node];
  if (node.type === 'parallel') return Object.values(node.states).flatMap(entryLeaves);
  return node.initial.target.flatMap(entryLeaves);
}

/** The block a state is declared in: its parent's, or the top level for the root. */
function enclosingBlock(node: AnyStateNode): Block {
  return node.parent ?? null;
}

// An "(any)" node goes inside its compound state; inside a parallel one it would land in the
// first region, so it goes in the nearest block around that instead.
function markerHome(node: AnyStateNode): Block {
  return node.type === 'parallel' ? outsideParallel(node.parent ?? null) : node;
}

/** Statements written in a parallel state's block fall into one of its regions: use the block around it. */
function outsideParallel(block: Block): Block {
  let current = block;
  while (current && current.type === 'parallel') current = current.parent ?? null;
  return current;
}

function commonBlock(a: Block, b: Block): Block {
  const chain = (block: Block): Block[] => (block ? [...chain(block.parent ?? null), block] : [null]);
  const [left, right] = [chain(a), chain(b)];
  let common: Block = null;
  for (let i = 0; i < Math.min(left.length, right.length) && left[i] === right[i]; i++) common = left[i] ?? null;
  return common;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** A state's transitions with their edge labels, eventless ones first, then in definition order. */
function labelled(node: AnyStateNode): { transition: AnyTransitionDefinition; label: string }[] {
  const groups: [string, AnyTransitionDefinition[]][] = [];
  if (node.always) groups.push(['always', node.always]);
  for (const [descriptor, transitions] of node.transitions) groups.push([trigger(node, descriptor, transitions[0]), transitions]);
  return groups.flatMap(([event, transitions]) =>
    transitions.map((transition, i) => {
      // An unguarded transition after guarded ones for the same trigger is only their fallback.
      const condition = transition.guard ? guardText(transition.guard, node.machine.id) : i > 0 ? 'otherwise' : '';
      return { transition, label: safe(condition ? `${event} [${condition}]` : event) };
    }),
  );
}

/** What sets a transition off, as a reader would name it. */
function trigger(node: AnyStateNode, descriptor: string, first: AnyTransitionDefinition | undefined): string {
  if (descriptor.startsWith('xstate.after.')) {
    const delay = (first as { delay?: unknown } | undefined)?.delay;
    return `after ${typeof delay === 'number' ? `${delay}ms` : typeof delay === 'string' ? delay : 'delay'}`;
  }
  const invoked = [
    ['xstate.done.actor.', 'done'],
    ['xstate.error.actor.', 'error'],
    ['xstate.snapshot.', 'snapshot'],
  ] as const;
  for (const [prefix, outcome] of invoked) {
    if (!descriptor.startsWith(prefix)) continue;
    const invoke = node.invoke.find((definition) => definition.id === descriptor.slice(prefix.length));
    // An inline actor's src is a generated name that would only be noise.
    const src = typeof invoke?.src === 'string' && !invoke.src.startsWith('xstate.invoke.') ? invoke.src : 'inline actor';
    return `${outcome}: ${src}`;
  }
  if (descriptor.startsWith('xstate.done.state.')) return 'done';
  return descriptor;
}

// XState v5 keeps and()/or()/not()/stateIn() as functions carrying their operands: `.guards`
// (and, or, not) or `.stateValue` (stateIn), beside the `.check` that evaluates them.
interface GuardHelper {
  (...args: never[]): unknown;
  check?: unknown;
  guards?: unknown[];
  stateValue?: unknown;
}

const operators: Record<string, string> = { and: ' ∧ ', or: ' ∨ ' };

/** A guard as a short formula: `a ∧ ¬b`, `listed(running)`, `in lifecycle.creating`; `guard` when it is an opaque function. */
function guardText(guard: unknown, machineId: string, nested = false): string {
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') {
    const helper = guard as GuardHelper;
    if (typeof helper.check === 'function') {
      if (helper.stateValue !== undefined) return `in ${stateValueText(helper.stateValue, machineId)}`;
      const operands = helper.guards ?? [];
      if (helper.name === 'not' && operands.length === 1) return `¬${guardText(operands[0], machineId, true)}`;
      const operator = operators[helper.name];
      if (operator && operands.length > 0) {
        const text = operands.map((operand) => guardText(operand, machineId, true)).join(operator);
        return nested && operands.length > 1 ? `(${text})` : text;
      }
    }
    // A named function says what it checks; an inline arrow is named after the `guard` key at best.
    return helper.name && helper.name !== 'guard' ? helper.name : 'guard';
  }
  if (guard && typeof guard === 'object' && 'type' in guard && typeof guard.type === 'string') {
    const params = 'params' in guard ? guard.params : undefined;
    const values = params && typeof params === 'object' ? Object.values(params) : [];
    const shown = values.filter((value) => ['string', 'number', 'boolean'].includes(typeof value));
    return shown.length > 0 && shown.length === values.length ? `${guard.type}(${shown.join(', ')})` : guard.type;
  }
  return 'guard';
}

/** A stateIn() target as a path under the machine: `lifecycle.creating`. */
function stateValueText(value: unknown, machineId: string): string {
  if (typeof value === 'string') {
    const own = `#${machineId}.`;
    return value.startsWith(own) ? value.slice(own.length) : value.replace(/^#/, '');
  }
  if (!value || typeof value !== 'object') return '';
  return Object.entries(value)
    .map(([key, child]) => {
      const rest = stateValueText(child, machineId);
      return rest ? `${key}.${rest}` : key;
    })
    .join(', ');
}

// Mermaid ends an edge label at ':' or ';', reads '%%' as a comment, '#…;' as an entity, braces
// as blocks, '"' as the end of a state's name and '<…>' as HTML: swap them for look-alikes.
const lookalikes: Record<string, string> = {
  ':': '∶',
  ';': '；',
  '%': '％',
  '#': '＃',
  '{': '(',
  '}': ')',
  '"': "'",
  '<': '‹',
  '>': '›',
  '\n': ' ',
};

function safe(text: string): string {
  return text.replace(/[:;%#{}"<>\n]/g, (c) => lookalikes[c] ?? '');
}
