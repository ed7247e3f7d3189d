// The chaos soak: a replay with every fault the stub can inject turned up and the daemon restarted
// every two simulated hours, checked against the invariants (see SimulationSummary.invariants).
import type { StubFaults } from '../cloud/stub/faults.js';
import type { Config } from '../config/schema.js';

/** How often the soak restarts the daemon (pool and scheduler), in simulated ms. */
export const soakRestartEveryMs = 2 * 3_600_000;

/**
 * The soak's faults: 20% of creates fail, 10% of listings fail and 5% leave an instance out, a
 * quota at 15% of maxInstances (below what a burst wants), a create rate limit, 5% of VMs never boot, 2% vanish (under their
 * containers) 20 minutes in, 2% of SSH commands drop, 5% of destroys fail.
 */
export function soakFaults(config: Config): Partial<StubFaults> {
  return {
    createErrorRate: 0.2,
    listFailureRate: 0.1,
    listOmitRate: 0.05,
    quotaMaxInstances: Math.max(1, Math.floor(config.pool.maxInstances * 0.15)),
    minCreateIntervalMs: 200,
    neverBootFraction: 0.05,
    vanishFraction: 0.02,
    vanishAfterMs: 20 * 60_000,
    sshDropRate: 0.02,
    destroyErrorRate: 0.05,
  };
}

/** The fault kinds the soak injects: a soak that saw none of one did not test it. */
export const soakFaultKinds = ['createError', 'destroyError', 'quota', 'createRateLimit', 'listFailure', 'listOmission', 'neverBoots', 'vanishes', 'sshDrop'] as const;

/** The config with the soak's faults over its own cloud.stub settings. */
export function soakConfig(config: Config): Config {
  return { ...config, cloud: { ...config.cloud, stub: { ...config.cloud.stub, ...soakFaults(config) } } };
}
