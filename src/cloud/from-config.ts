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
import ssh2 from 'ssh2';
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
  /** For VMs: who the pool logs in as and the key their init script installs; absent for the stub and loopback. */
  launch?: { username: string; sshPublicKey: string };
  close(): Promise<void>;
}

export class UnsupportedDriverError extends Error {}

/** The driver cannot be set up from this config (an unreadable SSH key, say); the message names the key. */
export class CloudSetupError extends Error {
  override readonly name = 'CloudSetupError';
}

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
    case 'ec2': {
      // Checked by the schema; repeated so the type is narrowed.
      if (config.cloud.ec2 === null) throw new CloudSetupError('cloud.ec2: required when cloud.driver is ec2');
      // Loaded only for its driver: the cloud SDKs take a second or more to import, which every
      // other command (and every other driver) would pay for nothing.
      const { createEc2Driver } = await import('./ec2/ec2-driver.js');
      const driver = createEc2Driver(config.cloud.ec2);
      try {
        await driver.verifyCredentials();
        const { executorFor, launch } = sshAccess(config);
        return { driver: wrap(driver), executorFor, deploysRunner: true, launch, close: async () => driver.close() };
      } catch (error) {
        driver.close();
        throw error;
      }
    }
    case 'gce': {
      if (config.cloud.gce === null) throw new CloudSetupError('cloud.gce: required when cloud.driver is gce');
      const { createGceDriver } = await import('./gce/gce-driver.js');
      const driver = createGceDriver(config.cloud.gce, { sshUsername: config.ssh.username, clock });
      try {
        await driver.verifyCredentials();
        const { executorFor, launch } = sshAccess(config);
        return { driver: wrap(driver), executorFor, deploysRunner: true, launch, close: () => driver.close() };
      } catch (error) {
        await driver.close();
        throw error;
      }
    }
    default:
      throw new UnsupportedDriverError(
        `cloud.driver: the ${config.cloud.driver} driver is not available in this build yet; use loopback or stub`,
      );
  }
}

/** Executors over real SSH, and the public key VMs get at first boot, for drivers whose instances run sshd. */
function sshAccess(config: Config): { executorFor: (target: ExecutorTarget) => Executor; launch: { username: string; sshPublicKey: string } } {
  const { privateKeyFile, hostKeysFile, username } = config.ssh;
  if (!privateKeyFile) throw new CloudSetupError(`ssh.privateKeyFile: required for the ${config.cloud.driver} driver (a key of its own, e.g. made with ssh-keygen -t ed25519 -N '' -f ~/.drover/id_ed25519)`);
  let privateKey: Buffer;
  try {
    privateKey = readFileSync(privateKeyFile);
  } catch (error) {
    throw new CloudSetupError(`ssh.privateKeyFile: ${privateKeyFile}: cannot be read (${(error as Error).message})`);
  }
  const key = ssh2.utils.parseKey(privateKey);
  if (key instanceof Error || Array.isArray(key)) {
    throw new CloudSetupError(`ssh.privateKeyFile: ${privateKeyFile}: not one unencrypted SSH private key${key instanceof Error ? ` (${key.message})` : ''}`);
  }
  const hostKeys: HostKeyStore = hostKeysFile ? new FileHostKeyStore(hostKeysFile) : new MemoryHostKeyStore();
  return {
    executorFor: (target) => new SshExecutor({ target, username, privateKey, hostKeys }),
    launch: { username, sshPublicKey: `${key.type} ${key.getPublicSSH().toString('base64')} drover` },
  };
}
