// How the pool runs commands on an instance: the SSH executor in production, the stub cloud's
// simulated VMs in tests. Both answer the same commands the same way.

export interface ExecutorTarget {
  /** Stable identity of the host (the instance id); host keys are pinned per target id. */
  id: string;
  address: string;
  port: number;
  /**
   * The instance secret from the instance's tags. When set and no host key is pinned yet, the
   * executor reads the secret back over the new connection and pins the key only if it matches.
   */
  secret?: string;
  /**
   * No host key is pinned without a matching secret: a target without one is refused on first
   * contact (InstanceSecretMissingError). Set for clouds whose every instance gets a secret.
   */
  requireSecret?: boolean;
}

export interface RunOptions {
  stdin?: string | Buffer;
  env?: Readonly<Record<string, string>>;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** null when the command was ended by a signal. */
  exitCode: number | null;
}

export interface Executor {
  /** Runs a shell command on the current target. Rejects when the command could not be run at all. */
  run(command: string, options?: RunOptions): Promise<CommandResult>;
  /** Uses a new address for the same host from now on. Cheap when nothing changed; never blocks on running commands. */
  setTarget(target: ExecutorTarget): void;
  close(): void;
}
