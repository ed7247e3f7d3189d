// Tests of the EC2 driver: first through the real EC2Client with its `send` mocked
// (aws-sdk-client-mock), for request shapes and the error table; then with the real SDK speaking
// HTTP to a small EC2 endpoint on 127.0.0.1, for ClientToken idempotency and paging.

import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  EC2Client,
  EC2ServiceException,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2ClientConfig,
  type Instance,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { tagKeys, type CreateRequest, type LaunchConfig } from '../src/cloud/driver.js';
import { CapacityError, CloudError, CredentialsError, QuotaError, RateLimitError } from '../src/cloud/errors.js';
import { parseConfig } from '../src/config/load.js';
import { createEc2Driver, type Ec2Driver } from '../src/cloud/ec2/ec2-driver.js';
import { Ec2NotFoundError, ec2ErrorClasses } from '../src/cloud/ec2/errors.js';
import { ec2SettingsSchema, type Ec2Settings } from '../src/cloud/ec2/settings.js';
import { unknownLaunchTypes } from '../src/config/schema.js';
import { startFakeEc2Endpoint, type FakeEc2Endpoint } from './support/fake-ec2-endpoint.js';
import { describeDriverConformance } from './support/driver-conformance.js';
import { instanceTypeFixture } from './support/fixtures.js';

const large = instanceTypeFixture('large', { providerType: 'm5.large', scratchGiB: 50 });
const spot = instanceTypeFixture('spot', { providerType: 'm5.xlarge', scratchGiB: 0, preemptible: true });
const gpu = instanceTypeFixture('gpu', { providerType: 'g5.xlarge', scratchGiB: 100, gpus: 1 });
const poolTags = { [tagKeys.pool]: 'p1' };
const fakeCredentials = { accessKeyId: 'AKIDTEST', secretAccessKey: 'not-a-secret' };

function settingsFrom(raw: Record<string, unknown> = {}): Ec2Settings {
  return ec2SettingsSchema.parse({
    region: 'us-east-1',
    imageId: 'ami-0123456789abcdef0',
    subnetId: 'subnet-aaa',
    securityGroupIds: ['sg-111', 'sg-222'],
    iamInstanceProfile: 'drover-worker',
    rootVolumeGiB: 20,
    launch: { gpu: { imageId: 'ami-0gpu', subnetId: ['subnet-gpu'], scratch: null } },
    ...raw,
  });
}

function createRequest(instanceType = large, token = 'token-1'): CreateRequest {
  return {
    instanceType,
    tags: { ...poolTags, [tagKeys.instanceType]: instanceType.name, [tagKeys.createToken]: token, [tagKeys.secret]: 'ab'.repeat(32) },
    initScript: '#!/bin/sh\necho ssh-ed25519 AAAA drover >> /root/.ssh/authorized_keys\n',
  };
}

function launchConfig(fields: Partial<LaunchConfig> = {}): LaunchConfig {
  return { id: 'large-lc', instanceType: 'large', zone: null, region: null, subnet: null, image: null, extra: {}, ...fields };
}

function ec2Instance(id: string, state = 'running', fields: Partial<Instance> = {}): Instance {
  return {
    InstanceId: id,
    InstanceType: 'm5.large',
    PrivateIpAddress: `10.1.0.${id.length}`,
    State: { Name: state as 'running', Code: 16 },
    Tags: [{ Key: tagKeys.pool, Value: 'p1' }],
    ...fields,
  };
}

function awsError(code: string): EC2ServiceException {
  return new EC2ServiceException({ name: code, $fault: 'client', $metadata: { httpStatusCode: 400 }, message: `${code} from the test` });
}

