// An SVG chart of a simulated run: the pool's instances by state as stacked areas over time (left
// axis), and the queue's length as a dashed line on its own right-hand axis. The document is
// self-contained (no fonts, scripts or stylesheets fetched from anywhere) and well-formed XML.

export interface ChartPoint {
  /** Simulated seconds since the start of the run. */
  t: number;
  /** Instances by state name, e.g. creating, booting, idle, running, shutdown. */
  instances: Record<string, number>;
  /** Containers waiting in the queue. */
  queued: number;
}

export interface ChartOptions {
  title: string;
  /** Pixels; default 1000. */
  width?: number;
  /** Pixels; default 500. */
  height?: number;
  /** The most samples drawn; more are merged into buckets keeping each series' maximum. Default 2000. */
  maxPoints?: number;
}

export const defaultMaxPoints = 2000;

/** Stacking order (bottom first) for the states the pool knows; any other state goes on top, by name. */
const stateOrder = ['running', 'idle', 'booting', 'creating', 'draining', 'shutdown'];

const stateColors: Record<string, string> = {
  running: '#2e7d32',
  idle: '#9ccc65',
  booting: '#ffb300',
  creating: '#fb8c00',
  draining: '#8e24aa',
  shutdown: '#9e9e9e',
};
const otherColors = ['#1e88e5', '#00897b', '#6d4c41', '#d81b60', '#5e35b1', '#546e7a', '#c0ca33', '#00acc1'];
const queuedColor = '#c62828';

/** Escapes text for XML character data and attribute values. */
export function escapeXml(text: string): string {
  // Characters XML 1.0 does not allow at all are dropped (a state name or title could hold one).
  // eslint-disable-next-line no-control-regex
  const allowed = text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '');
  return allowed.replace(/[&<>"']/g, (c) => {
    switch (c) {
      case '&':
        return '&amp;';
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '"':
        return '&quot;';
      default:
        return '&apos;';
    }
  });
}

/** The states present in the points (a state counts if any point names it), in stacking order. */
export function chartStates(points: readonly ChartPoint[]): string[] {
  const seen = new Set<string>();
  for (const point of points) for (const state of Object.keys(point.instances)) seen.add(state);
  const known = stateOrder.filter((state) => seen.has(state));
  const others = [...seen].filter((state) => !stateOrder.includes(state)).sort();
  return [...known, ...others];
}

function finiteOr0(value: number | undefined): number {
  return value !== undefined && Number.isFinite(value) ? value : 0;
}

/** The largest of the values (0 for none); a loop, not Math.max(...values), so any count works. */
function maxOf(values: Iterable<number>): number {
  let max = 0;
  let any = false;
  for (const value of values) {
    if (!any || value > max) max = value;
    any = true;
  }
  return max;
}

/**
 * At most maxPoints samples, in time order: consecutive samples are merged into equal buckets,
 * each keeping its first time and the maximum of every series within it, so a spike one sample
 * wide still shows. Fewer points than maxPoints are returned as they are (sorted by time).
 */
export function downsample(points: readonly ChartPoint[], maxPoints: number = defaultMaxPoints): ChartPoint[] {
  if (!Number.isInteger(maxPoints) || maxPoints < 1) throw new RangeError(`maxPoints must be an integer ≥ 1, got ${maxPoints}`);
  const sorted = [...points].sort((a, b) => a.t - b.t);
  if (sorted.length <= maxPoints) return sorted;
  const bucketSize = Math.ceil(sorted.length / maxPoints);
  const states = chartStates(sorted);
  const result: ChartPoint[] = [];
  for (let start = 0; start < sorted.length; start += bucketSize) {
    const bucket = sorted.slice(start, start + bucketSize);
    const instances: Record<string, number> = {};
    for (const state of states) {
      if (bucket.some((point) => state in point.instances)) {
        instances[state] = maxOf(bucket.map((point) => finiteOr0(point.instances[state])));
      }
    }
    result.push({ t: bucket[0]!.t, instances, queued: maxOf(bucket.map((point) => finiteOr0(point.queued))) });
  }
  return result;
}

/** Round tick values covering [0, max]: 1, 2 or 5 times a power of ten apart, integers at least 1 apart if `integer`. */
function niceTicks(max: number, target: number, integer: boolean): { top: number; ticks: number[] } {
  const upper = max > 0 ? max : 1;
  const raw = upper / Math.max(1, target);
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  if (integer) step = Math.max(1, Math.round(step));
  const top = Math.ceil(upper / step) * step;
  const ticks: number[] = [];
  for (let i = 0; i * step <= top + step / 1e6; i++) ticks.push(round(i * step, 6));
  return { top, ticks };
}

