// The GCE driver: Drover's instances as Compute Engine VMs, through @google-cloud/compute's REST
// transport.
// - An instance's id is `<zone>/<name>`; names are `drover-<create token>`.
// - Tags: the whole set in the `drover-tags` metadata item, the ones that fit also as labels
//   (labels.ts), so list filters by label on the server and reads tags back losslessly.
// - list reads every zone of the project (aggregatedList), so instances in a zone the config no
//   longer names are still found and destroyed. It leaves no status out: a TERMINATED, STOPPED or
//   SUSPENDED instance still holds its disks and costs money, so the pool must see it to destroy
//   it; an instance being deleted (STOPPING) stays listed until GCE removes it, and the pool's
//   timeoutShutdown retry covers a delete that did not take.
// - create waits for its zone operation, since capacity and quota refusals arrive there; destroy
//   does not (the listing shows when it took effect); setTags does.

import { randomUUID } from 'node:crypto';
import { InstancesClient, ZoneOperationsClient, protos } from '@google-cloud/compute';
import { GoogleAuth, type AuthClient } from 'google-auth-library';
import { sleep, systemClock, type Clock } from '../../clock.js';
import { formatDuration } from '../../config/duration.js';
import { tagKeys, type CloudDriver, type CloudInstance, type CreateRequest, type InstanceType, type Tags } from '../driver.js';
import { CloudError } from '../errors.js';
import {
  callError,
  faultOfOperation,
  GceFingerprintError,
  GceNotFoundError,
  missingCredentialsError,
  toCloudError,
  type GceCallContext,
} from './errors.js';
import { labelFilter, labelsFor, matchesTags, mergeLabels, readTags, tagsMetadataKey, tagsMetadataValue } from './labels.js';
import { launchFor, type GceLaunch, type GceSettings } from './settings.js';

type Instance = protos.google.cloud.compute.v1.IInstance;
type Operation = protos.google.cloud.compute.v1.IOperation;
type AttachedDisk = protos.google.cloud.compute.v1.IAttachedDisk;
type MetadataItem = protos.google.cloud.compute.v1.IItems;

export interface GceDriverOptions {
  /** The login user the dispatcher's SSH key is installed for (`ssh.username`). */
  sshUsername: string;
  /** Who the driver calls GCE as. Left out: application default credentials, resolved on the first call. */
  authClient?: AuthClient;
  /** Times the operation polls (`operationPollInterval`) and their deadline (`operationTimeout`). */
  clock?: Clock;
}

interface Clients {
  instances: InstancesClient;
  operations: ZoneOperationsClient;
}

/** A local SSD partition's fixed size. */
const localSsdGiB = 375;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function lastSegment(url: string | null | undefined): string {
  return url?.slice(url.lastIndexOf('/') + 1) ?? '';
}

function sameEntries(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => b[key] === a[key]);
}

function isDone(operation: Operation): boolean {
  return operation.status === 'DONE' || operation.status === protos.google.cloud.compute.v1.Operation.Status.DONE;
}

function parseId(id: string): { zone: string; name: string } {
  const slash = id.indexOf('/');
  const zone = id.slice(0, slash);
  const name = id.slice(slash + 1);
  if (slash <= 0 || name === '' || name.includes('/')) {
    throw new CloudError(`GCE: ${JSON.stringify(id)} is not an instance id of the GCE driver (<zone>/<name>)`);
  }
  return { zone, name };
}

/** Client options that point the clients at `apiEndpoint` (tests), or nothing for Google's own. */
function endpointOptions(apiEndpoint: string | null): { apiEndpoint?: string; port?: number; protocol?: string } {
  if (apiEndpoint === null) return {};
  const url = new URL(apiEndpoint);
  const protocol = url.protocol.slice(0, -1);
  return { apiEndpoint: url.hostname, port: url.port ? Number(url.port) : protocol === 'http' ? 80 : 443, protocol };
}

