// How long the pool takes to turn one listing of N instances into N worker actors.
// Usage: npm run bench:spawn -- [N]   (default 10000)
import { pino } from 'pino';
import { systemClock } from '../src/clock.js';
import { tagKeys, type InstanceType } from '../src/cloud/driver.js';
import { StubCloud } from '../src/cloud/stub/stub-cloud.js';
import { Pool } from '../src/pool/pool.js';

const count = Number(process.argv[2] ?? 10_000);
const instanceType: InstanceType = { name: 'small', providerType: 'stub.small', vcpus: 2, ramMiB: 4096, scratchGiB: 0, gpus: 0, price: 0.05, preemptible: false };
const hour = 3_600_000;

const stub = new StubCloud({ clock: systemClock, bootProbeCommand: 'true', runnerCommand: 'drover-runner' });
for (let i = 0; i < count; i++) {
  stub.addInstance({ instanceType, tags: { [tagKeys.pool]: 'bench', [tagKeys.instanceType]: 'small' } });
}
const pool = new Pool({
  poolName: 'bench',
  driver: stub,
  executorFor: (target) => stub.executorFor(target),
  // Long intervals: this measures the first sync alone, not probes or timeouts.
  settings: {
    syncInterval: hour, probeInterval: hour, maxProbesPerSecond: 10, timeoutIdle: hour, timeoutBooting: hour,
    timeoutProbe: hour, timeoutShutdown: hour, maxInstances: count, maxConcurrentInstanceCreateOps: 1, maxRunningContainersPerInstance: 1, probeRateCeiling: 500,
    quotaErrorTTL: hour, bootProbeCommand: 'true', runnerCommand: 'drover-runner',
  },
  instanceTypes: { small: instanceType },
  logger: pino({ level: 'silent' }),
});

const heapBefore = process.memoryUsage().heapUsed;
const started = performance.now();
pool.start();
while (pool.instances().length < count) await new Promise((resolve) => setImmediate(resolve));
const elapsedMs = performance.now() - started;
const heapPerWorker = (process.memoryUsage().heapUsed - heapBefore) / count;
pool.stop();
console.log(
  JSON.stringify({ workers: count, seconds: Number((elapsedMs / 1000).toFixed(2)), heapKiBPerWorker: Number((heapPerWorker / 1024).toFixed(1)) }),
);
