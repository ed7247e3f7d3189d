// Tests of the GCE driver through the real InstancesClient and ZoneOperationsClient (REST
// transport, real OAuth2Client presenting a fixed token) against a Compute endpoint on 127.0.0.1
// (test/support/fake-gce-endpoint.ts). Operation polls wait on an injected clock that moves at
// once, so nothing here sleeps.
import { readFileSync } from 'node:fs';
import { OAuth2Client } from 'google-auth-library';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parse } from 'yaml';
import type { Clock } from '../src/clock.js';
import { tagKeys, type CreateRequest, type LaunchConfig } from '../src/cloud/driver.js';
import { CapacityError, CloudError, CredentialsError, QuotaError, RateLimitError } from '../src/cloud/errors.js';
import { createGceDriver, type GceDriver } from '../src/cloud/gce/gce-driver.js';
import { faultOfCall, gceErrorTable, GceFingerprintError, GceNotFoundError, toCloudError } from '../src/cloud/gce/errors.js';
import { tagsMetadataKey } from '../src/cloud/gce/labels.js';
import { gceSettingsSchema, type GceSettings } from '../src/cloud/gce/settings.js';
import { parseConfig } from '../src/config/load.js';
import { unknownLaunchTypes } from '../src/config/schema.js';
import { describeDriverConformance } from './support/driver-conformance.js';
import { fakeGceAccessToken, startFakeGceEndpoint, type FakeGceEndpoint } from './support/fake-gce-endpoint.js';
import { instanceTypeFixture } from './support/fixtures.js';

const standard = instanceTypeFixture('standard', { providerType: 'n2-standard-4', scratchGiB: 50 });
const spot = instanceTypeFixture('spot', { providerType: 'n2-standard-8', scratchGiB: 0, preemptible: true });
const gpu = instanceTypeFixture('gpu', { providerType: 'n1-standard-8', scratchGiB: 400, gpus: 2 });
const sshPublicKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtest drover';
const initScript = '#!/bin/sh\necho installed\n';

/** The parts of an insert's JSON body the tests read. */
interface InsertBody {
  name: string;
  machineType: string;
  labels: Record<string, string>;
  metadata: { items: { key: string; value: string }[] };
  scheduling: Record<string, unknown>;
  disks: unknown[];
  networkInterfaces: unknown[];
  serviceAccounts: unknown[];
  guestAccelerators: unknown[];
}

function settingsFor(fake: FakeGceEndpoint, raw: Record<string, unknown> = {}): GceSettings {
  return gceSettingsSchema.parse({
    project: 'p',
    zones: ['us-central1-a', 'us-central1-b'],
    image: 'projects/debian-cloud/global/images/family/debian-12',
    subnetwork: 'regions/us-central1/subnetworks/drover',
    serviceAccount: { email: 'drover-worker@p.iam.gserviceaccount.com' },
    launch: { gpu: { zone: 'us-central1-c', acceleratorType: 'nvidia-tesla-t4', scratchDiskType: 'local-ssd' } },
    apiEndpoint: fake.url,
    ...raw,
  });
}

/** A clock on which every timer fires at once (on the next turn), recording the delays asked for. */
function instantClock(): Clock & { delays: number[] } {
  let now = 0;
  const delays: number[] = [];
  return {
    delays,
    now: () => now,
    setTimeout: (fn: () => void, ms: number) => {
      delays.push(ms);
      now += ms;
      return setImmediate(fn);
    },
    clearTimeout: (id: unknown) => clearImmediate(id as NodeJS.Immediate),
  };
}

function fakeAuthClient(token = fakeGceAccessToken): OAuth2Client {
  const client = new OAuth2Client();
  client.setCredentials({ access_token: token, expiry_date: Date.now() + 3_600_000 });
  return client;
}

function createRequest(instanceType = standard, token = crypto.randomUUID(), extra: Record<string, string> = {}): CreateRequest {
  return {
    instanceType,
    tags: { [tagKeys.pool]: 'p1', [tagKeys.instanceType]: instanceType.name, [tagKeys.createToken]: token, ...extra },
    initScript,
    sshPublicKey,
  };
}