export class GceDriver implements CloudDriver {
  private clients: Promise<Clients> | undefined;
  private readonly clock: Clock;

  constructor(
    private readonly settings: GceSettings,
    private readonly options: GceDriverOptions,
  ) {
    this.clock = options.clock ?? systemClock;
  }

  async create(request: CreateRequest): Promise<CloudInstance> {
    const { instanceType, tags, launchConfig } = request;
    // A launch config's zone, image, subnet (the subnetwork) and extra override fields go over the type's launch.
    let launch: GceLaunch;
    try {
      launch = launchFor(this.settings, instanceType.name, launchConfig);
    } catch (error) {
      throw new CloudError(`GCE create of ${instanceType.providerType} (${instanceType.name}): ${(error as Error).message}`, { cause: error });
    }
    const { project } = this.settings;
    const { zone } = launch;
    // The create token doubles as the insert's requestId, so GCE runs a repeated insert once.
    const token = tags[tagKeys.createToken];
    const requestId = token !== undefined && uuidPattern.test(token) ? token.toLowerCase() : randomUUID();
    const name = `drover-${requestId}`;
    const context: GceCallContext = {
      what: `create of ${instanceType.providerType} (${instanceType.name}) in ${zone}`,
      project,
      zone,
      instanceType: instanceType.name,
    };
    const { instances } = await this.connect();
    const [insert] = await this.call(context, () =>
      instances.insert({ project, zone, requestId, instanceResource: this.instanceResource(name, request, launch) }, {}),
    );
    await this.waitFor(insert.latestResponse as Operation, zone, context);
    try {
      const [created] = await instances.get({ project, zone, instance: name });
      return this.toCloudInstance(created);
    } catch {
      // The instance exists, so the create succeeded; its address comes with the next listing.
      return { id: `${zone}/${name}`, providerType: instanceType.providerType, address: null, tags: { ...tags } };
    }
  }

  async list(tagFilter: Tags): Promise<CloudInstance[]> {
    const { project } = this.settings;
    const context: GceCallContext = { what: 'list', project };
    const { instances } = await this.connect();
    const filter = labelFilter(tagFilter);
    const found: CloudInstance[] = [];
    await this.call(context, async () => {
      const scopes = instances.aggregatedListAsync({ project, ...(filter ? { filter } : {}) }, { autoPaginate: false });
      for await (const [scope, scoped] of scopes) {
        if (scoped.warning?.code === 'UNREACHABLE') {
          throw new CloudError(`GCE list: ${scope} could not be read (${scoped.warning.message ?? 'unreachable'}); no partial listing is returned`);
        }
        for (const instance of scoped.instances ?? []) {
          const cloudInstance = this.toCloudInstance(instance);
          // The server filtered on the tags that fit labels; this checks them all, exactly.
          if (matchesTags(cloudInstance.tags, tagFilter)) found.push(cloudInstance);
        }
      }
    });
    return found;
  }

  async destroy(id: string): Promise<void> {
    const { zone, name } = parseId(id);
    const { project } = this.settings;
    const context: GceCallContext = { what: `destroy of ${id}`, project, zone };
    const { instances } = await this.connect();
    try {
      const [deletion] = await this.call(context, () => instances.delete({ project, zone, instance: name }, {}));
      const operation = deletion.latestResponse as Operation;
      const fault = isDone(operation) ? faultOfOperation(operation) : undefined;
      if (fault) throw toCloudError(fault, context);
    } catch (error) {
      if (error instanceof GceNotFoundError) return;
      throw error;
    }
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    const { zone, name } = parseId(id);
    const { project } = this.settings;
    const context: GceCallContext = { what: `setTags of ${id}`, project, zone };
    const { instances } = await this.connect();
    // A fingerprint conflict means someone else changed the instance between the read and the
    // write: read it again and write once more.
    for (let attempt = 1; ; attempt++) {
      const [instance] = await this.call(context, () => instances.get({ project, zone, instance: name }));
      try {
        await this.writeTags(instance, zone, name, tags, context);
        return;
      } catch (error) {
        if (!(error instanceof GceFingerprintError) || attempt === 2) throw error;
      }
    }
  }

