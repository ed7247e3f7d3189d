// The chaos soak, short: the bursty trace's first 4.5 simulated hours with every fault the soak
// injects and a daemon restart every 2 simulated hours, checked against the invariants at every
// event that could break them. `npm run soak` runs the whole 25 hours.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { simulate } from '../src/sim/simulate.js';
import { soakConfig, soakFaultKinds, soakRestartEveryMs } from '../src/sim/soak.js';
import { readTrace } from '../src/sim/trace.js';

const hour = 3_600_000;

describe('chaos soak', () => {
  it('4.5 simulated hours of faults and two restarts: no invariant broken, every fault kind injected', async () => {
    const config = soakConfig(loadConfig('config/simulate.yml'));
    const trace = readTrace('bench/traces/bursty.csv');
    const { summary } = await simulate({ config, trace, seed: 1, untilMs: 4.5 * hour, restartEveryMs: soakRestartEveryMs });
    console.log(
      `soak: ${summary.invariants.checks} checks, faults ${JSON.stringify(summary.faults)}, ${summary.containers.completed} completed, ${summary.restarts} restarts, ${summary.speedup}x`,
    );
    expect(summary.invariants.violations).toEqual([]);
    expect(summary.invariants.checks).toBeGreaterThan(10_000);
    expect(summary.restarts).toBe(2);
    expect(summary.containers).toMatchObject({ lost: 0, ranTwice: 0 });
    expect(summary.containers.completed).toBeGreaterThan(1_000);
    for (const kind of soakFaultKinds) expect(summary.faults[kind], kind).toBeGreaterThan(0);
  }, 120_000);
});
