// Launch configs as the config file gives them: each instance type launched from one or more
// places (zone, subnet, image, driver settings), each with a weight and an optional cap. A type
// with none written gets one, holding only the driver's own settings.
import { createHash } from 'node:crypto';
import type { LaunchConfig } from '../cloud/driver.js';

/** What an operator may set a config to; `broken` is Drover's own verdict and is never set by hand. */
export type LaunchConfigAdminState = 'active' | 'paused' | 'archived';

export interface LaunchConfigSettings extends LaunchConfig {
  /** Share of the type's instances this config is given while every config is healthy (> 0). */
  weight: number;
  /** Instances of this config alive at once; null: only the pool's limits. */
  maxInstances: number | null;
  /** The state a config starts in when nothing was saved for it (a saved pause or archive wins). */
  initialState: 'active' | 'paused';
}

/** The fields that make a launch config what it is: its id is a hash of them unless one is given. */
export type LaunchConfigContent = Omit<LaunchConfig, 'id'>;

/**
 * A stable id for a launch config's content: the same fields give the same id on every start and
 * host, so a changed config gets a new id (and the old one is archived) while an unchanged one
 * keeps its instances. Keys are sorted so the order they are written in does not matter.
 */
export function launchConfigId(content: LaunchConfigContent): string {
  const digest = createHash('sha256').update(canonicalJson(content)).digest('hex').slice(0, 12);
  return `${content.instanceType}-${digest}`;
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, field]) => field !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, field]) => `${JSON.stringify(key)}:${canonicalJson(field)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The one launch config of a type the file gives none for: the driver's own settings, weight 1. */
export function defaultLaunchConfig(instanceType: string): LaunchConfigSettings {
  const content: LaunchConfigContent = { instanceType, zone: null, region: null, subnet: null, image: null, extra: {} };
  return { id: launchConfigId(content), ...content, weight: 1, maxInstances: null, initialState: 'active' };
}
