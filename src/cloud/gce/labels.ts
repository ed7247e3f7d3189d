// How Drover's tags live on a GCE instance. GCE labels allow only lowercase letters, digits, `_`
// and `-`, at most 63 characters, keys starting with a letter; Drover's tags may hold anything.
// So each instance carries its tags twice:
// - the whole set as JSON in the metadata item `drover-tags`: lossless, and what is read back;
// - each tag whose escaped key and value fit a label, as a label, so a listing can filter by it on
//   the server (the pool tag always fits: pool names are [a-z0-9-]). The instance secret never
//   is one: labels are shown to every project viewer and copied into billing exports.
// The escape keeps a-z, 0-9 and `-`, and writes every other UTF-8 byte as `_` and two lowercase
// hex digits (`Large` → `_4carge`, `_` → `_5f`): reversible, so an instance that lacks the
// metadata item still reads back its labelled tags.

import { tagKeys, type Tags } from '../driver.js';

export const tagsMetadataKey = 'drover-tags';

const maxLabelLength = 63;
const plain = /^[a-z0-9-]$/;
const escapedLabel = /^(?:[a-z0-9-]|_[0-9a-f]{2})*$/;

export function escapeLabel(text: string): string {
  let out = '';
  for (const byte of new TextEncoder().encode(text)) {
    const char = String.fromCharCode(byte);
    out += plain.test(char) ? char : `_${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The text `escapeLabel` made `label` from; undefined for a label it cannot have made (set by someone else). */
export function unescapeLabel(label: string): string | undefined {
  if (!escapedLabel.test(label)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < label.length; ) {
    if (label[i] === '_') {
      bytes.push(parseInt(label.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      bytes.push(label.charCodeAt(i));
      i += 1;
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(bytes));
  } catch {
    return undefined;
  }
}

/** The label key for a tag key, or undefined when the escaped key is no valid label key. */
export function labelKeyFor(tagKey: string): string | undefined {
  const key = escapeLabel(tagKey);
  return /^[a-z]/.test(key) && key.length <= maxLabelLength ? key : undefined;
}

/** The label for one tag, or undefined when it does not fit (or is the secret). */
export function labelFor(tagKey: string, tagValue: string): [string, string] | undefined {
  if (tagKey === tagKeys.secret) return undefined;
  const key = labelKeyFor(tagKey);
  const value = escapeLabel(tagValue);
  return key !== undefined && value.length <= maxLabelLength ? [key, value] : undefined;
}

/** The labels that carry `tags`: every tag that fits. */
export function labelsFor(tags: Tags): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(tags)) {
    const label = labelFor(key, value);
    if (label) labels[label[0]] = label[1];
  }
  return labels;
}

/**
 * `labels` with `changed` merged in: a changed tag that fits sets its label; one that no longer
 * fits removes its old label, which would otherwise keep matching filters for the old value.
 */
export function mergeLabels(labels: Readonly<Record<string, string>>, changed: Tags): Record<string, string> {
  const merged = { ...labels };
  for (const [key, value] of Object.entries(changed)) {
    const labelKey = labelKeyFor(key);
    if (labelKey === undefined) continue;
    const label = labelFor(key, value);
    if (label) merged[labelKey] = label[1];
    else delete merged[labelKey];
  }
  return merged;
}

/** The tags `labels` carry; labels Drover cannot have written are left out. */
export function tagsFromLabels(labels: Readonly<Record<string, string>>): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const [labelKey, labelValue] of Object.entries(labels)) {
    const key = unescapeLabel(labelKey);
    const value = unescapeLabel(labelValue);
    if (key !== undefined && value !== undefined) tags[key] = value;
  }
  return tags;
}

/**
 * A Compute list filter for the tags of `tagFilter` that fit labels, e.g.
 * `(labels.drover-pool = "p1")`; '' when none fit. Tags that do not fit are checked by the caller
 * with `matchesTags` (escaped labels hold only [a-z0-9_-], so nothing needs quoting).
 */
export function labelFilter(tagFilter: Tags): string {
  return Object.entries(tagFilter)
    .flatMap(([key, value]) => {
      const label = labelFor(key, value);
      return label ? [`(labels.${label[0]} = "${label[1]}")`] : [];
    })
    .join(' ');
}

export function matchesTags(tags: Tags, tagFilter: Tags): boolean {
  return Object.entries(tagFilter).every(([key, value]) => tags[key] === value);
}

export function tagsMetadataValue(tags: Tags): string {
  return JSON.stringify(tags);
}

/** The tags in a `drover-tags` metadata value, or undefined when it holds no tag object. */
export function tagsFromMetadataValue(value: string): Record<string, string> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const entries = Object.entries(parsed);
  return entries.every(([, v]) => typeof v === 'string') ? Object.fromEntries(entries as [string, string][]) : undefined;
}

/** An instance's tags: its `drover-tags` metadata when present and sound, else what its labels carry. */
export function readTags(
  metadataItems: readonly { key?: string | null; value?: string | null }[],
  labels: Readonly<Record<string, string>>,
): Record<string, string> {
  const item = metadataItems.find((entry) => entry.key === tagsMetadataKey);
  const fromMetadata = typeof item?.value === 'string' ? tagsFromMetadataValue(item.value) : undefined;
  return fromMetadata ?? tagsFromLabels(labels);
}