function launchConfig(instanceType: string, fields: Partial<LaunchConfig> = {}): LaunchConfig {
  return { id: `${instanceType}-lc`, instanceType, zone: null, region: null, subnet: null, image: null, extra: {}, ...fields };
}

function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('GCE driver against a Compute endpoint', () => {
  let fake: FakeGceEndpoint;
  let clock: ReturnType<typeof instantClock>;
  let driver: GceDriver;
  // authClient null: the driver finds application default credentials itself.
  const makeDriver = (raw: Record<string, unknown> = {}, authClient: OAuth2Client | null = fakeAuthClient()) =>
    createGceDriver(settingsFor(fake, raw), { sshUsername: 'drover', clock, ...(authClient ? { authClient } : {}) });

  beforeEach(async () => {
    fake = await startFakeGceEndpoint();
    clock = instantClock();
    driver = makeDriver();
  });
  afterEach(async () => {
    await driver.close();
    await fake.close();
  });

  const bodyOf = <T = InsertBody>(call: string, n = 0) => fake.requests.filter((request) => request.call === call)[n]?.body as T;

  it('inserts with the create token as requestId, labels, ssh key and startup script in metadata, waits for the operation, and returns the instance', async () => {
    const request = createRequest(standard, '0b6f3c4e-8d1a-4f7e-9c2b-5a4d3e2f1a0b', { [tagKeys.secret]: 'c0ffee', 'drover-note': 'Mixed Case: a/b=c' });
    fake.pollsUntilDone = 3;
    const instance = await driver.create(request);

    const insert = fake.requests.find((r) => r.call === 'insert');
    expect(insert?.query.requestId).toBe('0b6f3c4e-8d1a-4f7e-9c2b-5a4d3e2f1a0b');
    expect(insert?.path).toBe('/compute/v1/projects/p/zones/us-central1-a/instances');
    expect(insert?.authorization).toBe(`Bearer ${fakeGceAccessToken}`);
    const body = bodyOf('insert');
    expect(body.name).toBe('drover-0b6f3c4e-8d1a-4f7e-9c2b-5a4d3e2f1a0b');
    expect(body.machineType).toBe('zones/us-central1-a/machineTypes/n2-standard-4');
    expect(body.labels).toEqual({
      'drover-pool': 'p1',
      'drover-instance-type': 'standard',
      'drover-create-token': '0b6f3c4e-8d1a-4f7e-9c2b-5a4d3e2f1a0b',
      'drover-note': '_4dixed_20_43ase_3a_20a_2fb_3dc',
    });
    expect(body.metadata.items).toEqual([
      { key: tagsMetadataKey, value: JSON.stringify(request.tags) },
      { key: 'ssh-keys', value: `drover:${sshPublicKey}` },
      { key: 'startup-script', value: initScript },
    ]);
    expect(body.scheduling).toEqual({ provisioningModel: 'STANDARD', automaticRestart: true, onHostMaintenance: 'MIGRATE' });
    // toMatchObject: the client's serializer adds empty maps (labels, resourceManagerTags) of its own.
    expect(body.disks).toMatchObject([
      {
        boot: true,
        autoDelete: true,
        initializeParams: {
          sourceImage: 'projects/debian-cloud/global/images/family/debian-12',
          diskSizeGb: '20',
          diskType: 'zones/us-central1-a/diskTypes/pd-balanced',
          labels: body.labels,
        },
      },
      {
        type: 'PERSISTENT',
        autoDelete: true,
        deviceName: 'drover-scratch',
        initializeParams: { diskType: 'zones/us-central1-a/diskTypes/pd-balanced', diskSizeGb: '50', labels: body.labels },
      },
    ]);
    expect(body.networkInterfaces).toEqual([
      {
        network: 'global/networks/default',
        subnetwork: 'regions/us-central1/subnetworks/drover',
        accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }],
      },
    ]);
    expect(body.serviceAccounts).toEqual([{ email: 'drover-worker@p.iam.gserviceaccount.com', scopes: ['https://www.googleapis.com/auth/cloud-platform'] }]);

    // Three polls of the zone operation, each after the configured interval on the injected clock.
    expect(fake.requests.filter((r) => r.call === 'operation').map((r) => r.path)).toEqual(
      Array(3).fill('/compute/v1/projects/p/zones/us-central1-a/operations/operation-1'),
    );
    expect(clock.delays).toEqual([2000, 2000, 2000]);
    expect(instance).toEqual({
      id: 'us-central1-a/drover-0b6f3c4e-8d1a-4f7e-9c2b-5a4d3e2f1a0b',
      providerType: 'n2-standard-4',
      address: '203.0.113.1',
      tags: request.tags,
    });
  });

  it('a repeated insert with the same create token makes one instance', async () => {
    const request = createRequest();
    const first = await driver.create(request);
    const second = await driver.create(request);
    expect(second.id).toBe(first.id);
    expect(fake.instances.size).toBe(1);
    expect(fake.requests.filter((r) => r.call === 'insert').map((r) => r.query.requestId)).toEqual([
      request.tags[tagKeys.createToken],
      request.tags[tagKeys.createToken],
    ]);
  });

  it('a preemptible type is a SPOT VM that deletes itself when preempted; a GPU type takes its launch override', async () => {
    await driver.create(createRequest(spot));
    expect(bodyOf('insert', 0).scheduling).toEqual({
      provisioningModel: 'SPOT',
      instanceTerminationAction: 'DELETE',
      automaticRestart: false,
      onHostMaintenance: 'TERMINATE',
    });
    expect(bodyOf('insert', 0).disks).toHaveLength(1); // scratchGiB 0: boot disk only

    const instance = await driver.create(createRequest(gpu));
    expect(instance.id).toMatch(/^us-central1-c\/drover-/);
    const body = bodyOf('insert', 1);
    expect(body.guestAccelerators).toEqual([{ acceleratorType: 'zones/us-central1-c/acceleratorTypes/nvidia-tesla-t4', acceleratorCount: 2 }]);
    expect(body.scheduling.onHostMaintenance).toBe('TERMINATE');
    // 400 GiB of scratch on local SSD: two 375 GiB partitions.
    expect(body.disks.slice(1)).toMatchObject([0, 1].map((i) => ({
      type: 'SCRATCH',
      interface: 'NVME',
      autoDelete: true,
      deviceName: `drover-scratch-${i}`,
      initializeParams: { diskType: 'zones/us-central1-c/diskTypes/local-ssd' },
    })));
  });

  it('creates from a launch config: its zone (in the URL and every zonal part), image, subnetwork, and extra over the type\'s launch', async () => {
    const request = {
      ...createRequest(gpu),
      launchConfig: launchConfig('gpu', {
        zone: 'us-central1-f',
        region: 'us-central1',
        image: 'projects/p/global/images/drover-gpu-2',
        subnet: 'regions/us-central1/subnetworks/gpu',
        extra: { bootDiskGiB: 100, scratchDiskType: 'pd-ssd', acceleratorType: 'nvidia-l4' },
      }),
    };
    const instance = await driver.create(request);

    expect(instance.id).toMatch(/^us-central1-f\/drover-/);
    expect(fake.requests.find((r) => r.call === 'insert')?.path).toBe('/compute/v1/projects/p/zones/us-central1-f/instances');
    const body = bodyOf('insert');
    expect(body.machineType).toBe('zones/us-central1-f/machineTypes/n1-standard-8');
    expect(body.disks).toMatchObject([
      {
        boot: true,
        initializeParams: { sourceImage: 'projects/p/global/images/drover-gpu-2', diskSizeGb: '100', diskType: 'zones/us-central1-f/diskTypes/pd-balanced' },
      },
      { type: 'PERSISTENT', deviceName: 'drover-scratch', initializeParams: { diskType: 'zones/us-central1-f/diskTypes/pd-ssd', diskSizeGb: '400' } },
    ]);
    expect(body.networkInterfaces).toMatchObject([{ network: 'global/networks/default', subnetwork: 'regions/us-central1/subnetworks/gpu' }]);
    expect(body.guestAccelerators).toEqual([{ acceleratorType: 'zones/us-central1-f/acceleratorTypes/nvidia-l4', acceleratorCount: 2 }]);
    expect(fake.requests.filter((r) => r.call === 'operation').every((r) => r.path.startsWith('/compute/v1/projects/p/zones/us-central1-f/operations/'))).toBe(true);
  });

  it('leaves what a launch config does not set to the type\'s launch and the section', async () => {
    await driver.create({ ...createRequest(gpu), launchConfig: launchConfig('gpu', { image: 'projects/p/global/images/other' }) });
    const body = bodyOf('insert');
    // The gpu type's launch override puts it in us-central1-c with local SSD; the section gives the subnetwork.
    expect(body.machineType).toBe('zones/us-central1-c/machineTypes/n1-standard-8');
    expect(body.disks).toMatchObject([{ initializeParams: { sourceImage: 'projects/p/global/images/other', diskSizeGb: '20' } }, { type: 'SCRATCH' }, { type: 'SCRATCH' }]);
    expect(body.networkInterfaces).toMatchObject([{ subnetwork: 'regions/us-central1/subnetworks/drover' }]);
  });

  it('a capacity refusal of a launch config create names the launch config\'s zone', async () => {
    fake.failNextOperation('insert', [{ code: 'ZONE_RESOURCE_POOL_EXHAUSTED', message: 'no resources' }]);
    const error = await rejection(driver.create({ ...createRequest(), launchConfig: launchConfig('standard', { zone: 'us-central1-b' }) }));
    expect(error).toBeInstanceOf(CapacityError);
    expect(error).toMatchObject({ instanceType: 'standard', zone: 'us-central1-b' });
  });

  it('refuses, before calling GCE, a launch config whose zone is not in its region or whose extra is no launch override', async () => {
    const outside = await rejection(driver.create({ ...createRequest(), launchConfig: launchConfig('standard', { region: 'europe-west4' }) }));
    expect(outside).toBeInstanceOf(CloudError);
    expect((outside as Error).message).toMatch(/zone us-central1-a is not in its region europe-west4/);
    const badExtra = await rejection(driver.create({ ...createRequest(), launchConfig: launchConfig('standard', { extra: { bootDiskGiB: 1 } }) }));
    expect(badExtra).toBeInstanceOf(CloudError);
    expect((badExtra as Error).message).toMatch(/launch config standard-lc: extra\.bootDiskGiB/);
    expect(fake.requests.filter((r) => r.call === 'insert')).toEqual([]);
  });

  it('lists by label on the server, every page, terminated instances included, tags read back exactly', async () => {
    const note = 'Größe: a/b=c ' + 'x'.repeat(187);
    const mine = [];
    for (let i = 0; i < 3; i++) mine.push(await driver.create(createRequest(standard, undefined, { 'drover-note': note })));
    await driver.create({ ...createRequest(), tags: { ...createRequest().tags, [tagKeys.pool]: 'other' } });
    const terminated = fake.instances.get(mine[2]?.id ?? '');
    if (terminated) terminated.status = 'TERMINATED';
    fake.pageSize = 2;

    const listed = await driver.list({ [tagKeys.pool]: 'p1' });

    const lists = fake.requests.filter((r) => r.call === 'list');
    expect(lists.map((r) => r.query)).toEqual([
      { filter: '(labels.drover-pool = "p1")' },
      { filter: '(labels.drover-pool = "p1")', pageToken: '2' },
    ]);
    expect(listed.map((instance) => instance.id)).toEqual(mine.map((instance) => instance.id));
    expect(listed[0]?.tags).toEqual(mine[0]?.tags);
    expect(listed[0]?.tags['drover-note']).toBe(note);
    expect(note).toHaveLength(200);
  });

  it('filters exactly on tags that fit no label, after the server filtered on those that do', async () => {
    const long = 'Z'.repeat(100);
    const a = await driver.create(createRequest(standard, undefined, { 'drover-note': long }));
    await driver.create(createRequest(standard, undefined, { 'drover-note': 'short' }));
    const listed = await driver.list({ [tagKeys.pool]: 'p1', 'drover-note': long });
    expect(fake.requests.filter((r) => r.call === 'list').map((r) => r.query.filter)).toEqual(['(labels.drover-pool = "p1")']);
    expect(listed.map((instance) => instance.id)).toEqual([a.id]);
  });

  it('a listing with a zone it could not read throws rather than answer partially', async () => {
    await driver.create(createRequest());
    fake.unreachableZones = ['europe-west4-a'];
    const error = await rejection(driver.list({ [tagKeys.pool]: 'p1' }));
    expect(error).toBeInstanceOf(CloudError);
    expect((error as Error).message).toContain('zones/europe-west4-a');
  });

  it('destroys with a delete; an instance already gone (404) counts as destroyed', async () => {
    const instance = await driver.create(createRequest());
    await driver.destroy(instance.id);
    expect(fake.requests.filter((r) => r.call === 'delete').map((r) => `${r.method} ${r.path}`)).toEqual([
      `DELETE /compute/v1/projects/p/zones/${instance.id.replace('/', '/instances/')}`,
    ]);
    expect(fake.instances.has(instance.id)).toBe(false);
    await expect(driver.destroy(instance.id)).resolves.toBeUndefined();
    await expect(driver.destroy('not-an-id')).rejects.toThrow(/not an instance id/);
  });

  it('setTags writes the merged tags with the fingerprints it read: metadata item, then labels', async () => {
    const instance = await driver.create(createRequest(standard, undefined, { [tagKeys.idleBehavior]: 'run' }));
    const before = fake.instances.get(instance.id);
    const labelFingerprint = before?.labelFingerprint;
    const metadataFingerprint = before?.metadata.fingerprint;

    await driver.setTags(instance.id, { [tagKeys.idleBehavior]: 'Hold/Drain' });

    expect(bodyOf<{ fingerprint: string }>('setMetadata').fingerprint).toBe(metadataFingerprint);
    expect(bodyOf<unknown>('setLabels')).toEqual({
      labels: { ...before?.labels, 'drover-idle-behavior': '_48old_2f_44rain' },
      labelFingerprint,
    });
    const [listed] = await driver.list({ [tagKeys.pool]: 'p1', [tagKeys.idleBehavior]: 'Hold/Drain' });
    expect(listed?.tags).toEqual({ ...instance.tags, [tagKeys.idleBehavior]: 'Hold/Drain' });
    // The ssh key and startup script stay in the metadata.
    expect(fake.instances.get(instance.id)?.metadata.items.map((item) => item.key)).toEqual(['ssh-keys', 'startup-script', tagsMetadataKey]);
  });

  it('setTags re-reads and writes again once when the labels changed under it (412), keeping the other change', async () => {
    const instance = await driver.create(createRequest());
    fake.beforeNext('setLabels', () => {
      const changed = fake.instances.get(instance.id);
      if (!changed) return;
      changed.labels = { ...changed.labels, env: 'prod' };
      changed.labelFingerprint = 'changed-elsewhere';
    });

    await driver.setTags(instance.id, { [tagKeys.idleBehavior]: 'drain' });

    expect(fake.requests.filter((r) => r.call === 'get')).toHaveLength(3); // after the create, and one per attempt
    expect(fake.requests.filter((r) => r.call === 'setLabels').map((r) => (r.body as { labelFingerprint: string }).labelFingerprint)[1]).toBe('changed-elsewhere');
    expect(fake.instances.get(instance.id)?.labels).toMatchObject({ env: 'prod', 'drover-idle-behavior': 'drain' });
  });

  it('setTags gives up after a second conflict, with an error of its own class', async () => {
    const instance = await driver.create(createRequest());
    const conflict = { error: { code: 412, message: 'Labels fingerprint either invalid or resource labels have changed', errors: [{ reason: 'conditionNotMet' }] } };
    fake.failNext('setLabels', 412, conflict);
    fake.beforeNext('get', () => fake.beforeNext('get', () => fake.failNext('setLabels', 412, conflict)));
    const error = await rejection(driver.setTags(instance.id, { [tagKeys.idleBehavior]: 'hold' }));
    expect(error).toBeInstanceOf(GceFingerprintError);
    expect(error).toBeInstanceOf(CloudError);
  });

  it('a quota refusal delivered by the zone operation is a QuotaError, and no instance is made', async () => {
    fake.pollsUntilDone = 2;
    fake.failNextOperation('insert', [{ code: 'QUOTA_EXCEEDED', message: "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1." }], 403);
    const error = await rejection(driver.create(createRequest()));
    expect(error).toBeInstanceOf(QuotaError);
    expect((error as Error).message).toBe(
      "GCE create of n2-standard-4 (standard) in us-central1-a: Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1. (403 QUOTA_EXCEEDED)",
    );
    expect(fake.requests.filter((r) => r.call === 'operation')).toHaveLength(2);
    expect(fake.instances.size).toBe(0);
  });

  it.each(['ZONE_RESOURCE_POOL_EXHAUSTED', 'ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS'])(
    '%s from the operation is a CapacityError naming the type and the zone',
    async (code) => {
      fake.failNextOperation('insert', [{ code, message: "The zone 'projects/p/zones/us-central1-c' does not have enough resources available" }]);
      const error = await rejection(driver.create(createRequest(gpu)));
      expect(error).toBeInstanceOf(CapacityError);
      expect(error).toMatchObject({ instanceType: 'gpu', zone: 'us-central1-c' });
    },
  );

  it('rate limits on the call (429, or 403 rateLimitExceeded) are RateLimitErrors', async () => {
    fake.failNext('insert', 429, { error: { code: 429, message: 'Too Many Requests', status: 'RESOURCE_EXHAUSTED' } });
    expect(await rejection(driver.create(createRequest()))).toBeInstanceOf(RateLimitError);
    fake.failNext('list', 403, {
      error: { code: 403, message: "Quota exceeded for quota group 'ReadGroup'", errors: [{ domain: 'usageLimits', reason: 'rateLimitExceeded' }] },
    });
    expect(await rejection(driver.list({ [tagKeys.pool]: 'p1' }))).toBeInstanceOf(RateLimitError);
  });

  it('refused credentials (401) and a missing permission (403) are CredentialsErrors', async () => {
    fake.failNext('insert', 403, {
      error: { code: 403, message: "Required 'compute.instances.create' permission for 'projects/p'", errors: [{ reason: 'forbidden' }] },
    });
    const forbidden = await rejection(driver.create(createRequest()));
    expect(forbidden).toBeInstanceOf(CredentialsError);
    expect((forbidden as Error).message).toMatch(/compute\.instances\.create.*roles\/compute\.instanceAdmin\.v1/);

    const wrongToken = makeDriver({}, fakeAuthClient('expired-token'));
    expect(await rejection(wrongToken.list({}))).toBeInstanceOf(CredentialsError);
    await wrongToken.close();
  });

  it('without application default credentials every call is a CredentialsError that says what to set, and nothing is sent', async () => {
    vi.stubEnv('GOOGLE_APPLICATION_CREDENTIALS', '/nonexistent/drover-key.json');
    try {
      const noCredentials = makeDriver({}, null);
      const error = await rejection(noCredentials.list({ [tagKeys.pool]: 'p1' }));
      expect(error).toBeInstanceOf(CredentialsError);
      expect((error as Error).message).toMatch(/\/nonexistent\/drover-key\.json.*set GOOGLE_APPLICATION_CREDENTIALS/);
      expect(await rejection(noCredentials.destroy('us-central1-a/x'))).toBeInstanceOf(CredentialsError);
      expect(fake.requests).toHaveLength(0);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('any other error is a plain CloudError carrying the code', async () => {
    fake.failNextOperation('insert', [{ code: 'INVALID_FIELD_VALUE', message: "Invalid value for field 'resource.machineType'" }], 400);
    const error = await rejection(driver.create(createRequest()));
    expect(error?.constructor).toBe(CloudError);
    expect((error as Error).message).toContain('(400 INVALID_FIELD_VALUE)');
  });

  it('an operation that never finishes fails at operationTimeout on the injected clock', async () => {
    driver = makeDriver({ operationPollInterval: '5s', operationTimeout: '30s' });
    fake.pollsUntilDone = Infinity;
    const error = await rejection(driver.create(createRequest()));
    expect(error).toBeInstanceOf(CloudError);
    expect((error as Error).message).toMatch(/operation operation-\d+ not done after 30s/);
    expect(clock.delays).toEqual(Array(6).fill(5000));
  });
});

describe('the GCE error table', () => {
  const context = { what: 'create', project: 'p', zone: 'us-central1-a', instanceType: 'standard' };
  const classOf = { quota: QuotaError, capacity: CapacityError, rateLimit: RateLimitError, credentials: CredentialsError, notFound: GceNotFoundError, fingerprint: GceFingerprintError };

  it('maps each code of each row to its class, whatever the HTTP status', () => {
    for (const rule of gceErrorTable) {
      for (const code of rule.codes) {
        expect(toCloudError({ httpStatus: 403, codes: [code], message: code }, context), code).toBeInstanceOf(classOf[rule.outcome]);
      }
      for (const httpStatus of rule.httpStatuses) {
        expect(toCloudError({ httpStatus, codes: [], message: '' }, context), String(httpStatus)).toBeInstanceOf(classOf[rule.outcome]);
      }
    }
  });

  it('reads google-gax errors too: the RPC code and the ErrorInfo reason', () => {
    const gaxError = Object.assign(new Error('Quota exceeded'), { code: 8, reason: 'RATE_LIMIT_EXCEEDED' });
    expect(faultOfCall(gaxError)).toEqual({ httpStatus: 429, codes: ['RATE_LIMIT_EXCEEDED'], message: 'Quota exceeded' });
    const unreachable = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(toCloudError(faultOfCall(unreachable), context).constructor).toBe(CloudError);
  });
});

describe('GCE settings', () => {
  it('names the key of a bad value, and finds launch overrides for unknown types', () => {
    const result = gceSettingsSchema.safeParse({ project: 'p', zones: ['us-central1'], image: 'i', operationPollInterval: 'often' });
    expect(result.success).toBe(false);
    expect(result.error?.issues.map((issue) => issue.path.join('.'))).toEqual(['zones.0', 'operationPollInterval']);
    const settings = gceSettingsSchema.parse({ project: 'p', zones: ['us-central1-a'], image: 'i', launch: { gpu: {}, typo: {} } });
    expect(unknownLaunchTypes(settings.launch, ['gpu', 'standard'])).toEqual(['typo']);
  });

  it('config/gce.yml holds a valid cloud.gce section whose launch overrides name its instance types', () => {
    const example = parse(readFileSync(new URL('../config/gce.yml', import.meta.url), 'utf8')) as {
      cloud: { gce: unknown };
      instanceTypes: Record<string, unknown>;
    };
    const settings = gceSettingsSchema.parse(example.cloud.gce);
    expect(settings.operationPollIntervalMs).toBe(2000);
    // As a whole, with its launch configs checked against the gce section (parsing needs no credentials).
    const whole = parseConfig(readFileSync(new URL('../config/gce.yml', import.meta.url), 'utf8'), 'config/gce.yml');
    expect(whole.launchConfigs.filter((launchConfig) => launchConfig.instanceType === 'standard-4').map((launchConfig) => launchConfig.zone)).toEqual([
      'us-central1-a',
      'us-central1-c',
    ]);
    expect(unknownLaunchTypes(settings.launch, Object.keys(example.instanceTypes))).toEqual([]);
  });
});

describeDriverConformance('gce', { refusals: ['quota', 'capacity', 'rateLimit'], idempotentCreates: true }, async () => {
  const fake = await startFakeGceEndpoint();
  const driver = createGceDriver(settingsFor(fake, { launch: {} }), { sshUsername: 'drover', clock: instantClock(), authClient: fakeAuthClient() });
  const refusals = {
    quota: () => fake.failNextOperation('insert', [{ code: 'QUOTA_EXCEEDED', message: 'Quota exceeded' }], 403),
    capacity: () => fake.failNextOperation('insert', [{ code: 'ZONE_RESOURCE_POOL_EXHAUSTED', message: 'no resources' }], 503),
    rateLimit: () => fake.failNext('insert', 403, { error: { code: 403, message: 'Rate Limit Exceeded', errors: [{ reason: 'rateLimitExceeded' }] } }),
  };
  return {
    driver,
    instanceType: standard,
    refuseCreates: async (kind) => {
      refusals[kind]();
      return () => {};
    },
    close: async () => {
      await driver.close();
      await fake.close();
    },
  };
});
