import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { and, fromPromise, not, setup, stateIn, type AnyStateNode } from 'xstate';
import { capacityScopeMachine } from '../machines/capacity-scope.js';
import { toMermaid } from '../src/diagrams/mermaid.js';
import { machineDocs, machinePages } from '../src/diagrams/write-machine-docs.js';

const root = fileURLToPath(new URL('../', import.meta.url));

function stateIds(node: AnyStateNode): string[] {
  return [node.id, ...Object.values(node.states).flatMap(stateIds)];
}

describe('toMermaid', () => {
  it('draws compound and parallel states, delays, eventless and invoke transitions, and guards', () => {
    const machine = setup({
      actors: { load: fromPromise(async () => 1) },
      guards: { ready: () => true, stale: () => false },
      actions: { note: () => {} },
      delays: { tick: 1_000 },
    }).createMachine({
      id: 'demo',
      type: 'parallel',
      states: {
        work: {
          initial: 'idle',
          states: {
            idle: { on: { GO: 'busy' } },
            busy: {
              initial: 'loading',
              on: { STOP: 'idle', NOTE: { actions: 'note' } },
              states: {
                loading: { invoke: { src: 'load', onDone: 'loaded', onError: '#demo.work.idle' } },
                loaded: {
                  always: [{ guard: and(['ready', not('stale')]), target: '#demo.work.finished' }, { target: 'loading' }],
                },
              },
            },
            finished: { type: 'final' },
          },
        },
        clock: {
          initial: 'waiting',
          states: {
            waiting: { after: { tick: 'ticked', 500: { target: 'waiting', reenter: true } } },
            ticked: { on: { RESET: { guard: stateIn('#demo.work.idle'), target: 'waiting' } } },
          },
        },
      },
    });

    expect(toMermaid(machine)).toBe(
      [
        'stateDiagram-v2',
        '  [*] --> demo',
        '  state "demo" as demo {',
        '    state "work" as demo_work {',
        '      [*] --> demo_work_idle',
        '      state "idle" as demo_work_idle',
        '      state "busy" as demo_work_busy {',
        '        [*] --> demo_work_busy_loading',
        '        state "(any)" as demo_work_busy__any',
        '        state "loading" as demo_work_busy_loading',
        '        state "loaded" as demo_work_busy_loaded',
        '        demo_work_busy_loading --> demo_work_busy_loaded : done∶ load',
        '        demo_work_busy_loaded --> demo_work_busy_loading : always [otherwise]',
        '      }',
        '      state "finished" as demo_work_finished',
        '      demo_work_idle --> demo_work_busy_loading : GO',
        '      demo_work_busy__any --> demo_work_idle : STOP',
        '      demo_work_busy_loading --> demo_work_idle : error∶ load',
        '      demo_work_busy_loaded --> demo_work_finished : always [ready ∧ ¬stale]',
        '      demo_work_finished --> [*]',
        '    }',
        '    --',
        '    state "clock" as demo_clock {',
        '      [*] --> demo_clock_waiting',
        '      state "waiting" as demo_clock_waiting',
        '      state "ticked" as demo_clock_ticked',
        '      demo_clock_waiting --> demo_clock_waiting : after 500ms',
        '      demo_clock_waiting --> demo_clock_ticked : after tick',
        '      demo_clock_ticked --> demo_clock_waiting : RESET [in work.idle]',
        '    }',
        '  }',
        '',
      ].join('\n'),
    );
  });
});

describe('docs/machines', () => {
  it.each(machineDocs())('$file matches the machine', ({ file, text }) => {
    let committed: string | null;
    try {
      committed = readFileSync(`${root}${file}`, 'utf8');
    } catch {
      committed = null;
    }
    expect(committed, `${file} is missing or out of date: run \`npm run machines\` and commit the result`).toBe(text);
  });

  it("README's capacity scope diagram matches the machine", () => {
    const readme = readFileSync(`${root}README.md`, 'utf8');
    expect(readme, 'README.md: copy the diagram from docs/machines/capacity-scope.md into "Machine diagrams"').toContain(
      `\`\`\`mermaid\n${toMermaid(capacityScopeMachine)}\`\`\`\n`,
    );
  });

  it.each(machinePages.map((page) => ({ ...page, diagram: toMermaid(page.machine) })))(
    'the $name diagram declares every state of the machine',
    ({ machine, diagram }) => {
      const declared = new Set([...diagram.matchAll(/^\s*state "[^"]*" as (\S+)(?: \{)?$/gm)].map((match) => match[1]));
      const missing = stateIds(machine.root)
        .map((id) => id.replaceAll('.', '_'))
        .filter((id) => !declared.has(id));
      expect(missing).toEqual([]);
    },
  );

  // Only the statements toMermaid means to write, with labels free of what ends or breaks them.
  it.each(machinePages.map((page) => ({ name: page.name, diagram: toMermaid(page.machine) })))(
    'the $name diagram keeps to plain Mermaid statements',
    ({ diagram }) => {
      const id = String.raw`[A-Za-z0-9_]+`;
      const statement = new RegExp(
        [
          String.raw`stateDiagram-v2`,
          String.raw`\s+--`,
          String.raw`\s+\}`,
          String.raw`\s+state "[^"{}]*" as ${id}(?: \{)?`,
          String.raw`\s+\[\*\] --> ${id}`,
          String.raw`\s+${id} --> \[\*\]`,
          String.raw`\s+${id} --> ${id} : [^:;{}#%<>"\n]+`,
        ]
          .map((form) => `(?:${form})`)
          .join('|'),
      );
      const odd = diagram
        .trimEnd()
        .split('\n')
        .filter((line) => !new RegExp(`^(?:${statement.source})$`).test(line));
      expect(odd).toEqual([]);
    },
  );
});
