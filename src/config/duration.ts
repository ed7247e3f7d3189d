// Durations as operators write them in config files (10s, 5m, 1h30m) and as Drover prints them.

const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof unitMs;

// `ms` comes before `m` in the alternation so that "500ms" is not read as 500 minutes and a stray "s".
const wholePattern = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const partPattern = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

export const durationHint = 'expected a duration such as 10s, 5m or 1h30m';

/** Milliseconds in `text`, e.g. "1m30s" → 90000. Throws when `text` is not a duration. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (!wholePattern.test(trimmed)) {
    throw new Error(`${durationHint}, got ${JSON.stringify(text)}`);
  }
  let total = 0;
  for (const match of trimmed.matchAll(partPattern)) {
    total += Number(match[1]) * unitMs[match[2] as Unit];
  }
  // Fractions such as 1.0001s would otherwise leave sub-millisecond noise that no timer honours.
  const ms = Math.round(total);
  if (!Number.isSafeInteger(ms)) {
    throw new Error(`${durationHint}, got ${JSON.stringify(text)} (too long)`);
  }
  return ms;
}

/** A short human form of `ms` that parseDuration reads back to the same number, e.g. 90000 → "1m30s". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 0) return `-${formatDuration(-ms)}`;
  const rounded = Math.round(ms);
  if (rounded === 0) return '0s';
  if (rounded < 1_000) return `${rounded}ms`;
  const hours = Math.floor(rounded / unitMs.h);
  const minutes = Math.floor((rounded % unitMs.h) / unitMs.m);
  const restMs = rounded % unitMs.m;
  let out = '';
  if (hours > 0) out += `${hours}h`;
  if (minutes > 0) out += `${minutes}m`;
  if (restMs > 0) {
    // Three decimals are exact for whole milliseconds; trailing zeros only add noise.
    out += `${(restMs / 1_000).toFixed(3).replace(/\.?0+$/, '')}s`;
  }
  return out;
}
