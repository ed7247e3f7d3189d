// `npm run policies [-- --until 6h] [--traces steady,bursty,longtail] [--only adaptive]`: each bundled trace replayed
// under each policy — Taskcluster's estimator with the config's timeoutIdle, and Drover with fixed
// idle timeouts of 1, 5 and 15 min — printed as one markdown
// table of cost against the lower bound and waits. Every row is one `simulate()` with seed 1.
import { parseArgs } from 'node:util';
import { formatDuration, parseDuration } from '../src/config/duration.js';
import { loadConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { estimatorPlan } from '../src/scheduler/estimator.js';
import { type IdlePolicyName } from '../src/pool/idle-policy.js';
import { plan } from '../src/scheduler/plan.js';
import { simulate, type Planner } from '../src/sim/simulate.js';
import { readTrace } from '../src/sim/trace.js';

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'config/simulate.yml' },
    traces: { type: 'string', default: 'steady,bursty,longtail' },
    until: { type: 'string' },
    // Only the policies whose name contains this (e.g. adaptive).
    only: { type: 'string', default: '' },
  },
});
const base = loadConfig(values.config);
const untilMs = values.until === undefined ? null : parseDuration(values.until);

interface Policy {
  name: string;
  planner: Planner;
  idlePolicy: IdlePolicyName;
  timeoutIdle: number;
}
const policies: Policy[] = [
  { name: `estimator (timeoutIdle ${formatDuration(base.pool.timeoutIdle)})`, planner: estimatorPlan, idlePolicy: 'fixed', timeoutIdle: base.pool.timeoutIdle },
  ...[60_000, 300_000, 900_000].map((timeoutIdle): Policy => ({ name: `drover, fixed timeoutIdle ${formatDuration(timeoutIdle)}`, planner: plan, idlePolicy: 'fixed', timeoutIdle })),
  {
    name: `drover, adaptive`,
    planner: plan,
    idlePolicy: 'adaptive',
    timeoutIdle: base.pool.timeoutIdle,
  },
];

const withIdle = (policy: Policy): Config => ({ ...base, pool: { ...base.pool, idlePolicy: policy.idlePolicy, timeoutIdle: policy.timeoutIdle } });
console.log(`| trace | policy | cost / lower bound | wait p50 s | wait p95 s | instances created | replay speed |`);
console.log(`|---|---|---|---|---|---|---|`);
for (const name of values.traces.split(',')) {
  const trace = readTrace(`bench/traces/${name}.csv`);
  for (const policy of policies.filter((candidate) => candidate.name.includes(values.only))) {
    const { summary } = await simulate({ config: withIdle(policy), trace, seed: 1, untilMs, planner: policy.planner });
    const { cost, waitSeconds, instances } = summary;
    console.log(
      `| ${name}${untilMs === null ? '' : ` (first ${formatDuration(untilMs)})`} | ${policy.name} | ${cost.ratio === null ? '-' : cost.ratio.toFixed(3)} | ${waitSeconds.p50.toFixed(1)} | ${waitSeconds.p95.toFixed(1)} | ${instances.created} | ${Math.round(summary.speedup)}× |`,
    );
  }
}
