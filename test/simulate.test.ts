// The replay simulator: a hand-computable trace, repeatability by seed, and the command that
// writes the summary and chart.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { estimatorPlan } from '../src/scheduler/estimator.js';
import { simulate, type SimulationSummary } from '../src/sim/simulate.js';
import { parseTrace } from '../src/sim/trace.js';
import { runDrover } from './support/run-drover.js';

// One type at $1/h, 10 s boots, probes every second, idle instances kept 60 s.
const config = parseConfig(
  `cloud:
  driver: stub
  stub:
    bootDelay: { min: 10s, max: 10s }
pool:
  probeInterval: 1s
  syncInterval: 10s
  timeoutIdle: 60s
scheduler:
  pollInterval: 1s
instanceTypes:
  one: { providerType: sim.one, vcpus: 2, ramMiB: 4096, price: 1 }
`,
  'test config',
);

/** The fields that depend on the machine that ran the replay, not on the replay. */
function replayed(summary: SimulationSummary): Omit<SimulationSummary, 'wallSeconds' | 'speedup' | 'peakHeapBytes'> {
  const { wallSeconds: _wall, speedup: _speedup, peakHeapBytes: _heap, ...rest } = summary;
  return rest;
}

describe('drover simulate', () => {
  it('one 100 s container on a $1/h type with a 10 s boot costs between the lower bound and it plus boot and idle', async () => {
    const { summary, chart } = await simulate({ config, trace: parseTrace('submit_s,duration_s,vcpus,ram_mib\n5,100,1,512\n', 'one.csv') });
    const lowerBound = 100 / 3_600;
    // Boot 10 s, the container 100 s, then timeoutIdle 60 s; probes a second apart may add a second each way.
    const upperBound = (100 + 10 + 60 + 2) / 3_600;
    expect(summary.containers).toEqual({ submitted: 1, completed: 1, failed: 0, lost: 0, ranTwice: 0 });
    expect(summary.cost.lowerBoundDollars).toBeCloseTo(lowerBound, 4);
    expect(summary.cost.dollars).toBeGreaterThan(lowerBound);
    expect(summary.cost.dollars).toBeLessThanOrEqual(upperBound);
    // It waited for the boot, and the first probe after it.
    expect(summary.waitSeconds.max).toBeGreaterThanOrEqual(10);
    expect(summary.waitSeconds.max).toBeLessThanOrEqual(12);
    expect(summary.instances).toEqual({ created: 1, maxAtOnce: 1, bootFailures: 0 });
    expect(summary.cloudCalls).toMatchObject({ create: 1, destroy: 1 });
    expect(summary.ended).toBe('drained');
    // Sampled each minute until the pool emptied: the container's run and the idle minute after it.
    expect(chart.some((point) => (point.instances.running ?? 0) === 1)).toBe(true);
    expect(chart.at(-1)).toMatchObject({ queued: 0 });
  });

  it('with packing, the lower bound charges each container its share of the type, so it stays below the cost', async () => {
    const packed = { ...config, pool: { ...config.pool, maxRunningContainersPerInstance: 2 } };
    const trace = parseTrace('submit_s,duration_s,vcpus,ram_mib\n5,100,1,512\n5,100,1,512\n', 'pair.csv');
    const { summary } = await simulate({ config: packed, trace });
    // Two 1-vCPU containers on one 2-vCPU $1/h instance: half of 100 s each.
    expect(summary.cost.lowerBoundDollars).toBeCloseTo(100 / 3_600, 4);
    expect(summary.instances.created).toBe(1);
    expect(summary.cost.dollars).toBeGreaterThan(summary.cost.lowerBoundDollars);
  });

  it('--policy estimator: the baseline runs the same trace through the same pool', async () => {
    const trace = parseTrace('submit_s,duration_s,vcpus,ram_mib\n5,100,1,512\n6,100,1,512\n', 'two.csv');
    const { summary } = await simulate({ config, trace, planner: estimatorPlan });
    expect(summary.containers).toEqual({ submitted: 2, completed: 2, failed: 0, lost: 0, ranTwice: 0 });
    expect(summary.instances.created).toBe(2);
  });

  it('two runs with the same seed give the same summary; another seed, other boot delays', async () => {
    const faulty = parseConfig(
      `cloud:
  driver: stub
  stub:
    bootDelay: { min: 20s, max: 3m }
    createErrorRate: 0.2
    listFailureRate: 0.1
pool:
  timeoutIdle: 30s
  maxConcurrentInstanceCreateOps: 10
instanceTypes:
  small: { providerType: sim.small, vcpus: 2, ramMiB: 4096, price: 0.1 }
  large: { providerType: sim.large, vcpus: 16, ramMiB: 65536, price: 0.8 }
`,
      'faulty',
    );
    const rows = ['submit_s,duration_s,vcpus,ram_mib,priority'];
    for (let i = 0; i < 60; i++) rows.push(`${(i * 37) % 900},${30 + ((i * 53) % 400)},${1 + (i % 3)},${512 * (1 + (i % 4))},${i % 3}`);
    const trace = parseTrace(rows.join('\n'), 'mixed.csv');
    const first = await simulate({ config: faulty, trace, seed: 7 });
    const second = await simulate({ config: faulty, trace, seed: 7 });
    const other = await simulate({ config: faulty, trace, seed: 8 });
    expect(replayed(second.summary)).toEqual(replayed(first.summary));
    expect(second.chart).toEqual(first.chart);
    expect(first.summary.containers).toMatchObject({ submitted: 60, completed: 60, lost: 0, ranTwice: 0 });
    expect(first.summary.cloudErrors.CloudError).toBeGreaterThan(0);
    expect(replayed(other.summary)).not.toEqual(replayed(first.summary));
  });

  it('the command writes summary.json and chart.svg and prints the headline; a bad trace is refused naming its line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-simulate-'));
    const configPath = join(dir, 'sim.yml');
    writeFileSync(configPath, 'cloud: { driver: stub, stub: { bootDelay: { min: 10s, max: 10s } } }\ninstanceTypes:\n  one: { providerType: sim.one, vcpus: 2, ramMiB: 4096, price: 1 }\n');
    const tracePath = join(dir, 'work.csv');
    writeFileSync(tracePath, 'submit_s,duration_s,vcpus,ram_mib,team\n0,60,1,512,a\n30,60,2,1024,b\n');
    const out = join(dir, 'out');
    const result = await runDrover(['simulate', '--config', configPath, '--trace', tracePath, '--out', out, '--seed', '3', '--idle-policy', 'fixed'], process.env);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^containers: 2 submitted, 2 completed, 0 failed, 0 lost, 0 ran twice$/m);
    expect(result.stdout).toMatch(/^cost: \$\d+\.\d\d \(lower bound \$0\.03, ratio \d\.\d{3}\)$/m);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as SimulationSummary;
    expect(Object.keys(summary)).toEqual(expect.arrayContaining(['containers', 'cost', 'waitSeconds', 'instances', 'cloudCalls', 'cloudErrors', 'simulatedSeconds', 'wallSeconds', 'speedup', 'peakHeapBytes']));
    // --idle-policy overrides the config's pool.idlePolicy (adaptive there, the default).
    expect(summary.idlePolicy).toBe('fixed');
    expect(readFileSync(join(out, 'chart.svg'), 'utf8')).toMatch(/^<\?xml [^>]*>\s*<svg[\s\S]*<\/svg>\s*$/);

    writeFileSync(tracePath, 'submit_s,duration_s,vcpus,ram_mib\n0,60,1,512\n10,soon,1,512\n');
    const bad = await runDrover(['simulate', '--config', configPath, '--trace', tracePath, '--out', out], process.env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^drover: .*work\.csv:3: duration_s: /);
  });
});