describe('EC2 driver through the SDK client', () => {
  const ec2 = mockClient(EC2Client);
  // maxAttempts 1: a mocked send has no retry middleware anyway, and nothing here is about retries.
  const driver = (raw?: Record<string, unknown>) => createEc2Driver(settingsFrom(raw), { clientConfig: { credentials: fakeCredentials, maxAttempts: 1 } });

  beforeEach(() => ec2.reset());
  afterAll(() => ec2.restore());

  it('creates one instance with the create token as ClientToken, tags on instance and volume (all but the secret), and the init script as user data', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [ec2Instance('i-1', 'pending', { PrivateIpAddress: '10.1.2.3' })] });
    const instance = await driver().create(createRequest());

    expect(instance).toEqual({ id: 'i-1', providerType: 'm5.large', address: '10.1.2.3', tags: { ...createRequest().tags, ...poolTags } });
    const [call, ...others] = ec2.commandCalls(RunInstancesCommand);
    expect(others).toEqual([]);
    const input = call!.args[0].input;
    expect(input).toMatchObject({
      MinCount: 1,
      MaxCount: 1,
      ClientToken: 'token-1',
      ImageId: 'ami-0123456789abcdef0',
      InstanceType: 'm5.large',
      SubnetId: 'subnet-aaa',
      SecurityGroupIds: ['sg-111', 'sg-222'],
      IamInstanceProfile: { Name: 'drover-worker' },
      InstanceInitiatedShutdownBehavior: 'terminate',
      BlockDeviceMappings: [
        { DeviceName: '/dev/xvda', Ebs: { VolumeSize: 20, DeleteOnTermination: true } },
        { DeviceName: '/dev/xvdb', Ebs: { VolumeSize: 50, VolumeType: 'gp3', DeleteOnTermination: true } },
      ],
    });
    const tags = Object.entries(createRequest().tags).map(([Key, Value]) => ({ Key, Value }));
    // A volume's tags are readable by whoever may describe volumes, and the secret proves the VM.
    expect(input.TagSpecifications).toEqual([
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags.filter((tag) => tag.Key !== tagKeys.secret) },
    ]);
    expect(Buffer.from(input.UserData ?? '', 'base64').toString('utf8')).toBe(createRequest().initScript);
    expect(input.InstanceMarketOptions).toBeUndefined();
    expect(input.KeyName).toBeUndefined();
  });

  it('asks for spot when the type is preemptible, and adds no scratch volume for scratchGiB 0', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [ec2Instance('i-2')] });
    await driver({ iamInstanceProfile: 'arn:aws:iam::123456789012:instance-profile/drover', keyName: 'ops' }).create(createRequest(spot));

    const input = ec2.commandCalls(RunInstancesCommand)[0]!.args[0].input;
    expect(input.InstanceMarketOptions).toEqual({
      MarketType: 'spot',
      SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' },
    });
    expect(input.BlockDeviceMappings).toEqual([{ DeviceName: '/dev/xvda', Ebs: { VolumeSize: 20, DeleteOnTermination: true } }]);
    expect(input.IamInstanceProfile).toEqual({ Arn: 'arn:aws:iam::123456789012:instance-profile/drover' });
    expect(input.KeyName).toBe('ops');
  });

  it("merges a type's launch entry over the defaults", async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [ec2Instance('i-3')] });
    await driver().create(createRequest(gpu));

    const input = ec2.commandCalls(RunInstancesCommand)[0]!.args[0].input;
    expect(input).toMatchObject({ ImageId: 'ami-0gpu', SubnetId: 'subnet-gpu', SecurityGroupIds: ['sg-111', 'sg-222'] });
    // scratch: null in its entry: the type's own instance-store disks serve as scratch.
    expect(input.BlockDeviceMappings).toEqual([{ DeviceName: '/dev/xvda', Ebs: { VolumeSize: 20, DeleteOnTermination: true } }]);
  });

  it('creates from a launch config: its image, its one subnet instead of the list, its extra merged over the type\'s settings', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [ec2Instance('i-lc')] });
    const request = {
      ...createRequest(),
      launchConfig: launchConfig({
        zone: 'us-east-1c',
        region: 'us-east-1',
        subnet: 'subnet-ccc',
        image: 'ami-0launch',
        extra: { securityGroupIds: ['sg-333'], rootVolumeGiB: 80, keyName: 'ops', scratch: { volumeType: 'io2' } },
      }),
    };
    await driver({ subnetId: ['subnet-aaa', 'subnet-bbb'] }).create(request);

    const calls = ec2.commandCalls(RunInstancesCommand);
    expect(calls).toHaveLength(1);
    const input = calls[0]!.args[0].input;
    expect(input).toMatchObject({
      ClientToken: 'token-1',
      ImageId: 'ami-0launch',
      SubnetId: 'subnet-ccc',
      SecurityGroupIds: ['sg-333'],
      KeyName: 'ops',
      // Not in extra: the type's own.
      IamInstanceProfile: { Name: 'drover-worker' },
      BlockDeviceMappings: [
        { DeviceName: '/dev/xvda', Ebs: { VolumeSize: 80, DeleteOnTermination: true } },
        { DeviceName: '/dev/xvdb', Ebs: { VolumeSize: 50, VolumeType: 'io2', DeleteOnTermination: true } },
      ],
    });
    // The subnet decides the zone.
    expect(input.Placement).toBeUndefined();
  });

  it('places a launch config with a zone and no subnet in that zone, with no SubnetId, in one call', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [ec2Instance('i-zone')] });
    await driver({ subnetId: ['subnet-aaa', 'subnet-bbb'] }).create({ ...createRequest(), launchConfig: launchConfig({ zone: 'us-east-1d' }) });
    const input = ec2.commandCalls(RunInstancesCommand)[0]!.args[0].input;
    expect(input.Placement).toEqual({ AvailabilityZone: 'us-east-1d' });
    expect(input).not.toHaveProperty('SubnetId');
    expect(input).toMatchObject({ ClientToken: 'token-1', ImageId: 'ami-0123456789abcdef0' });
  });

  it('with a launch config that names neither zone nor subnet, uses the type\'s subnets, in order; extra.subnetId replaces them', async () => {
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-aaa' }).rejects(awsError('InsufficientInstanceCapacity'));
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-bbb' }).resolves({ Instances: [ec2Instance('i-5')] });
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-eee' }).resolves({ Instances: [ec2Instance('i-6')] });
    const twoSubnets = driver({ subnetId: ['subnet-aaa', 'subnet-bbb'] });
    await twoSubnets.create({ ...createRequest(), launchConfig: launchConfig({ image: 'ami-0other' }) });
    expect(ec2.commandCalls(RunInstancesCommand).map((call) => [call.args[0].input.SubnetId, call.args[0].input.ClientToken, call.args[0].input.ImageId])).toEqual([
      ['subnet-aaa', 'token-1', 'ami-0other'],
      ['subnet-bbb', 'token-1.1', 'ami-0other'],
    ]);

    ec2.resetHistory();
    // A zone with subnets of its own in extra: the subnets decide, so no Placement.
    await twoSubnets.create({ ...createRequest(), launchConfig: launchConfig({ zone: 'us-east-1e', extra: { subnetId: ['subnet-eee', 'subnet-fff'] } }) });
    const inputs = ec2.commandCalls(RunInstancesCommand).map((call) => call.args[0].input);
    expect(inputs.map((input) => input.SubnetId)).toEqual(['subnet-eee']);
    expect(inputs[0]?.Placement).toBeUndefined();
  });

  it('gives the capacity error of a launch config create its zone', async () => {
    ec2.on(RunInstancesCommand).rejects(awsError('InsufficientInstanceCapacity'));
    const zoneOnly = await driver().create({ ...createRequest(), launchConfig: launchConfig({ zone: 'us-east-1d' }) }).catch((error: unknown) => error);
    expect(zoneOnly).toBeInstanceOf(CapacityError);
    expect(zoneOnly).toMatchObject({ instanceType: 'large', zone: 'us-east-1d' });
    expect((zoneOnly as Error).message).toMatch(/in us-east-1d: no capacity/);

    const withSubnet = await driver().create({ ...createRequest(), launchConfig: launchConfig({ zone: 'us-east-1c', subnet: 'subnet-ccc' }) }).catch((error: unknown) => error);
    expect(withSubnet).toMatchObject({ instanceType: 'large', zone: 'us-east-1c' });

    ec2.on(RunInstancesCommand).rejects(awsError('InsufficientFreeAddressesInSubnet'));
    const twoSubnets = driver({ subnetId: ['subnet-aaa', 'subnet-bbb'] });
    const noAddresses = await twoSubnets.create({ ...createRequest(), launchConfig: launchConfig({ zone: 'us-east-1a', extra: { subnetId: ['subnet-aaa', 'subnet-bbb'] } }) }).catch((error: unknown) => error);
    expect(noAddresses).toMatchObject({ instanceType: undefined, zone: 'us-east-1a' });

    // Without a launch config zone, the error names none, as before.
    ec2.on(RunInstancesCommand).rejects(awsError('InsufficientInstanceCapacity'));
    expect(await driver().create(createRequest()).catch((error: unknown) => error)).toMatchObject({ zone: undefined });
  });

  it('refuses, before calling EC2, a launch config of another region or with an extra that is no launch override', async () => {
    const otherRegion = await driver().create({ ...createRequest(), launchConfig: launchConfig({ region: 'eu-west-1' }) }).catch((error: unknown) => error);
    expect(otherRegion).toBeInstanceOf(CloudError);
    expect((otherRegion as Error).message).toMatch(/region eu-west-1.*us-east-1 \(cloud\.ec2\.region\)/);
    const badExtra = await driver().create({ ...createRequest(), launchConfig: launchConfig({ extra: { imageId: 'debian' } }) }).catch((error: unknown) => error);
    expect(badExtra).toBeInstanceOf(CloudError);
    expect((badExtra as Error).message).toMatch(/launch config large-lc: extra\.imageId: expected an id such as ami-/);
    expect(ec2.commandCalls(RunInstancesCommand)).toEqual([]);
  });

  it('refuses a create without a create token, before calling EC2', async () => {
    const request = createRequest();
    await expect(driver().create({ ...request, tags: poolTags })).rejects.toThrow(/drover-create-token/);
    expect(ec2.commandCalls(RunInstancesCommand)).toEqual([]);
  });

  it('passes a create on to the next subnet only when one is out of capacity, each subnet with a token of its own', async () => {
    const twoSubnets = driver({ subnetId: ['subnet-aaa', 'subnet-bbb'] });
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-aaa' }).rejects(awsError('InsufficientInstanceCapacity'));
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-bbb' }).resolves({ Instances: [ec2Instance('i-4')] });
    expect((await twoSubnets.create(createRequest())).id).toBe('i-4');
    expect(ec2.commandCalls(RunInstancesCommand).map((call) => [call.args[0].input.SubnetId, call.args[0].input.ClientToken])).toEqual([
      ['subnet-aaa', 'token-1'],
      ['subnet-bbb', 'token-1.1'],
    ]);

    ec2.reset();
    ec2.on(RunInstancesCommand).rejects(awsError('InsufficientInstanceCapacity'));
    const allOut = await twoSubnets.create(createRequest()).catch((error: unknown) => error);
    expect(allOut).toBeInstanceOf(CapacityError);
    expect((allOut as CapacityError).instanceType).toBe('large');
    expect((allOut as Error).message).toMatch(/subnet-aaa, subnet-bbb/);

    // A subnet with no free addresses has no room for any type; with the other out of this type only, the error is this type's.
    ec2.reset();
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-aaa' }).rejects(awsError('InsufficientFreeAddressesInSubnet'));
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-bbb' }).rejects(awsError('InsufficientInstanceCapacity'));
    await expect(twoSubnets.create(createRequest())).rejects.toMatchObject({ instanceType: 'large' });
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-bbb' }).rejects(awsError('InsufficientFreeAddressesInSubnet'));
    await expect(twoSubnets.create(createRequest())).rejects.toMatchObject({ instanceType: undefined });

    ec2.reset();
    ec2.on(RunInstancesCommand).rejects(awsError('VcpuLimitExceeded'));
    await expect(twoSubnets.create(createRequest())).rejects.toBeInstanceOf(QuotaError);
    expect(ec2.commandCalls(RunInstancesCommand)).toHaveLength(1);
  });

  const expectedClass = {
    quota: QuotaError,
    capacity: CapacityError,
    zoneCapacity: CapacityError,
    rateLimit: RateLimitError,
    credentials: CredentialsError,
    notFound: Ec2NotFoundError,
  };
  it.each(Object.entries(ec2ErrorClasses))('maps %s from RunInstances to the class its table row names (%s)', async (code, errorClass) => {
    const error = code === 'CredentialsProviderError' ? Object.assign(new Error('Could not load credentials from any providers'), { name: code }) : awsError(code);
    ec2.on(RunInstancesCommand).rejects(error);
    const thrown = await driver().create(createRequest()).catch((caught: unknown) => caught);

    expect(thrown).toBeInstanceOf(expectedClass[errorClass]);
    expect((thrown as Error).message).toContain(code);
    expect((thrown as Error).cause).toBe(error);
    if (thrown instanceof CapacityError) expect(thrown.instanceType).toBe(errorClass === 'capacity' ? 'large' : undefined);
    if (thrown instanceof RateLimitError) expect(thrown.retryAt).toBeUndefined();
  });

  it('says what is missing in a credentials error', async () => {
    ec2.on(DescribeInstancesCommand).rejects(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }));
    await expect(driver().list(poolTags)).rejects.toThrow(/no AWS credentials found: set AWS_ACCESS_KEY_ID/);
    ec2.on(TerminateInstancesCommand).rejects(awsError('UnauthorizedOperation'));
    await expect(driver().destroy('i-1')).rejects.toThrow(/lack permission for ec2:TerminateInstances/);
  });

  it('maps the throttling of any call, and leaves any other code a plain CloudError naming it', async () => {
    ec2.on(CreateTagsCommand).rejects(awsError('RequestLimitExceeded'));
    await expect(driver().setTags('i-1', { [tagKeys.idleBehavior]: 'hold' })).rejects.toBeInstanceOf(RateLimitError);
    ec2.on(RunInstancesCommand).rejects(awsError('InvalidAMIID.NotFound'));
    const thrown = await driver().create(createRequest()).catch((caught: unknown) => caught);
    expect((thrown as Error).constructor).toBe(CloudError);
    expect((thrown as Error).message).toMatch(/^ec2 RunInstances m5\.large \(instance type large\) in subnet-aaa: InvalidAMIID\.NotFound/);
  });

  it('lists with a tag filter for every tag, follows every page, and leaves out terminated and shutting-down instances', async () => {
    ec2.on(DescribeInstancesCommand, { NextToken: undefined }).resolves({
      Reservations: [{ Instances: [ec2Instance('i-a'), ec2Instance('i-b', 'terminated')] }],
      NextToken: 'page-2',
    });
    ec2.on(DescribeInstancesCommand, { NextToken: 'page-2' }).resolves({
      Reservations: [{ Instances: [ec2Instance('i-c', 'shutting-down')] }, { Instances: [ec2Instance('i-d', 'pending', { PrivateIpAddress: undefined })] }],
      NextToken: 'page-3',
    });
    ec2.on(DescribeInstancesCommand, { NextToken: 'page-3' }).resolves({ Reservations: [{ Instances: [ec2Instance('i-e', 'stopped')] }] });

    const listed = await driver().list({ ...poolTags, [tagKeys.instanceType]: 'large' });
    expect(listed.map((instance) => instance.id)).toEqual(['i-a', 'i-d', 'i-e']);
    expect(listed[1]).toEqual({ id: 'i-d', providerType: 'm5.large', address: null, tags: poolTags });
    const calls = ec2.commandCalls(DescribeInstancesCommand).map((call) => call.args[0].input);
    expect(calls.map((input) => input.NextToken)).toEqual([undefined, 'page-2', 'page-3']);
    for (const input of calls) {
      expect(input.Filters).toEqual([
        { Name: 'tag:drover-pool', Values: ['p1'] },
        { Name: 'tag:drover-instance-type', Values: ['large'] },
        { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] },
      ]);
    }
  });

  it('throws rather than return part of a listing when a later page fails', async () => {
    ec2.on(DescribeInstancesCommand, { NextToken: undefined }).resolves({ Reservations: [{ Instances: [ec2Instance('i-a')] }], NextToken: 'page-2' });
    ec2.on(DescribeInstancesCommand, { NextToken: 'page-2' }).rejects(awsError('InternalError'));
    await expect(driver().list(poolTags)).rejects.toThrow(/DescribeInstances: InternalError/);
  });

  it('destroys with TerminateInstances, and an instance already gone counts as destroyed', async () => {
    ec2.on(TerminateInstancesCommand, { InstanceIds: ['i-live'] }).resolves({ TerminatingInstances: [{ InstanceId: 'i-live' }] });
    ec2.on(TerminateInstancesCommand, { InstanceIds: ['i-bad'] }).rejects(awsError('InvalidInstanceID.Malformed'));
    await driver().destroy('i-live');
    await expect(driver().destroy('i-bad')).rejects.toThrow(/TerminateInstances i-bad: InvalidInstanceID\.Malformed/);
    expect(ec2.commandCalls(DescribeInstancesCommand)).toEqual([]);
  });

  it('counts InvalidInstanceID.NotFound as destroyed only when DescribeInstances confirms the instance absent or terminating', async () => {
    ec2.on(TerminateInstancesCommand).rejects(awsError('InvalidInstanceID.NotFound'));
    const describedAs = (id: string) => ({ Filters: [{ Name: 'instance-id', Values: [id] }] });
    ec2.on(DescribeInstancesCommand, describedAs('i-absent')).resolves({ Reservations: [] });
    ec2.on(DescribeInstancesCommand, describedAs('i-terminated')).resolves({ Reservations: [{ Instances: [ec2Instance('i-terminated', 'terminated')] }] });
    ec2.on(DescribeInstancesCommand, describedAs('i-ending')).resolves({ Reservations: [{ Instances: [ec2Instance('i-ending', 'shutting-down')] }] });
    // Eventual consistency: just after RunInstances, TerminateInstances may not know the id yet.
    ec2.on(DescribeInstancesCommand, describedAs('i-new')).resolves({ Reservations: [{ Instances: [ec2Instance('i-new', 'pending')] }] });
    await driver().destroy('i-absent');
    await driver().destroy('i-terminated');
    await driver().destroy('i-ending');
    const thrown = await driver().destroy('i-new').catch((caught: unknown) => caught);
    expect(thrown).toBeInstanceOf(CloudError);
    expect((thrown as Error).message).toMatch(/i-new.*pending.*not destroyed/);
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(4);
  });

  it('sets tags with CreateTags on the instance', async () => {
    ec2.on(CreateTagsCommand).resolves({});
    await driver().setTags('i-1', { [tagKeys.idleBehavior]: 'drain' });
    expect(ec2.commandCalls(CreateTagsCommand)[0]!.args[0].input).toEqual({ Resources: ['i-1'], Tags: [{ Key: 'drover-idle-behavior', Value: 'drain' }] });
  });
});

