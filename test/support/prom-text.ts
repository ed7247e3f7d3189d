// A strict parser of the Prometheus text exposition format (0.0.4), for tests that scrape /metrics:
// prom-client only writes the format. It throws on anything a Prometheus server would refuse, so a
// test that parses a scrape also checks that Prometheus could read it: malformed lines, bad metric
// or label names, bad escapes, unknown types, a TYPE after its samples, a family split in two,
// a sample twice, a histogram without its +Inf bucket, _count or _sum.

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** The sample's own name: `x_bucket`, `x_sum`, `x_count` for a histogram `x`. */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  type: MetricType;
  help: string | null;
  samples: Sample[];
}

export interface Histogram {
  /** Upper bounds and cumulative counts, by bound; the last bound is Infinity. */
  buckets: Array<{ le: number; count: number }>;
  count: number;
  sum: number;
}

export class PromTextError extends Error {
  constructor(
    readonly lineNumber: number,
    readonly line: string,
    reason: string,
  ) {
    super(`line ${lineNumber}: ${reason}: ${JSON.stringify(line)}`);
  }
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const types: ReadonlySet<string> = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Parses a scrape into its families, by name, in the order they appear. */
export function parsePromText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  /** Families whose lines have ended: another family's lines came after them. */
  const closed = new Set<string>();
  /** Samples seen, by name and labels; families given a TYPE. */
  const seen = new Set<string>();
  const typed = new Set<string>();
  let current: MetricFamily | null = null;

  const enter = (name: string, fail: (reason: string) => never): MetricFamily => {
    if (current?.name === name) return current;
    if (closed.has(name)) fail(`family ${name} continues after another family`);
    if (current !== null) closed.add(current.name);
    let family = families.get(name);
    if (!family) {
      family = { name, type: 'untyped', help: null, samples: [] };
      families.set(name, family);
    }
    current = family;
    return family;
  };

  const lines = text.split('\n');
  // The format ends every line with \n, the last one included.
  if (lines.at(-1) !== '') throw new PromTextError(lines.length, lines.at(-1) ?? '', 'the last line has no newline');
  lines.pop();
  for (const [index, line] of lines.entries()) {
    const fail = (reason: string): never => {
      throw new PromTextError(index + 1, line, reason);
    };
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const match = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!match) continue; // any other comment
      const [, keyword, name = '', rest = ''] = match;
      if (!metricName.test(name)) fail(`bad metric name ${name}`);
      const family = enter(name, fail);
      if (keyword === 'HELP') {
        if (family.help !== null) fail(`second HELP for ${name}`);
        family.help = unescape(rest, false, fail);
      } else {
        const type = rest.trim();
        if (!types.has(type)) fail(`unknown type ${type}`);
        if (family.samples.length > 0) fail(`TYPE of ${name} after its samples`);
        if (typed.has(name)) fail(`second TYPE for ${name}`);
        typed.add(name);
        family.type = type as MetricType;
      }
      continue;
    }
    const sample = parseSample(line, fail);
    const family = enter(familyOf(sample.name, current), fail);
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seen.has(key)) fail('the same sample twice');
    seen.add(key);
    if (family.type === 'histogram' && sample.name === `${family.name}_bucket` && sample.labels.le === undefined) fail('a histogram bucket without le');
    family.samples.push(sample);
  }
  for (const family of families.values()) {
    if (family.type === 'histogram') for (const labels of seriesOf(family)) histogramOf(family, labels);
  }
  return families;
}

/** The family a sample belongs to: the current one when the name is one of its sample names, else its own. */
function familyOf(name: string, current: MetricFamily | null): string {
  if (current === null) return name;
  if (name === current.name) return current.name;
  const suffixes =
    current.type === 'histogram' ? ['_bucket', '_sum', '_count'] : current.type === 'summary' ? ['_sum', '_count'] : [];
  return suffixes.some((suffix) => name === `${current.name}${suffix}`) ? current.name : name;
}