  async close(): Promise<void> {
    const clients = this.clients;
    this.clients = undefined;
    if (!clients) return;
    const resolved = await clients.catch(() => undefined);
    await Promise.all([resolved?.instances.close(), resolved?.operations.close()]);
  }

  /** Finds the credentials now, so a daemon without any stops at start-up with CredentialsError rather than at its first call. */
  async verifyCredentials(): Promise<void> {
    await this.connect();
  }

  // ---- internals ----

  /** The clients, made once credentials are found; a failure is reported and tried again on the next call. */
  private connect(): Promise<Clients> {
    this.clients ??= this.makeClients().catch((error: unknown) => {
      this.clients = undefined;
      throw error;
    });
    return this.clients;
  }

  private async makeClients(): Promise<Clients> {
    let authClient: AuthClient;
    try {
      authClient = this.options.authClient ?? (await new GoogleAuth({ scopes: InstancesClient.scopes }).getClient());
    } catch (error) {
      throw missingCredentialsError(error, this.settings.project);
    }
    // Resolved before the clients exist: a client left to find credentials itself reports a
    // failure to do so as an unhandled rejection as well as to the call.
    const options = { ...endpointOptions(this.settings.apiEndpoint), fallback: true, authClient };
    return { instances: new InstancesClient(options), operations: new ZoneOperationsClient(options) };
  }

