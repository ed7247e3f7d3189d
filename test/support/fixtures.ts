// Small shared test fixtures: an instance type with sensible defaults, and a bounded poll for
// real processes (never for timeouts, which run on fake or simulated clocks).
import type { InstanceType } from '../../src/cloud/driver.js';

/** A 2-vCPU, 4 GiB type named `name`, provider type `prov.<name>`, with `fields` overriding. */
export function instanceTypeFixture(name: string, fields: Partial<InstanceType> = {}): InstanceType {
  return {
    name,
    providerType: `prov.${name}`,
    vcpus: 2,
    ramMiB: 4096,
    scratchGiB: 20,
    gpus: 0,
    price: 0.1,
    preemptible: false,
    ...fields,
  };
}

/** Polls until `check` returns a value; for real processes to finish, bounded. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
