// The contract between the pool and a cloud: all the pool knows of the outside world, with the
// executor in src/ssh/executor.ts.

export type Tags = Readonly<Record<string, string>>;

/** A named size Drover can run containers on. */
export interface InstanceType {
  name: string;
  /** The provider's own name for the size, e.g. m5.large. */
  providerType: string;
  vcpus: number;
  ramMiB: number;
  scratchGiB: number;
  gpus: number;
  /** Hourly price in the operator's currency. */
  price: number;
  preemptible: boolean;
}

/** One VM as the cloud reports it. */
export interface CloudInstance {
  id: string;
  providerType: string;
  /** Where the executor connects; null while the provider has not assigned one. */
  address: string | null;
  /** SSH port; 22 unless the driver says otherwise. */
  port?: number;
  tags: Tags;
}

/**
 * Where and from what one instance type is launched: one of the type's launch configs. Fields a
 * driver has no use for are ignored by it; null leaves the driver's own setting (its config section).
 */
export interface LaunchConfig {
  /** Stable: given in the config, or a hash of the instance type and the fields below. */
  id: string;
  /** Drover's name of the instance type this config launches. */
  instanceType: string;
  zone: string | null;
  region: string | null;
  subnet: string | null;
  image: string | null;
  /** Driver-specific settings (e.g. EC2 securityGroupIds, GCE bootDiskGiB), merged over the driver's section. */
  extra: Readonly<Record<string, unknown>>;
}

export interface CreateRequest {
  instanceType: InstanceType;
  /** The launch config the pool chose for this create; absent: the driver's own settings for the type. */
  launchConfig?: LaunchConfig;
  /** Put on the instance (and, where the cloud has them, its volumes) in the same call that creates it. */
  tags: Tags;
  /**
   * A shell script the instance runs as root at first boot (EC2 user data, GCE startup-script):
   * it installs `sshPublicKey` and writes the instance secret. Drivers whose instances are not VMs
   * (stub, loopback) may ignore it.
   */
  initScript?: string;
  /** The dispatcher's SSH public key in OpenSSH form (`ssh-ed25519 AAAA... drover`), for drivers that install it themselves. */
  sshPublicKey?: string;
}

export interface CloudDriver {
  create(request: CreateRequest): Promise<CloudInstance>;
  /** Every instance whose tags include all of `tagFilter`. Throws rather than return a partial answer it knows of. */
  list(tagFilter: Tags): Promise<CloudInstance[]>;
  destroy(id: string): Promise<void>;
  /** Merges `tags` into the instance's tags. */
  setTags(id: string, tags: Tags): Promise<void>;
}

export type CloudOperation = keyof CloudDriver;
export const cloudOperations: readonly CloudOperation[] = ['create', 'list', 'destroy', 'setTags'];

/** Tag keys Drover puts on every instance it creates. */
export const tagKeys = {
  pool: 'drover-pool',
  instanceType: 'drover-instance-type',
  idleBehavior: 'drover-idle-behavior',
  createToken: 'drover-create-token',
  /** A random value per create, also written onto the instance, checked on first SSH contact. */
  secret: 'drover-secret',
  /** The id of the launch config the instance was created from. */
  launchConfig: 'drover-launch-config',
} as const;
