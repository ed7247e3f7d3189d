// `npm run soak [-- --trace FILE] [--until DURATION] [--seed N]`: the chaos soak on the bursty trace
// (all 25 simulated hours by default): every fault, a daemon restart every 2 simulated hours, and
// the invariants checked throughout. Prints each fault's count and the checks; exits 1 on a violation.
import { parseArgs } from 'node:util';
import { parseDuration } from '../src/config/duration.js';
import { loadConfig } from '../src/config/load.js';
import { headline } from '../src/cli/simulate-command.js';
import { simulate } from '../src/sim/simulate.js';
import { soakConfig, soakRestartEveryMs } from '../src/sim/soak.js';
import { readTrace } from '../src/sim/trace.js';

const { values } = parseArgs({
  options: {
    trace: { type: 'string', default: 'bench/traces/bursty.csv' },
    config: { type: 'string', default: 'config/simulate.yml' },
    until: { type: 'string' },
    seed: { type: 'string', default: '1' },
  },
});
const config = soakConfig(loadConfig(values.config));
const trace = readTrace(values.trace);
const { summary } = await simulate({
  config,
  trace,
  seed: Number(values.seed),
  untilMs: values.until === undefined ? null : parseDuration(values.until),
  restartEveryMs: soakRestartEveryMs,
  ...(process.stderr.isTTY && {
    onProgress: (p) => process.stderr.write(`\r${(p.simulatedMs / 3_600_000).toFixed(2)} h, ${p.ended}/${p.total} ended, ${p.instances} instances  `),
  }),
});
if (process.stderr.isTTY) process.stderr.write('\n');
console.log(headline(summary));
console.log(`restarts: ${summary.restarts}`);
console.log(`faults injected: ${Object.entries(summary.faults).map(([kind, n]) => `${kind} ${n}`).join(', ')}`);
console.log(`cloud errors seen by the pool: ${Object.entries(summary.cloudErrors).map(([kind, n]) => `${kind} ${n}`).join(', ') || 'none'}`);
console.log(`invariant checks: ${summary.invariants.checks}, violations: ${summary.invariants.violations.length}`);
for (const violation of summary.invariants.violations) console.log(`  ${violation}`);
process.exitCode = summary.invariants.violations.length === 0 ? 0 : 1;
