// The stub cloud's failure knobs. Set from `cloud.stub` in a config file or directly by a test;
// the stub reads them on every call, so a test can change them while the pool runs.

export interface StubFaults {
  /** Probability (0..1) that a create call fails with a plain CloudError. */
  createErrorRate: number;
  /** Probability (0..1) that a destroy call fails with a plain CloudError. */
  destroyErrorRate: number;
  /** Minimum ms between accepted create calls; a faster call gets a RateLimitError with retryAt. */
  minCreateIntervalMs: number;
  /** Minimum ms between accepted list calls; a faster call gets a RateLimitError with retryAt. */
  minListIntervalMs: number;
  /** Live instances allowed in the account; a create beyond it gets a QuotaError. null = no quota. */
  quotaMaxInstances: number | null;
  /** Drover instance type names whose creates get a CapacityError; '*' means zone-wide (every type). */
  capacityErrorTypes: string[];
  /**
   * Zones out of capacity: a create whose launch config names one of them gets a CapacityError for
   * its instance type in that zone (`zone` set). Creates without a launch config zone are not affected.
   */
  capacityErrorZones: string[];
  /** Images that never boot: a VM created from a launch config with one of them never passes the boot probe. */
  brokenImages: string[];
  /** Boot delay of a new VM, drawn uniformly from [min, max] ms. */
  bootDelayMs: { min: number; max: number };
  /** Fraction (0..1) of new VMs that never pass the boot probe (a bad image). */
  neverBootFraction: number;
  /** Fraction (0..1) of new VMs that vanish from the cloud `vanishAfterMs` after creation. */
  vanishFraction: number;
  vanishAfterMs: number;
  /** Probability (0..1) that a list call fails. */
  listFailureRate: number;
  /** When true every list call fails (for tests that need certainty). */
  failListings: boolean;
  /** Probability (0..1) that a listing leaves out any one instance. */
  listOmitRate: number;
  /** Probability (0..1) that an SSH command fails with a dropped connection. */
  sshDropRate: number;
  /** How long a container started through the runner runs before it exits with 0; 0 = it exits at once. */
  containerRunMs: number;
  /**
   * When set, every runner `start` answers this exit code and starts nothing (see runnerExit), e.g.
   * 1 for an instance that refuses every start. null = starts behave normally.
   */
  startExitCode: number | null;
  /** Seed of the stub's pseudo-random generator, so a run can be repeated. */
  seed: number;
}

export const defaultStubFaults: StubFaults = {
  createErrorRate: 0,
  destroyErrorRate: 0,
  minCreateIntervalMs: 0,
  minListIntervalMs: 0,
  quotaMaxInstances: null,
  capacityErrorTypes: [],
  capacityErrorZones: [],
  brokenImages: [],
  bootDelayMs: { min: 5_000, max: 5_000 },
  neverBootFraction: 0,
  vanishFraction: 0,
  vanishAfterMs: 0,
  listFailureRate: 0,
  failListings: false,
  listOmitRate: 0,
  sshDropRate: 0,
  containerRunMs: 1_000,
  startExitCode: null,
  seed: 1,
};
