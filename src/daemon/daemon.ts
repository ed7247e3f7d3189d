// The daemon: wires config, logs, the cloud driver and the pool together and runs until stopped.
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { systemClock, type Clock } from '../clock.js';
import { cloudFromConfig, type Cloud } from '../cloud/from-config.js';
import type { Config } from '../config/schema.js';
import { Pool } from '../pool/pool.js';

export interface Daemon {
  pool: Pool;
  cloud: Cloud;
  registry: Registry;
  logger: Logger;
  stop(): void;
}

export interface DaemonOptions {
  clock?: Clock;
  logger?: Logger;
}

export function startDaemon(config: Config, options: DaemonOptions = {}): Daemon {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? pino({ level: config.log.level });
  const registry = new Registry();
  const cloud = cloudFromConfig(config, clock, registry);
  const pool = new Pool({
    poolName: config.poolName,
    driver: cloud.driver,
    executorFor: cloud.executorFor,
    settings: config.pool,
    instanceTypes: config.instanceTypes,
    logger,
    clock,
  });
  pool.start();
  logger.info({ poolName: config.poolName, driver: config.cloud.driver, instanceTypes: Object.keys(config.instanceTypes) }, 'drover started');
  return {
    pool,
    cloud,
    registry,
    logger,
    stop() {
      pool.stop();
      logger.info('drover stopped');
    },
  };
}
