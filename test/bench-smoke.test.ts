// `npm run bench` at a tiny size (`--small`: 200 queued, 20 instances, 15 simulated minutes): each
// of its four benchmarks runs to the end and reports a figure. No timing is asserted: at this size
// the figures mean nothing; the point is that the code the full run needs still works.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';

/** The bench's temp directories (the pass's queue file, the simulator's home). */
const benchTemps = () => new Set(readdirSync(tmpdir()).filter((name) => name.startsWith('drover-bench-')));

describe('npm run bench --small', () => {
  it('runs all four benchmarks, prints the table and leaves no temp files', () => {
    const before = benchTemps();
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/bench.ts', '--small'], { encoding: 'utf8', timeout: 150_000 });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);

    const lines = run.stdout.split('\n');
    expect(lines[0]).toBe('| benchmark | figure | target | met? |');
    const rows = lines.slice(2, 6);
    expect(rows).toHaveLength(4);
    for (const row of rows) expect(row).toMatch(/^\| .+ \| .*\d.* \| [≤≥] .+ \| (yes|no|median only) \|$/);
    expect(rows[0]).toContain('200 queued, 20 idle instances');
    expect(rows[1]).toContain('20 idle workers');
    expect(rows[2]).toContain('20 known instances');
    expect(rows[3]).toContain('bench/traces/bursty.csv');

    const details = JSON.parse(lines.filter(Boolean).at(-1)!) as Record<string, Record<string, unknown>>;
    expect(Object.keys(details).sort()).toEqual(['heap', 'pass', 'simulate', 'sync']);
    expect(details.heap).toMatchObject({ workers: 20, gc: true });
    expect(details.sync).toMatchObject({ instances: 20, syncs: 5, timersFired: [1, 1, 1, 1, 1] });
    expect(details.simulate).toMatchObject({ simulatedSeconds: 900, untilHours: 0.25 });
    expect(details.pass).toMatchObject({ queued: 200, instances: 20, fillingPasses: { passes: 2 } });

    const left = [...benchTemps()].filter((name) => !before.has(name));
    expect(left).toEqual([]);
  }, 180_000);
});
