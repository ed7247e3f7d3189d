// How long the scheduler's queue.pending() takes with N containers queued: once after open, then
// warm, after the kind of change one scheduling pass makes (lock 1,000, submit 1,000, start 1,000).
// Usage: npx tsx bench/queue-pending.ts [N]   (default 100000)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteQueue } from '../src/queue/sqlite-queue.js';
import type { ContainerSpec } from '../src/queue/types.js';

const count = Number(process.argv[2] ?? 100_000);
const batch = 1_000;
// Warm timings repeat, and the median is reported: one pass can land on a garbage collection.
const rounds = 7;

function spec(i: number): ContainerSpec {
  return {
    image: 'registry.example/tool:1.2',
    command: ['sh', '-c', `run-step --shard ${i}`],
    env: { SHARD: String(i), MODE: 'bench' },
    constraints: { vcpus: 1 + (i % 4), ramMiB: 1024, scratchGiB: 10, gpus: 0, preemptible: i % 2 === 0 },
    // A few priority levels, so later submits land all through the order, not only at its end.
    priority: i % 5,
  };
}

function ms(run: () => unknown): number {
  const started = performance.now();
  run();
  return performance.now() - started;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

const round2 = (value: number) => Number(value.toFixed(2));

const dir = mkdtempSync(join(tmpdir(), 'drover-bench-queue-'));
const path = join(dir, 'queue.db');
try {
  const writer = new SqliteQueue({ path, maxAttempts: 3 });
  const submitAll = ms(() => writer.submitMany(Array.from({ length: count }, (_, i) => spec(i))));
  writer.close();

  let queue: SqliteQueue | undefined;
  const open = ms(() => (queue = new SqliteQueue({ path, maxAttempts: 3 })));
  if (queue === undefined) throw new Error('queue did not open');
  const q = queue;
  const cold = ms(() => q.pending());
  const unchanged = ms(() => q.pending());

  const warm = { lockMany: [] as number[], afterLock: [] as number[], submit: [] as number[], afterSubmit: [] as number[] };
  const started = { markRunning: [] as number[], afterMarkRunning: [] as number[] };
  let submitted = count;
  for (let round = 0; round < rounds; round++) {
    const requests = q
      .pending()
      .filter((c) => c.state === 'queued')
      .slice(0, batch)
      .map((c) => ({ uuid: c.uuid, instanceId: `i-${round}`, instanceType: 'small' }));
    warm.lockMany.push(ms(() => q.lockMany(requests)));
    warm.afterLock.push(ms(() => q.pending()));
    warm.submit.push(ms(() => q.submitMany(Array.from({ length: batch }, () => spec(submitted++)))));
    warm.afterSubmit.push(ms(() => q.pending()));
    started.markRunning.push(ms(() => requests.forEach(({ uuid }) => q.markRunning(uuid, `i-${round}`, 'small'))));
    started.afterMarkRunning.push(ms(() => q.pending()));
  }

  // What pending() did before it kept the live set in memory: read and parse every live row.
  const fromDisk = ms(() => q.list({ states: ['queued', 'locked', 'running'] }));
  const live = q.pending().length;
  q.close();

  console.log(
    JSON.stringify({
      queued: count,
      liveAtEnd: live,
      submitManyAllMs: round2(submitAll),
      openMs: round2(open),
      pendingColdMs: round2(cold),
      pendingUnchangedMs: round2(unchanged),
      [`lockMany${batch}Ms`]: round2(median(warm.lockMany)),
      [`pendingAfterLock${batch}Ms`]: round2(median(warm.afterLock)),
      [`submitMany${batch}Ms`]: round2(median(warm.submit)),
      [`pendingAfterSubmit${batch}Ms`]: round2(median(warm.afterSubmit)),
      [`markRunning${batch}Ms`]: round2(median(started.markRunning)),
      [`pendingAfterMarkRunning${batch}Ms`]: round2(median(started.afterMarkRunning)),
      readAndParseLiveRowsMs: round2(fromDisk),
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