function parseSample(line: string, fail: (reason: string) => never): Sample {
  const nameMatch = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (!nameMatch?.[1]) return fail('a sample must start with a metric name');
  const name = nameMatch[1];
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === '{') {
    at++;
    for (;;) {
      if (line[at] === '}') {
        at++;
        break;
      }
      const label = /^([^=\s]*)="/.exec(line.slice(at));
      if (!label) return fail('expected label="value"');
      const key = label[1] ?? '';
      if (!labelName.test(key)) fail(`bad label name ${key}`);
      if (key in labels) fail(`label ${key} twice`);
      at += label[0].length;
      let raw = '';
      for (;;) {
        const char = line[at];
        if (char === undefined) return fail('unterminated label value');
        if (char === '"') break;
        if (char === '\\') {
          raw += char + (line[at + 1] ?? '');
          at += 2;
        } else {
          raw += char;
          at++;
        }
      }
      labels[key] = unescape(raw, true, fail);
      at++;
      if (line[at] === ',') at++;
      else if (line[at] !== '}') fail('expected , or } after a label');
    }
  }
  const rest = line.slice(at);
  const parts = /^ +(\S+)(?: +(-?\d+))? *$/.exec(rest);
  if (!parts?.[1]) return fail('expected a value after the name and labels');
  return { name, labels, value: parseValue(parts[1], fail) };
}

// As Prometheus reads values (Go's strconv.ParseFloat): NaN and [+-]Inf or Infinity in any case;
// prom-client writes NaN as "Nan".
function parseValue(text: string, fail: (reason: string) => never): number {
  const special = /^([-+]?)(inf|infinity|nan)$/i.exec(text);
  if (special) {
    if (special[2]?.toLowerCase() === 'nan') return special[1] === '' ? Number.NaN : fail(`bad value ${text}`);
    return special[1] === '-' ? -Infinity : Infinity;
  }
  if (!/^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/.test(text)) fail(`bad value ${text}`);
  return Number(text);
}

/** Undoes the format's escapes: \\ and \n everywhere, \" in label values only. */
function unescape(raw: string, quoted: boolean, fail: (reason: string) => never): string {
  return raw.replace(/\\(.?)/g, (_all, next: string) => {
    if (next === '\\') return '\\';
    if (next === 'n') return '\n';
    if (next === '"' && quoted) return '"';
    return quoted ? fail(`bad escape \\${next}`) : `\\${next}`;
  });
}

/** The label sets of a family's series; for a histogram without `le`. */
function seriesOf(family: MetricFamily): Array<Record<string, string>> {
  const series = new Map<string, Record<string, string>>();
  for (const sample of family.samples) {
    const { le: _le, ...labels } = sample.labels;
    series.set(JSON.stringify(Object.entries(labels).sort()), labels);
  }
  return [...series.values()];
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}

/** The family, or an error naming it: a test asking for a family expects it to be there. */
export function family(families: Map<string, MetricFamily>, name: string, type: MetricType): MetricFamily {
  const found = families.get(name);
  if (!found) throw new Error(`no metric family ${name} in the scrape`);
  if (found.type !== type) throw new Error(`${name} is a ${found.type}, expected a ${type}`);
  return found;
}

/** The value of the one sample of the family (or of one of its sample names) with exactly these labels. */
export function valueOf(found: MetricFamily, labels: Record<string, string> = {}, sampleName = found.name): number {
  const sample = found.samples.find((candidate) => candidate.name === sampleName && sameLabels(candidate.labels, labels));
  if (!sample) throw new Error(`no sample ${sampleName}${JSON.stringify(labels)} in ${found.name}`);
  return sample.value;
}

/**
 * One series of a histogram: its buckets by bound, count and sum. Throws unless it has a +Inf
 * bucket, a _count and a _sum.
 */
export function histogramOf(found: MetricFamily, labels: Record<string, string> = {}): Histogram {
  const buckets: Array<{ le: number; count: number }> = [];
  for (const sample of found.samples) {
    if (sample.name !== `${found.name}_bucket`) continue;
    const { le, ...rest } = sample.labels;
    if (le === undefined || !sameLabels(rest, labels)) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    if (Number.isNaN(bound)) throw new Error(`${found.name}: bad le ${le}`);
    buckets.push({ le: bound, count: sample.value });
  }
  buckets.sort((a, b) => a.le - b.le);
  if (buckets.at(-1)?.le !== Infinity) throw new Error(`${found.name}${JSON.stringify(labels)}: no +Inf bucket`);
  return {
    buckets,
    count: valueOf(found, labels, `${found.name}_count`),
    sum: valueOf(found, labels, `${found.name}_sum`),
  };
}
