// The EC2 driver: Drover's CloudDriver on RunInstances, DescribeInstances, TerminateInstances and
// CreateTags. Credentials come from the SDK's default chain unless the caller passes its own.

import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type BlockDeviceMapping,
  type EC2ClientConfig,
  type Instance,
  type RunInstancesCommandInput,
  type Tag,
} from '@aws-sdk/client-ec2';
import { tagKeys, type CloudDriver, type CloudInstance, type CreateRequest, type Tags } from '../driver.js';
import { CapacityError, CloudError } from '../errors.js';
import { Ec2NotFoundError, toCloudError, type Ec2CallContext } from './errors.js';
import { ec2LaunchFor, type Ec2Launch, type Ec2LaunchSettings, type Ec2Settings } from './settings.js';

export interface Ec2DriverOptions {
  /**
   * Merged over the client config built from the settings: e.g. `credentials` (default: the SDK's
   * default chain), `maxAttempts` or `retryStrategy` (default: the SDK's, 3 attempts).
   */
  clientConfig?: Partial<EC2ClientConfig>;
}

// Instances in these states are gone or going, and never reported by `list`.
const goneStates = new Set(['shutting-down', 'terminated']);
const liveStates = ['pending', 'running', 'stopping', 'stopped'];
// The most DescribeInstances returns in one page.
const pageSize = 1000;

/** The instance from its DescribeInstances / RunInstances record. */
function toCloudInstance(instance: Instance, fallbackTags: Tags = {}): CloudInstance {
  if (!instance.InstanceId) throw new CloudError('ec2: an instance record without InstanceId');
  return {
    id: instance.InstanceId,
    providerType: instance.InstanceType ?? '',
    address: instance.PrivateIpAddress ?? null,
    tags: { ...fallbackTags, ...fromEc2Tags(instance.Tags) },
  };
}

function fromEc2Tags(tags: Tag[] | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const { Key, Value } of tags ?? []) if (Key !== undefined) result[Key] = Value ?? '';
  return result;
}

