// Drover tags on GCE labels and metadata (src/cloud/gce/labels.ts): the escape is reversible for
// any text, labels stay inside GCE's alphabet and length, and tags read back exactly.
import { describe, expect, it } from 'vitest';
import { tagKeys } from '../src/cloud/driver.js';
import {
  escapeLabel,
  labelFilter,
  labelFor,
  labelsFor,
  matchesTags,
  mergeLabels,
  readTags,
  tagsFromLabels,
  tagsMetadataKey,
  tagsMetadataValue,
  unescapeLabel,
} from '../src/cloud/gce/labels.js';

const awkward: Record<string, string> = {
  uppercase: 'Large',
  colon: 'team:science',
  slash: 'a/b/c',
  equals: 'k=v',
  underscore: 'snake_case',
  unicode: 'größe 😀 日本',
  empty: '',
  long: 'x'.repeat(150) + 'Ü/=:' + 'y'.repeat(46),
};
// GCE label rules: lowercase letters, digits, _ and -, at most 63 characters; keys start with a letter.
const labelValue = /^[a-z0-9_-]{0,63}$/;
const labelKey = /^[a-z][a-z0-9_-]{0,62}$/;

describe('the label escape', () => {
  it.each(Object.entries(awkward))('%s reads back unchanged', (_, text) => {
    expect(unescapeLabel(escapeLabel(text))).toBe(text);
  });

  it('writes only characters labels allow, keeping a-z, 0-9 and - as they are', () => {
    for (const text of Object.values(awkward)) expect(escapeLabel(text)).toMatch(/^[a-z0-9_-]*$/);
    expect(escapeLabel('drover-pool-1')).toBe('drover-pool-1');
    expect(escapeLabel('Large')).toBe('_4carge');
    expect(escapeLabel('_')).toBe('_5f');
    expect(escapeLabel('ü')).toBe('_c3_bc');
  });

  it('refuses labels it cannot have written', () => {
    expect(unescapeLabel('_zz')).toBeUndefined();
    expect(unescapeLabel('trailing_')).toBeUndefined();
    expect(unescapeLabel('_ff')).toBeUndefined(); // not UTF-8
  });
});

describe('labels for tags', () => {
  it('labels every tag that fits, each within the rules, and leaves the rest to the metadata item', () => {
    const tags = { [tagKeys.pool]: 'p1', ...awkward, '1starts-with-digit': 'x', UpperKey: 'x', ['k'.repeat(64)]: 'x' };
    const labels = labelsFor(tags);
    for (const [key, value] of Object.entries(labels)) {
      expect(key).toMatch(labelKey);
      expect(value).toMatch(labelValue);
    }
    expect(labels[tagKeys.pool]).toBe('p1');
    expect(labelsFor({ [tagKeys.secret]: 'c0ffee' })).toEqual({}); // the secret stays out of labels
    expect(labels.uppercase).toBe('_4carge');
    expect(labels.empty).toBe('');
    expect(labels).not.toHaveProperty('long');
    expect(Object.keys(labels)).toHaveLength(Object.keys(awkward).length); // the pool tag, every awkward one but long
    expect(tagsFromLabels(labels)).toEqual({ [tagKeys.pool]: 'p1', ...Object.fromEntries(Object.entries(awkward).filter(([key]) => key !== 'long')) });
  });

  it('filters on the tags that fit, in Compute filter syntax', () => {
    expect(labelFilter({ [tagKeys.pool]: 'p1', [tagKeys.instanceType]: 'Large', long: awkward.long ?? '' })).toBe(
      '(labels.drover-pool = "p1") (labels.drover-instance-type = "_4carge")',
    );
    expect(labelFilter({ long: awkward.long ?? '' })).toBe('');
  });

  it('merging removes the label of a tag whose new value no longer fits, and keeps labels Drover did not write', () => {
    const labels = { 'drover-note': 'short', env: 'prod' };
    expect(mergeLabels(labels, { 'drover-note': awkward.long ?? '' })).toEqual({ env: 'prod' });
    expect(mergeLabels(labels, { 'drover-note': 'Other' })).toEqual({ 'drover-note': '_4fther', env: 'prod' });
  });
});

describe('reading tags back', () => {
  const tags = { [tagKeys.pool]: 'p1', [tagKeys.secret]: 'c0ffee', ...awkward };

  it('reads the metadata item: every tag, exactly, 200-character values included', () => {
    const items = [
      { key: 'startup-script', value: '#!/bin/sh' },
      { key: tagsMetadataKey, value: tagsMetadataValue(tags) },
    ];
    expect(awkward.long).toHaveLength(200);
    expect(readTags(items, labelsFor(tags))).toEqual(tags);
    expect(matchesTags(readTags(items, {}), { long: awkward.long ?? '' })).toBe(true);
  });

  it('without the item (or with a broken one), reads what the labels carry and skips labels it cannot decode', () => {
    const labels = { ...labelsFor(tags), 'goog-managed': 'Yes', odd_: 'x' };
    const fromLabels = readTags([], labels);
    expect(fromLabels).toMatchObject({ [tagKeys.pool]: 'p1', uppercase: 'Large', unicode: awkward.unicode });
    expect(fromLabels).not.toHaveProperty('goog-managed');
    expect(fromLabels).not.toHaveProperty('long');
    expect(readTags([{ key: tagsMetadataKey, value: '{"not": 1}' }], labels)).toEqual(fromLabels);
  });

  it('a label that fits is one label', () => {
    expect(labelFor('drover-idle-behavior', 'drain')).toEqual(['drover-idle-behavior', 'drain']);
    expect(labelFor('drover-note', 'x'.repeat(64))).toBeUndefined();
  });
});
