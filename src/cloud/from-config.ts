// Builds the configured cloud driver, wrapped in Drover's rate limit and metrics, and the
// executor factory that reaches its instances.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Executor, ExecutorTarget } from '../ssh/executor.js';
import { FileHostKeyStore, MemoryHostKeyStore, type HostKeyStore } from '../ssh/host-keys.js';
import { SshExecutor } from '../ssh/ssh-executor.js';
import { tagKeys, type CloudDriver } from './driver.js';
import { metered } from './metered.js';
import { rateLimited } from './rate-limited.js';
import { StubCloud } from './stub/stub-cloud.js';
import { LoopbackCloud } from './loopback/loopback-cloud.js';

export interface Cloud {
  driver: CloudDriver;
  executorFor: (target: ExecutorTarget) => Executor;
  /** Present when the driver is the stub, for demos and tests that inject faults. */
  stub?: StubCloud;
  /** Whether the pool must install the runner on each instance (the stub's VMs have it built in). */
  deploysRunner: boolean;
  close(): Promise<void>;
}

export class UnsupportedDriverError extends Error {}

export interface CloudFromConfigOptions {
  /** Where a driver that only pretends (the stub) says so once, when it is built. */
  logger?: Pick<Logger, 'warn'>;
}

/** Logged once when the stub driver is built, so nobody takes the demo's output for real work. */
export const stubDriverNotice = 'cloud.driver is stub: instances and containers are simulated; nothing runs, and container output only says so';

export async function cloudFromConfig(config: Config, clock: Clock, registry: Registry, options: CloudFromConfigOptions = {}): Promise<Cloud> {
  const wrap = (driver: CloudDriver) =>
    rateLimited(metered(driver, registry), { maxOpsPerSecond: config.cloud.maxCloudOpsPerSecond, clock });
  switch (config.cloud.driver) {
    case 'stub': {
      options.logger?.warn({ driver: 'stub' }, stubDriverNotice);
      const stub = new StubCloud({
        clock,
        faults: config.cloud.stub,
        bootProbeCommand: config.pool.bootProbeCommand,
        runnerCommand: config.pool.runnerCommand,
      });
      for (const seed of config.cloud.stub.seedInstances) {
        const instanceType = config.instanceTypes[seed.instanceType];
        if (!instanceType) continue; // the config schema already refused this
        for (let i = 0; i < seed.count; i++) {
          stub.addInstance({
            instanceType,
            tags: { [tagKeys.pool]: config.poolName, [tagKeys.instanceType]: instanceType.name, [tagKeys.idleBehavior]: seed.idleBehavior },
            booted: false,
          });
        }
      }
      return { driver: wrap(stub), executorFor: (target) => stub.executorFor(target), stub, deploysRunner: false, close: async () => {} };
    }
    case 'loopback': {
      const loopback = await LoopbackCloud.start({ directory: resolve(config.cloud.loopback.directory) });
      return {
        driver: wrap(loopback),
        executorFor: (target) => loopback.executorFor(target),
        deploysRunner: true,
        close: () => loopback.close(),
      };
    }
    default:
      throw new UnsupportedDriverError(
        `cloud.driver: the ${config.cloud.driver} driver is not available in this build yet; use loopback or stub`,
      );
  }
}

/** Executors over real SSH, for drivers whose instances run sshd. */
export function sshExecutors(config: Config): (target: ExecutorTarget) => Executor {
  const { privateKeyFile, hostKeysFile, username } = config.ssh;
  if (!privateKeyFile) throw new UnsupportedDriverError(`ssh.privateKeyFile: required for the ${config.cloud.driver} driver`);
  const privateKey = readFileSync(privateKeyFile);
  const hostKeys: HostKeyStore = hostKeysFile ? new FileHostKeyStore(hostKeysFile) : new MemoryHostKeyStore();
  return (target) => new SshExecutor({ target, username, privateKey, hostKeys });
}
