// The daemon: wires config, logs, the cloud driver, the pool, the queue, the scheduler and the
// admin API together, and runs until stopped.
import { pino, type Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { systemClock, type Clock } from '../clock.js';
import { cloudFromConfig, type Cloud } from '../cloud/from-config.js';
import type { Config } from '../config/schema.js';
import { PoolHistory } from '../http/pool-history.js';
import { startServer } from '../http/server.js';
import { ensureToken } from '../http/token.js';
import { startStatelyInspection } from '../inspect/stately-inspection.js';
import { Pool } from '../pool/pool.js';
import { SqliteQueue } from '../queue/sqlite-queue.js';
import { logsCommand, ensureRunner } from '../runner/deploy.js';
import { Dispatcher } from '../scheduler/dispatcher.js';
import { DroverMetrics, registerDroverMetrics } from './metrics.js';
import { takeStateLocks } from './state-lock.js';
import { ensurePrivateState } from './state-permissions.js';

export interface Daemon {
  pool: Pool;
  queue: SqliteQueue;
  dispatcher: Dispatcher;
  cloud: Cloud;
  registry: Registry;
  logger: Logger;
  /** Where the admin API listens. */
  url: string;
  stop(): Promise<void>;
}

export interface DaemonOptions {
  clock?: Clock;
  logger?: Logger;
  /** The config file it was loaded from; recorded with the state locks so a refused daemon can name it. */
  configPath?: string;
}

export async function startDaemon(config: Config, options: DaemonOptions = {}): Promise<Daemon> {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? pino({ level: config.log.level });
  // State others can read (the queue holds submitted env values) stops start-up before anything
  // is created; a missing queue directory is created 0700. Throws StatePermissionError.
  ensurePrivateState(config);
  // Before anything else: a second daemon on the same queue or loopback pool must create nothing.
  // Throws StateLockedError naming the holder.
  const locks = takeStateLocks(config, options.configPath);
  // Next the queue: a file it cannot use (read-only, not a database, corrupt) stops start-up
  // before the token or the cloud are touched. Throws QueueStorageError naming the file.
  let queue: SqliteQueue;
  try {
    queue = new SqliteQueue({ path: config.queue.path, maxAttempts: config.scheduler.maxAttempts, clock, logTailBytes: config.pool.logTailBytes, logger });
  } catch (error) {
    locks.release();
    throw error;
  }
  const registry = new Registry();
  // Node's own (CPU, memory, event loop lag, GC) on the daemon's registry only: registering them
  // per test registry as well would add a GC observer for each.
  collectDefaultMetrics({ register: registry });
  // Made before the pool and the dispatcher it observes, so neither is bound to it late.
  const metrics = new DroverMetrics(registry);
  let token: string;
  let cloud: Cloud;
  try {
    token = ensureToken(config.http.tokenFile);
    cloud = await cloudFromConfig(config, clock, registry, { logger });
  } catch (error) {
    queue.close();
    locks.release();
    throw error;
  }
  const { runnerCommand } = config.pool;
  // Before any actor: each is created with the inspector or, with inspect.url unset, without one.
  const inspection = config.inspect.url === null ? undefined : startStatelyInspection({ url: config.inspect.url, actors: config.inspect.actors, logger });

  // Layered, nothing bound late: the pool writes attempt outcomes to the queue; the dispatcher
  // reads the queue and drives the pool through its WorkerPool face.
  const pool = new Pool({
    poolName: config.poolName,
    driver: cloud.driver,
    executorFor: cloud.executorFor,
    settings: config.pool,
    instanceTypes: config.instanceTypes,
    logger,
    clock,
    records: queue,
    // Launch configs, and the operator's pauses and archives of them kept in the queue file.
    launchConfigs: config.launchConfigs,
    launchConfigStore: queue,
    docker: config.runner.docker,
    launch: cloud.launch,
    observer: metrics,
    inspection,
    prepareInstance: cloud.deploysRunner
      ? async (executor, instance) => {
          if ((await ensureRunner(executor, runnerCommand)) === 'installed') {
            logger.info({ instanceId: instance.id }, 'runner installed');
          }
        }
      : undefined,
  });
  const dispatcher = new Dispatcher({
    queue,
    pool,
    instanceTypes: config.instanceTypes,
    settings: config.scheduler,
    maxInstances: config.pool.maxInstances,
    logger,
    clock,
    observer: metrics,
    inspection,
  });
  registerDroverMetrics(registry, {
    pool,
    queue,
    instanceTypes: config.instanceTypes,
    maxConcurrentContainers: config.scheduler.maxConcurrentContainers,
    clock,
  });

  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(
      {
        queue,
        pool,
        launchConfigs: pool,
        token,
        registry,
        publicMetrics: config.http.publicMetrics,
        logger,
        docker: config.runner.docker,
        runnerPath: runnerCommand,
        health: () => queue.health(),
        waitReason: (uuid) => dispatcher.waitReason(uuid),
        // The web view's chart and totals; sampled on the daemon's clock while the server runs.
        history: new PoolHistory({ pool, queue, clock }),
        liveLogs: async (container) => {
          if (!container.instanceId) return null;
          const result = await pool.runOn(container.instanceId, logsCommand(runnerCommand, container.uuid, config.pool.logTailBytes));
          return result.exitCode === 0 ? result.stdout : null;
        },
      },
      config.http,
    );
  } catch (error) {
    // The API first: a daemon that cannot serve it (port taken) must not have created anything.
    inspection?.stop();
    queue.close();
    await cloud.close();
    locks.release();
    throw error;
  }
  pool.start();
  dispatcher.start();
  logger.info(
    { poolName: config.poolName, driver: config.cloud.driver, instanceTypes: Object.keys(config.instanceTypes), url: server.url, tokenFile: config.http.tokenFile },
    'drover started',
  );

  const running = dispatcher;
  return {
    pool,
    queue,
    dispatcher: running,
    cloud,
    registry,
    logger,
    url: server.url,
    async stop() {
      await server.close();
      running.stop();
      pool.stop();
      inspection?.stop();
      queue.close();
      await cloud.close();
      locks.release();
      logger.info('drover stopped');
    },
  };
}