describe('cloud.ec2 settings', () => {
  it('fills in defaults, takes one subnet or a list, and names the key of a bad value', () => {
    const settings = ec2SettingsSchema.parse({ region: 'eu-west-1', imageId: 'ami-1', subnetId: 'subnet-1', securityGroupIds: ['sg-1'] });
    expect(settings).toMatchObject({
      subnetIds: ['subnet-1'],
      endpoint: null,
      iamInstanceProfile: null,
      rootVolumeGiB: null,
      scratch: { deviceName: '/dev/xvdb', volumeType: 'gp3' },
      launch: {},
    });
    const result = ec2SettingsSchema.safeParse({ region: 'eu-west-1', imageId: 'ami-1', subnetId: ['subnet-1', 'vpc-2'], securityGroupIds: [], extra: 1 });
    const problems = result.error?.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`) ?? [];
    expect(problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/^subnetId/), expect.stringMatching(/^securityGroupIds: expected at least one/), expect.stringMatching(/extra/)]),
    );
    expect(unknownLaunchTypes(settingsFrom().launch, ['large', 'spot'])).toEqual(['gpu']);
  });

  it('config/ec2.yml: its cloud.ec2 section is valid, its launch entries name its instance types, the rest is a valid config', () => {
    const doc = parseDocument(readFileSync(new URL('../config/ec2.yml', import.meta.url), 'utf8'));
    const raw = doc.toJS() as { cloud: { driver: string; ec2: unknown }; instanceTypes: Record<string, unknown> };
    expect(raw.cloud.driver).toBe('ec2');
    const ec2 = ec2SettingsSchema.parse(raw.cloud.ec2);
    expect(ec2.subnetIds).toHaveLength(2);
    expect(Object.keys(ec2.launch)).toEqual(['gpu']);
    expect(unknownLaunchTypes(ec2.launch, Object.keys(raw.instanceTypes))).toEqual([]);
    // As a whole, with its launch configs checked against the ec2 section (parsing needs no credentials).
    const whole = parseConfig(doc.toString(), 'config/ec2.yml');
    expect(whole.launchConfigs.filter((launchConfig) => launchConfig.instanceType === 'xlarge').map((launchConfig) => launchConfig.id)).toEqual(['xlarge-a', 'xlarge-b']);
    // Every other section, checked by Drover's own config schema with the cloud section swapped out.
    doc.setIn(['cloud'], { driver: 'stub' });
    const config = parseConfig(doc.toString(), 'config/ec2.yml');
    expect(config.instanceTypes['xlarge-spot']).toMatchObject({ providerType: 'm5.xlarge', preemptible: true });
  });
});

// A retry strategy that retries transient errors at once: the subject is what a retry sends, not its timing.
function immediateRetries(maxAttempts: number): NonNullable<EC2ClientConfig['retryStrategy']> {
  const token = (count: number) => ({ getRetryCount: () => count, getRetryDelay: () => 0 });
  return {
    acquireInitialRetryToken: () => Promise.resolve(token(0)),
    refreshRetryTokenForRetry: (previous: { getRetryCount(): number }, errorInfo: { errorType: string }) => {
      const count = previous.getRetryCount() + 1;
      if (count >= maxAttempts || errorInfo.errorType === 'CLIENT_ERROR') return Promise.reject(new Error('no retry'));
      return Promise.resolve(token(count));
    },
    recordSuccess: () => {},
  };
}

describe('EC2 driver over HTTP to a local EC2 endpoint', () => {
  let endpoint: FakeEc2Endpoint;
  const drivers: Ec2Driver[] = [];
  const driver = (clientConfig: Partial<EC2ClientConfig> = { maxAttempts: 1 }) => {
    const made = createEc2Driver(settingsFrom({ endpoint: endpoint.url }), { clientConfig: { credentials: fakeCredentials, ...clientConfig } });
    drivers.push(made);
    return made;
  };

  beforeAll(async () => {
    endpoint = await startFakeEc2Endpoint();
  });
  afterEach(() => {
    for (const made of drivers.splice(0)) made.close();
    endpoint.instances.length = 0;
    endpoint.requests.length = 0;
    endpoint.pageSize = 1000;
  });
  afterAll(() => endpoint.close());

  it('a RunInstances retried with the same ClientToken returns the same instance', async () => {
    // The first answer is lost after the instance is made; the SDK retries the same request.
    endpoint.loseNextAnswer('RunInstances');
    const created = await driver({ retryStrategy: immediateRetries(2) }).create(createRequest(large, 'token-retry'));
    const runs = endpoint.requests.filter((request) => request.action === 'RunInstances');
    expect(runs.map((request) => request.params.ClientToken)).toEqual(['token-retry', 'token-retry']);
    expect(endpoint.instances).toHaveLength(1);
    expect(created).toMatchObject({ id: endpoint.instances[0]!.id, providerType: 'm5.large', address: endpoint.instances[0]!.privateIp });

    // And a create called again by its caller with the same request: still that one instance.
    const again = await driver().create(createRequest(large, 'token-retry'));
    expect(again.id).toBe(created.id);
    expect(endpoint.instances).toHaveLength(1);
    expect(endpoint.instances[0]!.tags).toEqual(createRequest(large, 'token-retry').tags);
  });

  it('a launch config create sends its image and zone over the wire, and a retry with its ClientToken returns the same instance', async () => {
    const request = { ...createRequest(large, 'token-lc'), launchConfig: launchConfig({ zone: 'us-east-1b', image: 'ami-0launch' }) };
    endpoint.loseNextAnswer('RunInstances');
    const created = await driver({ retryStrategy: immediateRetries(2) }).create(request);
    const runs = endpoint.requests.filter((sent) => sent.action === 'RunInstances');
    expect(runs.map((sent) => sent.params.ClientToken)).toEqual(['token-lc', 'token-lc']);
    expect(endpoint.instances).toHaveLength(1);
    expect(created.id).toBe(endpoint.instances[0]!.id);
    expect(endpoint.instances[0]!.launch).toMatchObject({ ImageId: 'ami-0launch', 'Placement.AvailabilityZone': 'us-east-1b' });
    expect(endpoint.instances[0]!.launch).not.toHaveProperty('SubnetId');
  });

  it('a DescribeInstances of two pages returns both pages’ instances, only the pool’s, without the terminated', async () => {
    const ec2 = driver();
    const ids: string[] = [];
    for (const token of ['t1', 't2', 't3', 't4']) ids.push((await ec2.create(createRequest(large, token))).id);
    await ec2.create({
      ...createRequest(large, 't5'),
      tags: { [tagKeys.pool]: 'other', [tagKeys.createToken]: 't5' },
    });
    await ec2.destroy(ids[3]!);
    endpoint.pageSize = 2;
    endpoint.requests.length = 0;

    const listed = await ec2.list(poolTags);
    expect(listed.map((instance) => instance.id)).toEqual(ids.slice(0, 3));
    expect(listed[0]).toMatchObject({ providerType: 'm5.large', tags: createRequest(large, 't1').tags });
    expect(endpoint.requests.map((request) => [request.action, request.params.NextToken])).toEqual([
      ['DescribeInstances', undefined],
      ['DescribeInstances', '2'],
    ]);
  });

  it('a destroy told NotFound right after the create throws while a listing still shows the instance, and a retry destroys it', async () => {
    const ec2 = driver();
    const created = await ec2.create(createRequest(large, 'token-young'));
    endpoint.failNext('TerminateInstances', 'InvalidInstanceID.NotFound');
    await expect(ec2.destroy(created.id)).rejects.toThrow(new RegExp(`${created.id}.*pending`));
    expect(endpoint.instances[0]!.state).toBe('pending');
    await ec2.destroy(created.id);
    expect(endpoint.instances[0]!.state).toBe('shutting-down');
  });

  it('reads real EC2 error answers: an instance already gone is destroyed, AuthFailure is a credentials error', async () => {
    await driver().destroy('i-0000000000000dead');
    endpoint.failNext('DescribeInstances', 'AuthFailure', 401);
    await expect(driver().list(poolTags)).rejects.toBeInstanceOf(CredentialsError);
    endpoint.failNext('RunInstances', 'InsufficientInstanceCapacity', 500);
    const thrown = await driver().create(createRequest()).catch((caught: unknown) => caught);
    expect(thrown).toBeInstanceOf(CapacityError);
    expect((thrown as CapacityError).instanceType).toBe('large');
  });
});

describeDriverConformance('ec2', { refusals: ['quota', 'capacity', 'rateLimit'], idempotentCreates: true }, async () => {
  const endpoint = await startFakeEc2Endpoint();
  const driver = createEc2Driver(settingsFrom({ endpoint: endpoint.url }), { clientConfig: { credentials: fakeCredentials, maxAttempts: 1 } });
  // EC2's own codes for each refusal; the fake answers the next RunInstances with it.
  const codes = { quota: 'InstanceLimitExceeded', capacity: 'InsufficientInstanceCapacity', rateLimit: 'RequestLimitExceeded' } as const;
  return {
    driver,
    instanceType: large,
    refuseCreates: async (kind) => {
      endpoint.failNext('RunInstances', codes[kind], kind === 'rateLimit' ? 503 : 400);
      return () => {};
    },
    close: async () => {
      driver.close();
      await endpoint.close();
    },
  };
});
