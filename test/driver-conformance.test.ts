// The driver conformance suite (test/support/driver-conformance.ts) against the drivers that need
// no account: the stub cloud and the loopback driver. The EC2 and GCE drivers run it in their own
// test files, against local endpoints speaking their APIs.
//
// Neither of these two makes one instance of two creates with the same create token: a create
// token guards against a call retried after its answer was lost on the way from a remote API
// (the EC2 SDK's own retries, a GCE insert resent), and these two answer in process, with no
// answer to lose. Nothing else retries a create with the same token: the pool makes a new token
// for every create and a failed create ends its worker (machines/instance.ts, creating.onError),
// and drover cloudtest creates once.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tagKeys, type InstanceType } from '../src/cloud/driver.js';
import { LoopbackCloud } from '../src/cloud/loopback/loopback-cloud.js';
import { describeDriverConformance } from './support/driver-conformance.js';
import { createStub } from './support/pool-harness.js';

const stubType: InstanceType = { name: 'small', providerType: 'stub.small', vcpus: 2, ramMiB: 4096, scratchGiB: 10, gpus: 0, price: 0.05, preemptible: false };

describeDriverConformance('stub', { refusals: ['quota', 'capacity', 'rateLimit'], idempotentCreates: false }, async () => {
  const stub = createStub();
  return {
    driver: stub,
    instanceType: stubType,
    async refuseCreates(kind) {
      const before = { ...stub.faults, capacityErrorTypes: [...stub.faults.capacityErrorTypes] };
      if (kind === 'quota') stub.faults.quotaMaxInstances = stub.liveCount();
      if (kind === 'capacity') stub.faults.capacityErrorTypes = [stubType.name];
      if (kind === 'rateLimit') {
        // The stub refuses a create that follows the last one sooner than this.
        await stub.create({ instanceType: stubType, tags: { [tagKeys.pool]: 'conformance-pacing' } });
        stub.faults.minCreateIntervalMs = 3_600_000;
      }
      return () => Object.assign(stub.faults, before);
    },
    close: async () => {},
  };
});

const loopbackType: InstanceType = { name: 'local', providerType: 'loopback', vcpus: 1, ramMiB: 512, scratchGiB: 1, gpus: 0, price: 0, preemptible: false };

// This machine has no quota, capacity or API limit for the loopback driver to pass on.
describeDriverConformance('loopback', { refusals: [], idempotentCreates: false }, async () => {
  const directory = await mkdtemp(join(tmpdir(), 'drover-conformance-'));
  const cloud = await LoopbackCloud.start({ directory });
  return {
    driver: cloud,
    instanceType: loopbackType,
    refuseCreates() {
      return Promise.reject(new Error('the loopback driver has no refusals to inject'));
    },
    close: async () => {
      await cloud.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
});
