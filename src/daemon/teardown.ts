// `drover teardown`: destroys every instance carrying this pool's tag, with the daemon stopped.
// Sandboxes, VMs and the containers on them outlive the daemon by design (a restarted daemon
// adopts them); this is how an operator ends a pool for good.
//
// It takes the daemon's own state locks first and refuses while a daemon holds them: a running
// daemon would create instances as fast as this destroys them (its queue still has work) and
// would destroy the same ones again itself, so on a real cloud "everything is gone" could never be
// checked. Holding the locks also keeps a daemon from starting in the middle of a teardown.
//
// The queue outlives the pool too: once the instances are confirmed gone, the containers it has
// locked or running on them are failed (still under the queue's lock), or the next `drover run`
// would requeue them and run them again. Queued containers stay queued.
import { existsSync } from 'node:fs';
import { Registry } from 'prom-client';
import { sleep, systemClock, type Clock } from '../clock.js';
import { tagKeys, type CloudInstance } from '../cloud/driver.js';
import { cloudFromConfig, type Cloud } from '../cloud/from-config.js';
import type { Config } from '../config/schema.js';
import { SqliteQueue } from '../queue/sqlite-queue.js';
import { QueueStorageError, QueueUnavailableError } from '../queue/storage.js';
import { takeStateLocks } from './state-lock.js';

export interface TeardownOptions {
  config: Config;
  /** The config file, recorded with the state locks so that a daemon refused meanwhile can name it. */
  configPath?: string;
  /** Asked once, after the instances are printed and before anything is destroyed; true goes ahead. */
  confirm: (question: string) => Promise<boolean>;
  /** Writes one line of the report (the CLI: stdout). */
  print: (line: string) => void;
  /** Rounds of destroy calls before an instance still listed is given up on (default 3). */
  maxAttempts?: number;
  /** Wait between rounds (default `pool.timeoutShutdown`, the pool's own wait between destroys). */
  retryDelayMs?: number;
  clock?: Clock;
  /** A cloud already built, for tests; by default one is built from the config and closed after. */
  cloud?: Cloud;
}

export interface TeardownReport {
  poolName: string;
  /** Every instance carrying the pool's tag when teardown first listed the cloud. */
  listed: CloudInstance[];
  /** Whether the operator (or --yes) agreed; false when nothing was asked because nothing was listed. */
  confirmed: boolean;
  /** Ids a listing after their destroy no longer showed. */
  destroyed: string[];
  /** Still there (or not confirmed gone) after the last round, with the last reason. */
  remaining: Array<{ id: string; reason: string }>;
  /** Containers the queue had locked or running on the destroyed instances, now final (failed, or complete when their exit was recorded). */
  endedContainers: string[];
  /** Containers left queued, to run at the next `drover run`. */
  queuedContainers: number;
  /** Why the queue could not be read or changed (its file unusable); null when it was, or had nothing to do. */
  queueProblem: string | null;
}

/** The pool's instances could not be listed; nothing was destroyed. */
export class TeardownListError extends Error {
  override readonly name = 'TeardownListError';
}

/** Whether everything carrying the pool's tag is gone: the only outcome `drover teardown` exits 0 for. */
export function everythingGone(report: TeardownReport): boolean {
  return report.listed.length === 0 || (report.confirmed && report.remaining.length === 0);
}