/** Ticks in [min, max], 1/2/5 × 10^k (or whole-hour friendly 3, 6, 12, 24) apart. */
function timeTicks(minH: number, maxH: number, target: number): number[] {
  const span = maxH - minH;
  const raw = span / Math.max(1, target);
  let step: number;
  if (raw >= 1) {
    step = [1, 2, 3, 6, 12, 24, 48, 72, 168].find((s) => s >= raw) ?? Math.ceil(raw / 168) * 168;
  } else {
    const power = 10 ** Math.floor(Math.log10(raw));
    step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
    // Quarter and half hours read better than 0.2 h.
    if (step > 0.1 && step < 1) step = step <= 0.25 ? 0.25 : 0.5;
  }
  const ticks: number[] = [];
  const first = Math.ceil(minH / step - 1e-9);
  for (let i = first; i * step <= maxH + step * 1e-9; i++) ticks.push(round(i * step, 6));
  return ticks;
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

/** A coordinate for the SVG text: one decimal, no trailing zeros. */
function c(value: number): string {
  return String(round(value, 1));
}

function formatNumber(value: number): string {
  if (Number.isInteger(value)) return String(value);
  return String(round(value, 3));
}

function formatCount(value: number): string {
  if (Math.abs(value) >= 10_000) return `${round(value / 1000, 1)}k`;
  return formatNumber(value);
}

/** Renders the points as a self-contained SVG document. */
export function renderChart(points: ChartPoint[], options: ChartOptions): string {
  const width = options.width ?? 1000;
  const height = options.height ?? 500;
  if (!(Number.isFinite(width) && width >= 200)) throw new RangeError(`chart width must be at least 200, got ${width}`);
  if (!(Number.isFinite(height) && height >= 150)) throw new RangeError(`chart height must be at least 150, got ${height}`);
  for (const point of points) {
    if (!Number.isFinite(point.t)) throw new RangeError(`chart point time must be a finite number, got ${point.t}`);
  }
  const drawn = downsample(points, options.maxPoints ?? defaultMaxPoints);
  const states = chartStates(drawn);
  const colorOf = new Map<string, string>();
  let other = 0;
  for (const state of states) colorOf.set(state, stateColors[state] ?? otherColors[other++ % otherColors.length]!);

  // Layout: title on top, the plot, then the x axis and the legend below it.
  const legendEntries = states.length + 1;
  const legendItemWidth = 150;
  const legendPerRow = Math.max(1, Math.floor((width - 80) / legendItemWidth));
  const legendRows = Math.ceil(legendEntries / legendPerRow);
  const margin = { top: 44, right: 64, bottom: 56 + legendRows * 20, left: 64 };
  const plotW = width - margin.left - margin.right;
  const plotH = Math.max(40, height - margin.top - margin.bottom);
  const x0 = margin.left;
  const y0 = margin.top + plotH; // the plot's bottom edge

  // Scales.
  const firstT = drawn[0]?.t ?? 0;
  const lastT = drawn[drawn.length - 1]?.t ?? 0;
  const minH = firstT / 3600;
  const maxH = lastT > firstT ? lastT / 3600 : minH + 1;
  const xOf = (t: number): number => x0 + ((t / 3600 - minH) / (maxH - minH)) * plotW;
  const stackTotals = drawn.map((point) => states.reduce((sum, state) => sum + Math.max(0, finiteOr0(point.instances[state])), 0));
  const left = niceTicks(maxOf(stackTotals), 5, true);
  const right = niceTicks(maxOf(drawn.map((point) => finiteOr0(point.queued))), 5, true);
  const yLeft = (v: number): number => y0 - (v / left.top) * plotH;
  const yRight = (v: number): number => y0 - (v / right.top) * plotH;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${c(width)}" height="${c(height)}" viewBox="0 0 ${c(width)} ${c(height)}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<title>${escapeXml(options.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${c(width)}" height="${c(height)}" fill="#ffffff"/>`);
  out.push(`<text x="${c(width / 2)}" y="26" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(options.title)}</text>`);

  // Grid and axes.
  out.push('<g class="axes" stroke="#e0e0e0" stroke-width="1">');
  for (const tick of left.ticks) out.push(`<line x1="${c(x0)}" y1="${c(yLeft(tick))}" x2="${c(x0 + plotW)}" y2="${c(yLeft(tick))}"/>`);
  out.push('</g>');

  if (drawn.length === 0) {
    out.push(`<text x="${c(x0 + plotW / 2)}" y="${c(margin.top + plotH / 2)}" text-anchor="middle" fill="#757575">no data</text>`);
  }

  // Stacked areas, bottom state first.
  const lower = drawn.map(() => 0);
  for (const state of states) {
    const upper = drawn.map((point, i) => lower[i]! + Math.max(0, finiteOr0(point.instances[state])));
    const top = drawn.map((point, i) => `${c(xOf(point.t))},${c(yLeft(upper[i]!))}`);
    const bottom = drawn.map((point, i) => `${c(xOf(point.t))},${c(yLeft(lower[i]!))}`).reverse();
    const d = drawn.length === 1 ? singlePointArea(xOf(drawn[0]!.t), yLeft(upper[0]!), yLeft(lower[0]!)) : `M${top.join('L')}L${bottom.join('L')}Z`;
    const color = colorOf.get(state)!;
    out.push(
      `<path class="series" data-series="${escapeXml(`state:${state}`)}" d="${d}" fill="${color}" fill-opacity="0.85" stroke="${color}" stroke-width="0.5"><title>${escapeXml(state)}</title></path>`,
    );
    upper.forEach((value, i) => (lower[i] = value));
  }

  // The queue on the right-hand axis.
  if (drawn.length > 0) {
    let d: string;
    if (drawn.length === 1) {
      const x = xOf(drawn[0]!.t);
      const y = yRight(finiteOr0(drawn[0]!.queued));
      d = `M${c(x - 2)},${c(y)}L${c(x + 2)},${c(y)}`;
    } else {
      d = `M${drawn.map((point) => `${c(xOf(point.t))},${c(yRight(finiteOr0(point.queued)))}`).join('L')}`;
    }
    out.push(
      `<path class="series" data-series="queued" d="${d}" fill="none" stroke="${queuedColor}" stroke-width="1.5" stroke-dasharray="5,3"><title>queued</title></path>`,
    );
  }

  // Axis lines, ticks and labels.
  out.push('<g class="axis-lines" stroke="#424242" stroke-width="1">');
  out.push(`<line x1="${c(x0)}" y1="${c(margin.top)}" x2="${c(x0)}" y2="${c(y0)}"/>`);
  out.push(`<line x1="${c(x0 + plotW)}" y1="${c(margin.top)}" x2="${c(x0 + plotW)}" y2="${c(y0)}" stroke="${queuedColor}"/>`);
  out.push(`<line x1="${c(x0)}" y1="${c(y0)}" x2="${c(x0 + plotW)}" y2="${c(y0)}"/>`);
  out.push('</g>');

  out.push('<g class="y-left" text-anchor="end" fill="#424242">');
  for (const tick of left.ticks) out.push(`<text x="${c(x0 - 6)}" y="${c(yLeft(tick) + 4)}">${formatCount(tick)}</text>`);
  out.push('</g>');
  out.push(
    `<text x="16" y="${c(margin.top + plotH / 2)}" transform="rotate(-90 16 ${c(margin.top + plotH / 2)})" text-anchor="middle" fill="#424242">instances</text>`,
  );

  out.push(`<g class="y-right" text-anchor="start" fill="${queuedColor}">`);
  for (const tick of right.ticks) out.push(`<text x="${c(x0 + plotW + 6)}" y="${c(yRight(tick) + 4)}">${formatCount(tick)}</text>`);
  out.push('</g>');
  const rightLabelX = width - 12;
  out.push(
    `<text x="${c(rightLabelX)}" y="${c(margin.top + plotH / 2)}" transform="rotate(90 ${c(rightLabelX)} ${c(margin.top + plotH / 2)})" text-anchor="middle" fill="${queuedColor}">queued</text>`,
  );

  out.push('<g class="x-axis" text-anchor="middle" fill="#424242">');
  for (const tick of timeTicks(minH, maxH, Math.max(2, Math.floor(plotW / 80)))) {
    const x = xOf(tick * 3600);
    out.push(`<line x1="${c(x)}" y1="${c(y0)}" x2="${c(x)}" y2="${c(y0 + 4)}" stroke="#424242"/>`);
    out.push(`<text x="${c(x)}" y="${c(y0 + 18)}">${formatNumber(tick)} h</text>`);
  }
  out.push('</g>');
  out.push(`<text x="${c(x0 + plotW / 2)}" y="${c(y0 + 36)}" text-anchor="middle" fill="#424242">simulated time (hours)</text>`);

  // Legend.
  out.push('<g class="legend">');
  const legendTop = y0 + 48;
  const entries: { label: string; swatch: (x: number, y: number) => string }[] = [
    ...states.map((state) => ({
      label: state,
      swatch: (x: number, y: number) => `<rect x="${c(x)}" y="${c(y - 9)}" width="12" height="12" fill="${colorOf.get(state)!}"/>`,
    })),
    {
      label: 'queued (right axis)',
      swatch: (x: number, y: number) =>
        `<line x1="${c(x)}" y1="${c(y - 3)}" x2="${c(x + 12)}" y2="${c(y - 3)}" stroke="${queuedColor}" stroke-width="2" stroke-dasharray="4,2"/>`,
    },
  ];
  entries.forEach((entry, i) => {
    const x = x0 + (i % legendPerRow) * legendItemWidth;
    const y = legendTop + Math.floor(i / legendPerRow) * 20;
    out.push(entry.swatch(x, y));
    out.push(`<text x="${c(x + 18)}" y="${c(y + 1)}" fill="#212121">${escapeXml(entry.label)}</text>`);
  });
  out.push('</g>');

  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** A single sample drawn as a thin bar, so it is visible at all. */
function singlePointArea(x: number, yTop: number, yBottom: number): string {
  return `M${c(x - 2)},${c(yTop)}L${c(x + 2)},${c(yTop)}L${c(x + 2)},${c(yBottom)}L${c(x - 2)},${c(yBottom)}Z`;
}