function toEc2Tags(tags: Tags): Tag[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

function withoutSecret(tags: Tags): Tags {
  return Object.fromEntries(Object.entries(tags).filter(([key]) => key !== tagKeys.secret));
}

function blockDeviceMappings(launch: Ec2LaunchSettings, scratchGiB: number): BlockDeviceMapping[] {
  const mappings: BlockDeviceMapping[] = [];
  if (launch.rootVolumeGiB !== null) {
    mappings.push({ DeviceName: launch.rootDeviceName, Ebs: { VolumeSize: launch.rootVolumeGiB, DeleteOnTermination: true } });
  }
  if (launch.scratch && scratchGiB > 0) {
    mappings.push({
      DeviceName: launch.scratch.deviceName,
      Ebs: { VolumeSize: scratchGiB, VolumeType: launch.scratch.volumeType, DeleteOnTermination: true },
    });
  }
  return mappings;
}

export class Ec2Driver implements CloudDriver {
  constructor(
    private readonly settings: Ec2Settings,
    private readonly client: EC2Client,
  ) {}

  /**
   * One RunInstances per subnet, in order, until one is not out of capacity. The first uses the
   * create token as ClientToken, so a retried call (by the SDK or anyone) returns the same
   * instance; a later subnet gets `<token>.<n>`, since EC2 refuses one token with other parameters.
   * A create from a launch config uses its image, its one subnet, or its zone (placed there, in the
   * zone's default subnet, when it names no subnet), and its `extra` over the type's settings; its
   * capacity errors name its zone.
   */
  async create(request: CreateRequest): Promise<CloudInstance> {
    const token = request.tags[tagKeys.createToken];
    if (!token) throw new CloudError(`ec2 RunInstances: the request has no ${tagKeys.createToken} tag, so it could not be retried safely`);
    const { instanceType, launchConfig } = request;
    let launch: Ec2Launch;
    try {
      launch = ec2LaunchFor(this.settings, instanceType.name, launchConfig);
    } catch (error) {
      throw new CloudError(`ec2 RunInstances ${instanceType.providerType} (instance type ${instanceType.name}): ${(error as Error).message}`, { cause: error });
    }
    const zone = launchConfig?.zone ?? undefined;
    // null: no SubnetId, placed in launch.availabilityZone.
    const subnets: (string | null)[] = launch.availabilityZone !== null ? [null] : launch.subnetIds;
    const capacityErrors: CapacityError[] = [];
    for (const [index, subnetId] of subnets.entries()) {
      const input = this.runInstancesInput(request, launch, subnetId, index === 0 ? token : `${token}.${index}`);
      const context: Ec2CallContext = {
        action: 'RunInstances',
        instanceType: instanceType.name,
        providerType: instanceType.providerType,
        ...(subnetId !== null && { subnetId }),
        ...(zone !== undefined && { zone }),
      };
      try {
        const output = await this.client.send(new RunInstancesCommand(input));
        const instance = output.Instances?.[0];
        if (!instance) throw new CloudError(`ec2 RunInstances in ${subnetId ?? launch.availabilityZone}: the answer named no instance`);
        return toCloudInstance(instance, request.tags);
      } catch (error) {
        const cloudError = toCloudError(error, context);
        // Only an answer that says no instance was made lets another subnet be tried.
        if (!(cloudError instanceof CapacityError)) throw cloudError;
        capacityErrors.push(cloudError);
      }
    }
    const [only, ...more] = capacityErrors;
    if (only && more.length === 0) throw only;
    // For every type only when no subnet had room for any type; otherwise another type may fit.
    const forThisType = capacityErrors.some((error) => error.instanceType !== undefined);
    throw new CapacityError(
      `ec2 RunInstances ${instanceType.providerType} (instance type ${instanceType.name}): no capacity in any of ${launch.subnetIds.join(', ')}: ${capacityErrors.map((error) => error.message).join('; ')}`,
      forThisType ? instanceType.name : undefined,
      { cause: capacityErrors.at(-1), ...(zone !== undefined && { zone }) },
    );
  }

  async list(tagFilter: Tags): Promise<CloudInstance[]> {
    const filters = [
      ...Object.entries(tagFilter).map(([key, value]) => ({ Name: `tag:${key}`, Values: [value] })),
      { Name: 'instance-state-name', Values: liveStates },
    ];
    const instances: CloudInstance[] = [];
    let nextToken: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new DescribeInstancesCommand({ Filters: filters, MaxResults: pageSize, NextToken: nextToken }));
      } catch (error) {
        throw toCloudError(error, { action: 'DescribeInstances' });
      }
      for (const reservation of page.Reservations ?? []) {
        for (const instance of reservation.Instances ?? []) {
          // Checked here too: the state filter is the server's, and an emulator may ignore it.
          if (!goneStates.has(instance.State?.Name ?? '')) instances.push(toCloudInstance(instance));
        }
      }
      nextToken = page.NextToken || undefined;
    } while (nextToken);
    return instances;
  }

  async destroy(id: string): Promise<void> {
    try {
      await this.client.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    } catch (error) {
      const cloudError = toCloudError(error, { action: 'TerminateInstances', instanceId: id });
      if (!(cloudError instanceof Ec2NotFoundError)) throw cloudError;
      // Already gone is what a destroy asks for, but EC2 also answers NotFound for an instance
      // too new for TerminateInstances to see: only a listing that agrees makes it done.
      const state = await this.stateOf(id);
      if (state !== undefined && !goneStates.has(state)) {
        throw new CloudError(`ec2 TerminateInstances ${id}: EC2 answered NotFound, but DescribeInstances shows it ${state}; not destroyed, to be retried`, {
          cause: cloudError,
        });
      }
    }
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    if (Object.keys(tags).length === 0) return;
    try {
      await this.client.send(new CreateTagsCommand({ Resources: [id], Tags: toEc2Tags(tags) }));
    } catch (error) {
      throw toCloudError(error, { action: 'CreateTags', instanceId: id });
    }
  }

  /**
   * Resolves the credentials the SDK's default chain finds, so a daemon without any stops at
   * start-up (CredentialsError naming what to set) rather than at its first create.
   */
  async verifyCredentials(): Promise<void> {
    try {
      await this.client.config.credentials();
    } catch (error) {
      throw toCloudError(error, { action: 'DescribeInstances' });
    }
  }

  /** The state DescribeInstances reports for `id`, or undefined when it reports no such instance. */
  private async stateOf(id: string): Promise<string | undefined> {
    let page;
    try {
      // By filter, not InstanceIds: an id EC2 does not know is then an empty answer, not an error.
      page = await this.client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'instance-id', Values: [id] }] }));
    } catch (error) {
      throw toCloudError(error, { action: 'DescribeInstances', instanceId: id });
    }
    const instance = page.Reservations?.flatMap((reservation) => reservation.Instances ?? []).find((found) => found.InstanceId === id);
    return instance === undefined ? undefined : (instance.State?.Name ?? 'unknown');
  }

  /** Closes the client's open connections; the driver is not used after. */
  close(): void {
    this.client.destroy();
  }

  private runInstancesInput(request: CreateRequest, launch: Ec2Launch, subnetId: string | null, clientToken: string): RunInstancesCommandInput {
    const { instanceType, tags, initScript } = request;
    const mappings = blockDeviceMappings(launch, instanceType.scratchGiB);
    const profile = launch.iamInstanceProfile;
    return {
      MinCount: 1,
      MaxCount: 1,
      ClientToken: clientToken,
      ImageId: launch.imageId,
      InstanceType: instanceType.providerType as RunInstancesCommandInput['InstanceType'],
      ...(subnetId !== null ? { SubnetId: subnetId } : launch.availabilityZone !== null && { Placement: { AvailabilityZone: launch.availabilityZone } }),
      SecurityGroupIds: launch.securityGroupIds,
      // A VM that powers itself off is terminated, never left stopped (and billed for its disks).
      InstanceInitiatedShutdownBehavior: 'terminate',
      TagSpecifications: [
        { ResourceType: 'instance', Tags: toEc2Tags(tags) },
        // Volumes are described (and snapshotted) under permissions of their own: the secret that
        // proves the VM to the dispatcher stays on the instance alone.
        { ResourceType: 'volume', Tags: toEc2Tags(withoutSecret(tags)) },
      ],
      ...(launch.keyName !== null && { KeyName: launch.keyName }),
      ...(profile !== null && { IamInstanceProfile: profile.startsWith('arn:') ? { Arn: profile } : { Name: profile } }),
      ...(mappings.length > 0 && { BlockDeviceMappings: mappings }),
      ...(instanceType.preemptible && {
        InstanceMarketOptions: { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' } },
      }),
      ...(initScript !== undefined && { UserData: Buffer.from(initScript, 'utf8').toString('base64') }),
    };
  }
}

/** The EC2 driver for `settings`, on a client of its own (region, endpoint, timeouts) unless told otherwise. */
export function createEc2Driver(settings: Ec2Settings, options: Ec2DriverOptions = {}): Ec2Driver {
  // The SDK warns on Node 20 that its releases after January 2027 will need Node 22. Drover pins a
  // release that supports Node 20 (package.json), so the warning is not the operator's to act on,
  // and it would break the one-line start-up errors; an operator who sets the variable wins.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new EC2Client({
    region: settings.region,
    ...(settings.endpoint !== null && { endpoint: settings.endpoint }),
    // A hung call would hold its create, listing or destroy forever; the SDK retries a timed-out
    // one (a RunInstances with the same ClientToken, so still one instance).
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 60_000 },
    ...options.clientConfig,
  });
  return new Ec2Driver(settings, client);
}
