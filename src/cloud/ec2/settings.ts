// The `cloud.ec2` config section: where and how the EC2 driver launches instances, with per
// instance type overrides (`launch.<type name>`) merged over the defaults.

import { z } from 'zod';
import type { LaunchConfig } from '../driver.js';

export const ebsVolumeTypes = ['gp3', 'gp2', 'io1', 'io2', 'st1', 'sc1', 'standard'] as const;
export type EbsVolumeType = (typeof ebsVolumeTypes)[number];

/** The EBS volume added for an instance type's `scratchGiB`; none is added when that is 0. */
export interface ScratchVolume {
  /** Device name the volume is attached as, e.g. /dev/xvdb (it may show up as /dev/nvme1n1). */
  deviceName: string;
  volumeType: EbsVolumeType;
}

/** How one instance type is launched: the section's defaults with its `launch` entry merged over them. */
export interface Ec2LaunchSettings {
  imageId: string;
  /** Tried in order: a subnet out of capacity for the type passes the create on to the next. */
  subnetIds: string[];
  securityGroupIds: string[];
  /** Instance profile name, or its ARN (arn:...). */
  iamInstanceProfile: string | null;
  keyName: string | null;
  /** Root volume size; null keeps the image's own size. */
  rootVolumeGiB: number | null;
  /** The image's root device name, needed to resize its root volume. */
  rootDeviceName: string;
  /** null: no EBS scratch volume (e.g. the type has instance-store disks). */
  scratch: ScratchVolume | null;
}

export interface Ec2Settings extends Ec2LaunchSettings {
  region: string;
  /** An EC2 API endpoint other than AWS's own for the region (tests, local emulators). */
  endpoint: string | null;
  /** Overrides keyed by Drover's instance type name. */
  launch: Record<string, Partial<Ec2LaunchSettings>>;
}

const nonEmpty = z.string().min(1);
const prefixed = (prefix: string) =>
  z.string().regex(new RegExp(`^${prefix}-[0-9a-z]+$`), `expected an id such as ${prefix}-0123456789abcdef0`);
const subnetIds = z
  .union([prefixed('subnet'), z.array(prefixed('subnet')).min(1, 'expected at least one subnet id')])
  .transform((value) => (Array.isArray(value) ? value : [value]));
const securityGroupIds = z.array(prefixed('sg')).min(1, 'expected at least one security group id');
const gib = z.number().int().min(1);
const deviceName = (example: string) => z.string().regex(/^\/dev\/[a-z0-9]+$/, `expected a device name such as ${example}`);
const scratchSchema = z.strictObject({
  deviceName: deviceName('/dev/xvdb').default('/dev/xvdb'),
  volumeType: z.enum(ebsVolumeTypes).default('gp3'),
});

/** The id prefixes of EC2 images and subnets, checked for launch configs' `image` and `subnet` too. */
export const ec2ImageId = prefixed('ami');
export const ec2SubnetId = prefixed('subnet');

// Every key optional and without defaults, so a `launch` entry only changes what it names. A launch
// config's `extra` is read with it too.
export const ec2LaunchOverrideSchema = z
  .strictObject({
    imageId: prefixed('ami').optional(),
    subnetId: subnetIds.optional(),
    securityGroupIds: securityGroupIds.optional(),
    iamInstanceProfile: nonEmpty.nullable().optional(),
    keyName: nonEmpty.nullable().optional(),
    rootVolumeGiB: gib.nullable().optional(),
    rootDeviceName: deviceName('/dev/xvda').optional(),
    scratch: scratchSchema.nullable().optional(),
  })
  .transform(({ subnetId, ...rest }): Partial<Ec2LaunchSettings> => (subnetId === undefined ? rest : { ...rest, subnetIds: subnetId }));

export const ec2SettingsSchema = z
  .strictObject({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'expected a region such as us-east-1'),
    endpoint: z.url().nullable().default(null),
    imageId: prefixed('ami'),
    subnetId: subnetIds,
    securityGroupIds,
    iamInstanceProfile: nonEmpty.nullable().default(null),
    keyName: nonEmpty.nullable().default(null),
    rootVolumeGiB: gib.nullable().default(null),
    rootDeviceName: deviceName('/dev/xvda').default('/dev/xvda'),
    scratch: scratchSchema.nullable().default(() => ({ deviceName: '/dev/xvdb', volumeType: 'gp3' as const })),
    launch: z.record(nonEmpty, ec2LaunchOverrideSchema).default(() => ({})),
  })
  .transform(({ subnetId, ...rest }): Ec2Settings => ({ ...rest, subnetIds: subnetId }));

/** The launch settings for Drover's instance type `typeName`: its `launch` entry over the defaults. */
export function launchSettingsFor(settings: Ec2Settings, typeName: string): Ec2LaunchSettings {
  const { region: _region, endpoint: _endpoint, launch, ...defaults } = settings;
  return { ...defaults, ...launch[typeName] };
}


/** How one create is launched: a type's settings, with a launch config's changes when it has one. */
export interface Ec2Launch extends Ec2LaunchSettings {
  /**
   * Placement.AvailabilityZone of a launch config that names a zone but no subnet: the create goes
   * to that zone's default subnet (no SubnetId), and `subnetIds` is not used. null: the subnets decide.
   */
  availabilityZone: string | null;
}

/**
 * The launch settings for a create of `typeName` from `launchConfig`: the type's own
 * (launchSettingsFor), the config's `extra` (an override like a `launch` entry) over them, and its
 * image and subnet over those. A subnet decides the zone; a zone without a subnet is placed by
 * Placement.AvailabilityZone. Throws an Error naming the problem for a config this region cannot
 * launch (the config check refuses those at start-up).
 */
export function ec2LaunchFor(settings: Ec2Settings, typeName: string, launchConfig?: LaunchConfig): Ec2Launch {
  const base = launchSettingsFor(settings, typeName);
  if (launchConfig === undefined) return { ...base, availabilityZone: null };
  if (launchConfig.region !== null && launchConfig.region !== settings.region) {
    throw new Error(`launch config ${launchConfig.id} is for region ${launchConfig.region}, but this driver creates in ${settings.region} (cloud.ec2.region)`);
  }
  const extra = ec2LaunchOverrideSchema.safeParse(launchConfig.extra);
  if (!extra.success) {
    const problems = extra.error.issues.map((issue) => `${['extra', ...issue.path].join('.')}: ${issue.message}`);
    throw new Error(`launch config ${launchConfig.id}: ${problems.join('; ')}`);
  }
  const launch: Ec2LaunchSettings = { ...base, ...extra.data };
  if (launchConfig.image !== null) launch.imageId = launchConfig.image;
  if (launchConfig.subnet !== null) launch.subnetIds = [launchConfig.subnet];
  const subnetGiven = launchConfig.subnet !== null || extra.data.subnetIds !== undefined;
  return { ...launch, availabilityZone: !subnetGiven && launchConfig.zone !== null ? launchConfig.zone : null };
}
