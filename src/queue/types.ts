// The container queue's contract: what a container is, the states it moves through, and the
// operations the dispatcher and the API need. The SQLite queue is the embedded implementation.

export type ContainerState = 'queued' | 'locked' | 'running' | 'complete' | 'failed' | 'cancelled';
export const finalStates: ReadonlySet<ContainerState> = new Set(['complete', 'failed', 'cancelled']);

export interface Constraints {
  vcpus: number;
  ramMiB: number;
  scratchGiB: number;
  gpus: number;
  /** True when the container may run on a preemptible (spot) instance. */
  preemptible: boolean;
}

/** What a user submits. */
export interface ContainerSpec {
  /** Image to run under docker; optional where the runner runs plain processes (loopback). */
  image: string | null;
  /** argv, first element the program. */
  command: string[];
  env: Record<string, string>;
  constraints: Constraints;
  /** Higher runs first. */
  priority: number;
}

export interface Container extends ContainerSpec {
  uuid: string;
  state: ContainerState;
  /** Times it was started on an instance (a start that was lost counts). */
  attempts: number;
  exitCode: number | null;
  instanceId: string | null;
  instanceType: string | null;
  /**
   * The end of stdout+stderr once finished: the last `pool.logTailBytes` (default 64 KiB), after a
   * logTailMarker line when the start was dropped.
   */
  logTail: string;
  /** Why it failed, was cancelled or was requeued last; null when nothing went wrong. */
  reason: string | null;
  submittedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
}

/** Default bytes of a finished container's output kept (config `pool.logTailBytes`). */
export const logTailBytes = 64 * 1024;
/** Bounds of config `pool.logTailBytes`. */
export const minLogTailBytes = 1024;
export const maxLogTailBytes = 16 * 1024 * 1024;

/**
 * The line a stored log tail starts with when the start of the output was dropped. The runner's
 * `logs UUID BYTES` prints the same line (src/runner/drover-runner.sh), as does the stub cloud.
 */
export function logTailMarker(totalBytes: number, keptBytes: number): string {
  return `[drover: ${totalBytes} bytes of output; the first ${totalBytes - keptBytes} were dropped, the last ${keptBytes} kept]\n`;
}

/** Matches a leading logTailMarker line; group 1 is the total size of the output, group 2 the bytes kept. */
export const logTailMarkerPattern = /^\[drover: (\d+) bytes of output; the first \d+ were dropped, the last (\d+) kept\]\n/;

export class ContainerNotFoundError extends Error {
  constructor(readonly uuid: string) {
    super(`no container ${uuid}`);
  }
}

/** A state change the queue refused: the container was not in a state that allows it. */
export class ContainerStateError extends Error {
  constructor(
    readonly uuid: string,
    readonly from: ContainerState,
    readonly action: string,
  ) {
    super(`container ${uuid} is ${from}; cannot ${action}`);
  }
}

/** Where a start is about to be attempted: the instance whose runner list later says whether it happened. */
export interface LockRequest {
  uuid: string;
  instanceId: string;
  instanceType: string;
}

// Containers the queue hands out from memory are frozen and shared between calls, so a caller
// cannot change what the next caller sees. Readonly here is shallow; the freeze is deep.
export interface ContainerQueue {
  submit(spec: ContainerSpec): Readonly<Container>;
  get(uuid: string): Readonly<Container> | undefined;
  /** All containers, newest first; optionally only those in the given states. */
  list(filter?: { states?: ContainerState[]; limit?: number }): Container[];
  /** Containers the scheduler must consider: queued, locked and running, in scheduling order
   * (running and locked first, then priority descending, then submit time, then uuid). Served
   * from memory; the same array until the queue changes. */
  pending(): readonly Readonly<Container>[];
  /** Locked and running containers recorded on the instance, in scheduling order. */
  liveOn(instanceId: string): readonly Readonly<Container>[];

  /** queued → locked, for a start about to be attempted on the instance, which is recorded so
   * that after a restart its runner list decides the lock. False if it was not queued. */
  lock(uuid: string, instanceId: string, instanceType: string): boolean;
  /** lock() of each that is still queued, all in one transaction; returns the uuids it locked.
   * An unknown uuid throws ContainerNotFoundError and locks none. */
  lockMany(requests: ReadonlyArray<LockRequest>): string[];
  /** locked → queued: the start did not happen; the instance recorded by lock() is cleared. */
  unlock(uuid: string, reason: string): void;
  /** locked → running on an instance; attempts + 1. */
  markRunning(uuid: string, instanceId: string, instanceType: string): void;
  /**
   * Stores the exit code of a running container the moment it is known, durably; it stays running
   * until complete() brings its log tail. Should its instance go first, requeueOrFail completes it
   * with that code rather than run it again. A cancelled container gets the code it was killed
   * with (e.g. 143 for TERM), once; its output follows with setLogTail.
   * `instanceId` is the instance it was seen to exit on. A container still locked there (its
   * markRunning was refused, e.g. by a full disk) is marked running with the code in the same
   * transaction, attempts + 1 and startedAt set: an exit proves the start, and a locked row with
   * no exit would be unlocked and run again should its instance go. Locked elsewhere, or without
   * `instanceId`, a locked container is a ContainerStateError.
   */
  recordExit(uuid: string, exitCode: number, instanceId?: string): void;
  /**
   * running (or locked) → complete with its exit code and log tail (may be '' and set later by
   * setLogTail). A locked one ran all the same: its start is counted (attempts + 1, startedAt).
   */
  complete(uuid: string, exitCode: number, logTail: string): void;
  /** Replaces the log tail (truncated to logTailBytes) of a final container, whose state stays;
   * ContainerStateError on a live one. Lets an exit code be recorded before its logs are read. */
  setLogTail(uuid: string, logTail: string): void;
  /** running/locked → queued when its instance was lost and attempts < maxAttempts, else → failed with the reason;
   * → complete when its exit was recorded (it ran to its end). Returns the new state. */
  requeueOrFail(uuid: string, reason: string): ContainerState;
  /** any non-final → failed with a reason (e.g. no instance type fits). */
  fail(uuid: string, reason: string, logTail?: string): void;
  /** any non-final → cancelled (a final container is returned unchanged). The dispatcher kills
   * whatever still runs for a cancelled container. */
  cancel(uuid: string): Container;

  /** Called (coalesced) after any change. */
  subscribe(listener: () => void): () => void;
  close(): void;
}
