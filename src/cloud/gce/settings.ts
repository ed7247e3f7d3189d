// The `cloud.gce` config section: where and how the GCE driver creates instances. Durations are
// written as in the rest of the config (2s, 10m) and held in ms.

import { z } from 'zod';
import { durationHint, parseDuration } from '../../config/duration.js';
import type { LaunchConfig } from '../driver.js';

export const scratchDiskTypes = ['local-ssd', 'pd-balanced', 'pd-ssd', 'pd-standard'] as const;
export type ScratchDiskType = (typeof scratchDiskTypes)[number];

/** What one Drover instance type may change from the section's defaults. */
export interface GceLaunchOverride {
  zone?: string;
  image?: string;
  bootDiskGiB?: number;
  scratchDiskType?: ScratchDiskType;
  subnetwork?: string;
  /** e.g. nvidia-tesla-t4; attached `gpus` times. Machine types with built-in GPUs (a2, g2) need none. */
  acceleratorType?: string;
}

export interface GceServiceAccount {
  email: string;
  scopes: string[];
}

export interface GceSettings {
  project: string;
  /** Creates go to the first, unless the type's `launch` override names another. */
  zones: string[];
  /** Boot disk source image, e.g. projects/debian-cloud/global/images/family/debian-12. */
  image: string;
  bootDiskGiB: number;
  bootDiskType: string;
  /** The disk made for an instance type's scratchGiB (none when scratchGiB is 0). */
  scratchDiskType: ScratchDiskType;
  network: string;
  subnetwork: string | null;
  /** Give each instance an external IP and reach it there; false: reach it at its internal IP. */
  externalIp: boolean;
  serviceAccount: GceServiceAccount | null;
  /** Keyed by Drover instance type name. */
  launch: Record<string, GceLaunchOverride>;
  operationPollIntervalMs: number;
  operationTimeoutMs: number;
  /** Another Compute endpoint (tests): `http://127.0.0.1:8080`. Unset: Google's. */
  apiEndpoint: string | null;
}

const nonEmpty = z.string().min(1);

const duration = z.string().transform((text, ctx) => {
  try {
    return parseDuration(text);
  } catch (err) {
    ctx.issues.push({ code: 'custom', message: (err as Error).message, input: text });
    return z.NEVER;
  }
});
const positiveDuration = duration.refine((ms) => ms > 0, `must be longer than 0s (${durationHint})`);

// GCE's own rule for zone names, so a typo stops start-up instead of failing every create.
export const gceZoneName = z.string().regex(/^[a-z]+-[a-z]+\d+-[a-z]$/, 'expected a zone name such as us-central1-a');
const zone = gceZoneName;

/** A type's `launch` override; a launch config's `extra` is read with it too. */
export const gceLaunchOverrideSchema = z.strictObject({
  zone: zone.optional(),
  image: nonEmpty.optional(),
  bootDiskGiB: z.number().int().min(10).optional(),
  scratchDiskType: z.enum(scratchDiskTypes).optional(),
  subnetwork: nonEmpty.optional(),
  acceleratorType: nonEmpty.optional(),
});

const apiEndpoint = z.string().refine((text) => {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}, 'expected a URL such as https://compute.googleapis.com or http://127.0.0.1:8080');

export const gceSettingsSchema = z
  .strictObject({
    project: nonEmpty,
    zones: z.array(zone).min(1, 'at least one zone is required'),
    image: nonEmpty,
    bootDiskGiB: z.number().int().min(10).default(20),
    bootDiskType: nonEmpty.default('pd-balanced'),
    scratchDiskType: z.enum(scratchDiskTypes).default('pd-balanced'),
    network: nonEmpty.default('global/networks/default'),
    subnetwork: nonEmpty.nullable().default(null),
    externalIp: z.boolean().default(true),
    serviceAccount: z
      .strictObject({
        email: z.email(),
        scopes: z.array(nonEmpty).min(1).default(() => ['https://www.googleapis.com/auth/cloud-platform']),
      })
      .nullable()
      .default(null),
    launch: z.record(nonEmpty, gceLaunchOverrideSchema).default(() => ({})),
    operationPollInterval: positiveDuration.default(2_000),
    operationTimeout: positiveDuration.default(600_000),
    apiEndpoint: apiEndpoint.nullable().default(null),
  })
  .transform(
    ({ operationPollInterval, operationTimeout, ...rest }): GceSettings => ({
      ...rest,
      operationPollIntervalMs: operationPollInterval,
      operationTimeoutMs: operationTimeout,
    }),
  );

/** The section's settings with the type's `launch` override applied. */
export interface GceLaunch {
  zone: string;
  image: string;
  bootDiskGiB: number;
  scratchDiskType: ScratchDiskType;
  subnetwork: string | null;
  acceleratorType: string | null;
}

/**
 * The launch for a create of `instanceTypeName`: the section's settings, the type's `launch`
 * override over them, and, for a create from `launchConfig`, its `extra` (read as an override too)
 * and then its zone, image and subnet (the subnetwork) over those. Throws an Error naming the
 * problem for a config whose extra is not an override or whose zone is not in its region (the
 * config check refuses both at start-up).
 */
export function launchFor(settings: GceSettings, instanceTypeName: string, launchConfig?: LaunchConfig): GceLaunch {
  const typeOverride = settings.launch[instanceTypeName] ?? {};
  let override: GceLaunchOverride = typeOverride;
  if (launchConfig !== undefined) {
    const extra = gceLaunchOverrideSchema.safeParse(launchConfig.extra);
    if (!extra.success) {
      const problems = extra.error.issues.map((issue) => `${['extra', ...issue.path].join('.')}: ${issue.message}`);
      throw new Error(`launch config ${launchConfig.id}: ${problems.join('; ')}`);
    }
    override = {
      ...typeOverride,
      ...extra.data,
      ...(launchConfig.zone !== null && { zone: launchConfig.zone }),
      ...(launchConfig.image !== null && { image: launchConfig.image }),
      ...(launchConfig.subnet !== null && { subnetwork: launchConfig.subnet }),
    };
  }
  const launch: GceLaunch = {
    // The schema requires at least one zone.
    zone: override.zone ?? (settings.zones[0] as string),
    image: override.image ?? settings.image,
    bootDiskGiB: override.bootDiskGiB ?? settings.bootDiskGiB,
    scratchDiskType: override.scratchDiskType ?? settings.scratchDiskType,
    subnetwork: override.subnetwork ?? settings.subnetwork,
    acceleratorType: override.acceleratorType ?? null,
  };
  const region = launchConfig?.region ?? null;
  if (launchConfig !== undefined && region !== null && !launch.zone.startsWith(`${region}-`)) {
    throw new Error(`launch config ${launchConfig.id}: zone ${launch.zone} is not in its region ${region}`);
  }
  return launch;
}