export async function teardown(options: TeardownOptions): Promise<TeardownReport> {
  const { config, print } = options;
  const clock = options.clock ?? systemClock;
  const maxAttempts = options.maxAttempts ?? 3;
  const retryDelayMs = options.retryDelayMs ?? config.pool.timeoutShutdown;
  const poolName = config.poolName;
  const filter = { [tagKeys.pool]: poolName };

  // Throws StateLockedError (naming the daemon's pid, host and config) before anything is built.
  const locks = takeStateLocks(config, options.configPath);
  let built: Cloud | undefined;
  try {
    const cloud = options.cloud ?? (built = await cloudFromConfig(config, clock, new Registry()));
    const driver = cloud.driver;
    if (config.cloud.driver === 'stub') {
      print('cloud.driver is stub: its cloud is simulated inside this process, so it holds only its seed instances');
    }

    let listed: CloudInstance[] | undefined;
    let listError = '';
    for (let attempt = 1; listed === undefined && attempt <= maxAttempts; attempt++) {
      if (attempt > 1) await sleep(clock, retryDelayMs);
      try {
        listed = await driver.list(filter);
      } catch (err) {
        listError = errorMessage(err);
      }
    }
    if (listed === undefined) {
      throw new TeardownListError(`could not list the instances of pool ${poolName} (${maxAttempts} tries): ${listError}; nothing was destroyed`);
    }

    const report: TeardownReport = {
      poolName,
      listed,
      confirmed: false,
      destroyed: [],
      remaining: [],
      endedContainers: [],
      queuedContainers: 0,
      queueProblem: null,
    };
    if (listed.length === 0) {
      print(`pool ${poolName} has no instances`);
      return report;
    }
    print(`pool ${poolName}: ${plural(listed.length)}`);
    for (const instance of listed) print(`  ${describeInstance(instance, config)}`);
    report.confirmed = await options.confirm(`destroy ${plural(listed.length)} of pool ${poolName}? [y/N]`);
    if (!report.confirmed) {
      print('nothing was destroyed');
      return report;
    }

    let pending = listed.map((instance) => instance.id);
    const reasons = new Map<string, string>();
    for (let attempt = 1; pending.length > 0 && attempt <= maxAttempts; attempt++) {
      if (attempt > 1) await sleep(clock, retryDelayMs);
      reasons.clear();
      // One at a time: the driver's rate limit (cloud.maxCloudOpsPerSecond) paces a large pool anyway.
      for (const id of pending) {
        try {
          await driver.destroy(id);
        } catch (err) {
          reasons.set(id, `destroy failed: ${errorMessage(err)}`);
        }
      }
      // Gone is what the cloud no longer lists, whatever the destroy calls answered.
      let stillListed: Set<string>;
      try {
        stillListed = new Set((await driver.list(filter)).map((instance) => instance.id));
      } catch (err) {
        const why = `no listing confirmed the destroy: ${errorMessage(err)}`;
        for (const id of pending) if (!reasons.has(id)) reasons.set(id, why);
        stillListed = new Set(pending);
      }
      for (const id of pending) {
        if (!stillListed.has(id)) {
          report.destroyed.push(id);
          print(`destroyed ${id}`);
        } else if (!reasons.has(id)) {
          reasons.set(id, 'still listed after its destroy call returned');
        }
      }
      pending = pending.filter((id) => stillListed.has(id));
      for (const id of pending) {
        const retry = attempt < maxAttempts ? `; trying again in ${retryDelayMs} ms` : '';
        print(`not yet destroyed ${id} (round ${attempt} of ${maxAttempts}): ${reasons.get(id) ?? ''}${retry}`);
      }
    }
    report.remaining = pending.map((id) => ({ id, reason: reasons.get(id) ?? '' }));

    print(`destroyed ${report.destroyed.length} of ${plural(listed.length)} of pool ${poolName}`);
    for (const { id, reason } of report.remaining) print(`NOT destroyed: ${id}: ${reason}`);
    if (report.destroyed.length > 0) endContainers(config, report, print);
    return report;
  } finally {
    await built?.close();
    locks.release();
  }
}

/**
 * Ends the containers the queue has locked or running on the destroyed instances: they ran there,
 * or may have, and went with it. Failed rather than cancelled, since nobody cancelled them (their
 * reason says what happened); one whose exit was recorded ran to its end, and requeueOrFail
 * completes it with that code. A queue file that cannot be used is reported, not thrown: the
 * instances are gone either way.
 */
function endContainers(config: Config, report: TeardownReport, print: (line: string) => void): void {
  const path = config.queue.path;
  // No queue file: no daemon ever ran on this state, so no container was on these instances.
  if (!existsSync(path)) return;
  let queue: SqliteQueue | undefined;
  let completed = 0;
  try {
    queue = new SqliteQueue({ path, maxAttempts: config.scheduler.maxAttempts, logTailBytes: config.pool.logTailBytes });
    for (const instanceId of report.destroyed) {
      const reason = `torn down with its instance ${instanceId} by drover teardown`;
      for (const { uuid, state, exitCode } of queue.liveOn(instanceId)) {
        if (state === 'running' && exitCode !== null && queue.requeueOrFail(uuid, reason) === 'complete') completed++;
        else queue.fail(uuid, reason);
        report.endedContainers.push(uuid);
      }
    }
    report.queuedContainers = queue.pending().filter((container) => container.state === 'queued').length;
  } catch (err) {
    if (!(err instanceof QueueStorageError || err instanceof QueueUnavailableError)) throw err;
    report.queueProblem = err.message;
  } finally {
    queue?.close();
  }
  const failed = report.endedContainers.length - completed;
  if (failed > 0) {
    print(`failed ${count(failed, 'container')} locked or running on the destroyed instances: torn down with its instance by drover teardown`);
  }
  if (completed > 0) print(`completed ${count(completed, 'container')} whose exit was recorded before its instance was destroyed`);
  if (report.queueProblem !== null) {
    print(`the queue was not updated: ${report.queueProblem}; the containers it has on the destroyed instances run again at the next drover run`);
  } else if (report.queuedContainers > 0) {
    const queued = report.queuedContainers;
    print(`${count(queued, 'queued container')} ${queued === 1 ? 'stays queued and runs' : 'stay queued and run'} at the next drover run`);
  }
}

function describeInstance(instance: CloudInstance, config: Config): string {
  const typeName = instance.tags[tagKeys.instanceType];
  const where = instance.address === null ? 'no address' : `${instance.address}${instance.port === undefined ? '' : `:${instance.port}`}`;
  const kind =
    typeName !== undefined && config.instanceTypes[typeName]
      ? `type ${typeName}`
      : `orphan (type ${typeName === undefined ? 'tag missing' : JSON.stringify(typeName)} not in the config; provider type ${instance.providerType})`;
  return `${instance.id}  ${kind}  ${where}  idle behaviour ${instance.tags[tagKeys.idleBehavior] ?? 'unknown'}`;
}

function plural(instances: number): string {
  return count(instances, 'instance');
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