  private async call<T>(context: GceCallContext, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw error instanceof CloudError ? error : callError(error, context);
    }
  }

  /** Polls the zone operation until it is done; its error, if any, as Drover's error class. */
  private async waitFor(operation: Operation, zone: string, context: GceCallContext): Promise<void> {
    const { operationPollIntervalMs, operationTimeoutMs, project } = this.settings;
    const { operations } = await this.connect();
    const deadline = this.clock.now() + operationTimeoutMs;
    let current = operation;
    while (!isDone(current)) {
      if (this.clock.now() >= deadline) {
        throw new CloudError(`GCE ${context.what}: operation ${current.name ?? '?'} not done after ${formatDuration(operationTimeoutMs)}`);
      }
      await sleep(this.clock, operationPollIntervalMs);
      [current] = await this.call(context, () => operations.get({ project, zone, operation: current.name ?? '' }));
    }
    const fault = faultOfOperation(current);
    if (fault) throw toCloudError(fault, context);
  }

  private instanceResource(name: string, request: CreateRequest, launch: GceLaunch): Instance {
    const { instanceType, tags, initScript, sshPublicKey } = request;
    const { zone } = launch;
    const labels = labelsFor(tags);
    const items: MetadataItem[] = [{ key: tagsMetadataKey, value: tagsMetadataValue(tags) }];
    if (sshPublicKey) items.push({ key: 'ssh-keys', value: `${this.options.sshUsername}:${sshPublicKey.trim()}` });
    if (initScript) items.push({ key: 'startup-script', value: initScript });
    const gpus = launch.acceleratorType !== null && instanceType.gpus > 0;
    const { serviceAccount, externalIp, network } = this.settings;
    return {
      name,
      machineType: `zones/${zone}/machineTypes/${instanceType.providerType}`,
      labels,
      metadata: { items },
      disks: [
        {
          boot: true,
          autoDelete: true,
          initializeParams: {
            sourceImage: launch.image,
            diskSizeGb: launch.bootDiskGiB,
            diskType: `zones/${zone}/diskTypes/${this.settings.bootDiskType}`,
            labels,
          },
        },
        ...this.scratchDisks(instanceType, launch, labels),
      ],
      networkInterfaces: [
        {
          network,
          ...(launch.subnetwork !== null ? { subnetwork: launch.subnetwork } : {}),
          accessConfigs: externalIp ? [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }] : [],
        },
      ],
      serviceAccounts: serviceAccount ? [{ email: serviceAccount.email, scopes: serviceAccount.scopes }] : [],
      guestAccelerators: gpus ? [{ acceleratorType: `zones/${zone}/acceleratorTypes/${launch.acceleratorType}`, acceleratorCount: instanceType.gpus }] : [],
      scheduling: instanceType.preemptible
        ? // A preempted SPOT VM deletes itself rather than stopping and keeping its disks.
          { provisioningModel: 'SPOT', instanceTerminationAction: 'DELETE', automaticRestart: false, onHostMaintenance: 'TERMINATE' }
        : // VMs with GPUs cannot live-migrate.
          { provisioningModel: 'STANDARD', automaticRestart: true, onHostMaintenance: gpus ? 'TERMINATE' : 'MIGRATE' },
    };
  }

  /** The disk(s) for the type's scratch space: local SSD partitions of 375 GiB, or one persistent disk. */
  private scratchDisks(instanceType: InstanceType, launch: GceLaunch, labels: Record<string, string>): AttachedDisk[] {
    const { scratchGiB } = instanceType;
    if (scratchGiB <= 0) return [];
    const diskType = `zones/${launch.zone}/diskTypes/${launch.scratchDiskType}`;
    if (launch.scratchDiskType === 'local-ssd') {
      return Array.from({ length: Math.ceil(scratchGiB / localSsdGiB) }, (_, i) => ({
        type: 'SCRATCH',
        interface: 'NVME',
        autoDelete: true,
        deviceName: `drover-scratch-${i}`,
        initializeParams: { diskType },
      }));
    }
    return [
      {
        type: 'PERSISTENT',
        autoDelete: true,
        deviceName: 'drover-scratch',
        initializeParams: { diskType, diskSizeGb: scratchGiB, labels },
      },
    ];
  }

  /** Writes the merged tags: the metadata item first (what is read back), then the labels. */
  private async writeTags(instance: Instance, zone: string, name: string, changed: Tags, context: GceCallContext): Promise<void> {
    const { project } = this.settings;
    const { instances } = await this.connect();
    const items = instance.metadata?.items ?? [];
    const labels = instance.labels ?? {};
    const merged = { ...readTags(items, labels), ...changed };

    const value = tagsMetadataValue(merged);
    if (items.find((item) => item.key === tagsMetadataKey)?.value !== value) {
      const metadataResource = {
        fingerprint: instance.metadata?.fingerprint ?? null,
        items: [...items.filter((item) => item.key !== tagsMetadataKey), { key: tagsMetadataKey, value }],
      };
      const [update] = await this.call(context, () => instances.setMetadata({ project, zone, instance: name, metadataResource }, {}));
      await this.waitFor(update.latestResponse as Operation, zone, context);
    }

    const newLabels = mergeLabels(labels, changed);
    if (!sameEntries(newLabels, labels)) {
      const instancesSetLabelsRequestResource = { labels: newLabels, labelFingerprint: instance.labelFingerprint ?? null };
      const [update] = await this.call(context, () =>
        instances.setLabels({ project, zone, instance: name, instancesSetLabelsRequestResource }, {}),
      );
      await this.waitFor(update.latestResponse as Operation, zone, context);
    }
  }

  private toCloudInstance(instance: Instance): CloudInstance {
    const zone = lastSegment(instance.zone);
    const nic = instance.networkInterfaces?.[0];
    const address = this.settings.externalIp ? nic?.accessConfigs?.[0]?.natIP : nic?.networkIP;
    return {
      id: `${zone}/${instance.name ?? ''}`,
      providerType: lastSegment(instance.machineType),
      address: address || null,
      tags: readTags(instance.metadata?.items ?? [], instance.labels ?? {}),
    };
  }
}

export function createGceDriver(settings: GceSettings, options: GceDriverOptions): GceDriver {
  return new GceDriver(settings, options);
}
