// How the CLI prints a queued container's wait reason: in the table's REASON column (where a
// finished container shows why it ended), and as its own line in `show`.
import { describe, expect, it } from 'vitest';
import { containerDetails, containerTable, type ContainerEntry } from '../src/cli/format.js';
import { container } from './support/plan-fixtures.js';

const now = 1_000_000;

function entry(overrides: Partial<ContainerEntry>): ContainerEntry {
  return { ...container({ submittedAt: now - 5_000, updatedAt: now - 5_000 }), waitReason: null, ...overrides };
}

describe('wait reasons in the CLI', () => {
  it("REASON shows why a queued container waits, over why it was last requeued; a failed one keeps its reason", () => {
    const table = containerTable(
      [
        entry({ uuid: 'c-1', reason: 'instance i-9 disappeared', waitReason: 'launch config small-1 is broken; last error: boot probe did not pass' }),
        entry({ uuid: 'c-2', state: 'failed', reason: 'no instance type fits', waitReason: null }),
        entry({ uuid: 'c-3' }),
      ],
      now,
    );
    const reasons = table.trimEnd().split('\n').slice(1).map((line) => line.split(/ {2,}/).at(-1));
    expect(reasons).toEqual(['launch config small-1 is broken; last error: boot probe did not pass', 'no instance type fits', '-']);
  });

  it('show has a "waiting" line for a queued container only', () => {
    expect(containerDetails(entry({ waitReason: 'at maxInstances (3)' }), now)).toMatch(/^waiting\s+at maxInstances \(3\)$/m);
    expect(containerDetails(entry({}), now)).toMatch(/^waiting\s+not yet seen by a scheduling pass$/m);
    expect(containerDetails(entry({ state: 'complete', exitCode: 0 }), now)).not.toMatch(/^waiting/m);
  });
});
