// Keeps what goes to the inspector small and free of secrets: a large value (a listing, a log
// tail) is replaced by its size, and the instance secret never leaves the daemon.
import { configure } from 'safe-stable-stringify';
import { tagKeys } from '../cloud/driver.js';

/** Values whose JSON is longer than this go to the inspector as "[trimmed: 52 KB]". */
export const trimAboveBytes = 4 * 1024;

// The secret proves an instance is the VM this pool created: not for a browser tab.
const redactedKeys: ReadonlySet<string> = new Set([tagKeys.secret, 'secret']);

// Deep values are cut by depth rather than followed (snapshots can hold state nodes, which refer back to their machine).
const safeStringify = configure({ maximumDepth: 10, deterministic: false });

function formatSize(bytes: number): string {
  return bytes < 1024 * 1024 ? `${Math.ceil(bytes / 1024)} KB` : `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The value, or a marker with its size when its JSON is longer than `limit`. */
export function trimValue(value: unknown, limit = trimAboveBytes): unknown {
  if (typeof value === 'string') return value.length > limit ? `[trimmed: ${formatSize(value.length)}]` : value;
  if (typeof value !== 'object' || value === null) return value;
  const json = safeStringify(value);
  return json !== undefined && json.length > limit ? `[trimmed: ${formatSize(json.length)}]` : value;
}

/** A copy of `record` with each field (or each of `only`) trimmed; the record itself when nothing needed it. */
export function trimFields<T>(record: T, only?: readonly string[], limit = trimAboveBytes): T {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return record;
  const fields = record as Record<string, unknown>;
  let copy: Record<string, unknown> | null = null;
  for (const key of only ?? Object.keys(fields)) {
    const value = fields[key];
    const trimmed = trimValue(value, limit);
    if (trimmed === value) continue;
    copy ??= { ...fields };
    copy[key] = trimmed;
  }
  return (copy ?? record) as T;
}

/** JSON for the wire: depth-limited, cycles cut, secrets replaced. */
export function inspectionJson(value: unknown): string {
  return safeStringify(value, (key, field: unknown) => (redactedKeys.has(key) && field !== undefined ? '[redacted]' : field)) ?? 'null';
}
