// The simulation chart: a self-contained, well-formed SVG with the title escaped, one series per
// instance state present plus the queue, and downsampling that caps the samples drawn while keeping
// a one-sample spike.
import { describe, expect, it } from 'vitest';
import { type ChartPoint, chartStates, downsample, escapeXml, renderChart } from '../src/sim/chart.js';

interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  text: string;
}

/**
 * A small strict XML parser, enough to show the chart is well-formed: one root element, tags
 * balanced and nested, attributes quoted and not repeated, only the predefined and numeric entities,
 * no raw `<` or `&` in text or attribute values. Throws on anything else.
 */
function parseXml(xml: string): XmlElement {
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`not well-formed at offset ${i}: ${why} near ${JSON.stringify(xml.slice(i, i + 40))}`);
  };
  const checkText = (text: string): string => {
    if (text.includes('<')) fail('raw < in text');
    return text.replace(/&([^;]*);?/g, (whole, ref: string) => {
      if (!whole.endsWith(';')) fail(`bare & in ${JSON.stringify(text)}`);
      const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
      if (ref in named) return named[ref]!;
      const numeric = /^#(?:x([0-9a-fA-F]+)|([0-9]+))$/.exec(ref);
      if (!numeric) return fail(`unknown entity &${ref};`);
      return String.fromCodePoint(numeric[1] ? parseInt(numeric[1], 16) : Number(numeric[2]));
    });
  };
  const skipMisc = (): void => {
    for (;;) {
      const ws = /^\s*/.exec(xml.slice(i))![0].length;
      i += ws;
      if (xml.startsWith('<?', i)) {
        const end = xml.indexOf('?>', i);
        if (end < 0) fail('unterminated processing instruction');
        i = end + 2;
      } else if (xml.startsWith('<!--', i)) {
        const end = xml.indexOf('-->', i);
        if (end < 0) fail('unterminated comment');
        i = end + 3;
      } else {
        return;
      }
    }
  };
  const name = /^[A-Za-z_:][-A-Za-z0-9_:.]*/;
  const element = (): XmlElement => {
    if (xml[i] !== '<') fail('expected <');
    i++;
    const tag = name.exec(xml.slice(i))?.[0] ?? fail('expected a tag name');
    i += tag.length;
    const el: XmlElement = { name: tag, attributes: {}, children: [], text: '' };
    for (;;) {
      const ws = /^\s*/.exec(xml.slice(i))![0].length;
      i += ws;
      if (xml.startsWith('/>', i)) {
        i += 2;
        return el;
      }
      if (xml[i] === '>') {
        i++;
        break;
      }
      if (ws === 0) fail('expected whitespace before an attribute');
      const attr = name.exec(xml.slice(i))?.[0] ?? fail('expected an attribute name');
      i += attr.length;
      const m = /^\s*=\s*(["'])/.exec(xml.slice(i)) ?? fail(`attribute ${attr} without a quoted value`);
      i += m[0].length;
      const end = xml.indexOf(m[1]!, i);
      if (end < 0) fail('unterminated attribute value');
      if (attr in el.attributes) fail(`attribute ${attr} repeated`);
      el.attributes[attr] = checkText(xml.slice(i, end));
      i = end + 1;
    }
    for (;;) {
      const next = xml.indexOf('<', i);
      if (next < 0) fail(`unclosed <${tag}>`);
      el.text += checkText(xml.slice(i, next));
      i = next;
      if (xml.startsWith('</', i)) {
        i += 2;
        const closing = name.exec(xml.slice(i))?.[0];
        if (closing !== tag) fail(`</${closing}> closes <${tag}>`);
        i += tag.length;
        const m = /^\s*>/.exec(xml.slice(i)) ?? fail('expected >');
        i += m[0].length;
        return el;
      }
      if (xml.startsWith('<!--', i)) {
        const end = xml.indexOf('-->', i);
        if (end < 0) fail('unterminated comment');
        i = end + 3;
        continue;
      }
      el.children.push(element());
    }
  };
  skipMisc();
  const root = element();
  skipMisc();
  if (i !== xml.length) fail('content after the root element');
  return root;
}

function all(el: XmlElement, predicate: (e: XmlElement) => boolean): XmlElement[] {
  return [...(predicate(el) ? [el] : []), ...el.children.flatMap((child) => all(child, predicate))];
}

function series(root: XmlElement): string[] {
  return all(root, (e) => e.attributes['data-series'] !== undefined).map((e) => e.attributes['data-series']!);
}

/** Vertices of a path's d attribute (M/L commands only, as the chart writes them). */
function vertices(d: string): { x: number; y: number }[] {
  return d
    .replace(/Z$/, '')
    .split(/[ML]/)
    .filter(Boolean)
    .map((pair) => {
      const [x, y] = pair.split(',').map(Number);
      return { x: x!, y: y! };
    });
}

function day(): ChartPoint[] {
  const points: ChartPoint[] = [];
  for (let t = 0; t <= 24 * 3600; t += 600) {
    const hour = t / 3600;
    points.push({
      t,
      instances: { creating: hour % 3 === 0 ? 2 : 0, booting: 1, idle: 3, running: Math.round(10 + 5 * Math.sin(hour)), shutdown: 0 },
      queued: Math.round(50 + 40 * Math.cos(hour)),
    });
  }
  return points;
}

describe('the parser used here', () => {
  it('refuses what is not well-formed', () => {
    expect(() => parseXml('<a><b></a></b>')).toThrow();
    expect(() => parseXml('<a>1 < 2</a>')).toThrow();
    expect(() => parseXml('<a>R&D</a>')).toThrow();
    expect(() => parseXml('<a x="1" x="2"/>')).toThrow();
    expect(() => parseXml('<a/><b/>')).toThrow();
    expect(parseXml('<?xml version="1.0"?>\n<a t="&lt;&amp;">x &gt; y<b/></a>\n').attributes.t).toBe('<&');
  });
});

describe('renderChart', () => {
  it('writes a well-formed SVG document with the title escaped', () => {
    const title = 'steady.csv <max 10> & "friends" \'here\'';
    const svg = renderChart(day(), { title });
    const root = parseXml(svg);
    expect(root.name).toBe('svg');
    expect(root.attributes.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(svg).toContain(escapeXml(title));
    expect(svg).not.toContain('<max 10>');
    const texts = all(root, (e) => e.name === 'text' || e.name === 'title').map((e) => e.text);
    expect(texts).toContain(title);
  });

  it('is self-contained: no scripts, external references, stylesheets or web fonts', () => {
    const svg = renderChart(day(), { title: 'x' });
    expect(svg).not.toMatch(/<script|<style|@import|@font-face|href=|<image|<foreignObject/i);
    expect(svg.match(/https?:\/\/[^"]*/g)).toEqual(['http://www.w3.org/2000/svg']);
  });

  it('draws one series per state present in the data, plus the queue, with a legend', () => {
    const points: ChartPoint[] = [
      { t: 0, instances: { running: 1 }, queued: 5 },
      { t: 3600, instances: { running: 2, idle: 1 }, queued: 3 },
      { t: 7200, instances: { booting: 1, 'odd <state>': 2 }, queued: 0 },
    ];
    const root = parseXml(renderChart(points, { title: 't' }));
    expect(series(root).sort()).toEqual(['queued', 'state:booting', 'state:idle', 'state:odd <state>', 'state:running']);
    const texts = all(root, (e) => e.name === 'text').map((e) => e.text);
    for (const label of ['running', 'idle', 'booting', 'odd <state>', 'queued (right axis)']) expect(texts).toContain(label);
    expect(texts).not.toContain('creating');
  });

  it('labels the x axis in hours and both y axes', () => {
    const root = parseXml(renderChart(day(), { title: 't', width: 1200, height: 600 }));
    expect(root.attributes.width).toBe('1200');
    expect(root.attributes.viewBox).toBe('0 0 1200 600');
    const axisText = (cls: string): string[] => all(root, (e) => e.attributes.class === cls)[0]!.children.filter((e) => e.name === 'text').map((e) => e.text);
    const hours = axisText('x-axis');
    expect(hours[0]).toBe('0 h');
    expect(hours).toContain('24 h');
    expect(hours.every((label) => /^\d+(\.\d+)? h$/.test(label))).toBe(true);
    const left = axisText('y-left').map(Number);
    expect(left[0]).toBe(0);
    // Each axis reaches the top of what it shows: the stack of instances, the queue.
    const stackMax = Math.max(...day().map((p) => Object.values(p.instances).reduce((sum, n) => sum + n, 0)));
    expect(Math.max(...left)).toBeGreaterThanOrEqual(stackMax);
    expect(Math.max(...left)).toBeLessThan(stackMax * 2);
    const right = axisText('y-right').map(Number);
    expect(Math.max(...right)).toBeGreaterThanOrEqual(Math.max(...day().map((p) => p.queued)));
  });

  it('stacks the areas: the top state sits on the sum of those below', () => {
    const points: ChartPoint[] = [
      { t: 0, instances: { running: 4, idle: 2 }, queued: 0 },
      { t: 3600, instances: { running: 4, idle: 2 }, queued: 0 },
    ];
    const root = parseXml(renderChart(points, { title: 't' }));
    const path = (s: string): { x: number; y: number }[] => vertices(all(root, (e) => e.attributes['data-series'] === s)[0]!.attributes.d!);
    const running = path('state:running');
    const idle = path('state:idle');
    // The idle area's bottom edge is the running area's top edge.
    expect(idle[idle.length - 1]!.y).toBeCloseTo(running[0]!.y, 1);
    expect(idle[0]!.y).toBeLessThan(running[0]!.y);
  });

  it('renders an empty run and a single sample', () => {
    expect(parseXml(renderChart([], { title: 'empty' })).name).toBe('svg');
    const one = parseXml(renderChart([{ t: 60, instances: { idle: 1 }, queued: 2 }], { title: 'one' }));
    expect(series(one).sort()).toEqual(['queued', 'state:idle']);
  });

  it('caps the samples drawn and keeps a one-sample spike', () => {
    const points: ChartPoint[] = [];
    for (let i = 0; i < 20_000; i++) points.push({ t: i * 5, instances: { running: 3, idle: 1 }, queued: 7 });
    points[12_345] = { t: 12_345 * 5, instances: { running: 250, idle: 1 }, queued: 7 };
    points[17_001] = { t: 17_001 * 5, instances: { running: 3, idle: 1 }, queued: 900 };
    const root = parseXml(renderChart(points, { title: 'spike' }));
    const d = (s: string): string => all(root, (e) => e.attributes['data-series'] === s)[0]!.attributes.d!;
    const queued = vertices(d('queued'));
    expect(queued.length).toBeLessThanOrEqual(2000);
    expect(queued.length).toBeGreaterThan(1000);
    expect(vertices(d('state:running')).length).toBeLessThanOrEqual(4000); // top and bottom edges
    // The left axis reaches the spike's 251 instances, the right one the queue's 900.
    const axisMax = (cls: string): number =>
      Math.max(...all(root, (e) => e.attributes.class === cls)[0]!.children.filter((e) => e.name === 'text').map((e) => Number(e.text)));
    expect(axisMax('y-left')).toBeGreaterThanOrEqual(251);
    expect(axisMax('y-right')).toBeGreaterThanOrEqual(900);
    // And the queue line does climb to the top of the plot somewhere (the spike is drawn).
    const ys = queued.map((v) => v.y);
    expect(Math.min(...ys)).toBeLessThan(Math.max(...ys) - 200);
  });
});

describe('downsample', () => {
  it('caps the points, keeps each series maximum per bucket and the time order', () => {
    const points: ChartPoint[] = [];
    for (let i = 0; i < 10_001; i++) points.push({ t: (10_000 - i) * 2, instances: { running: 1 }, queued: 0 });
    points[4_321]!.instances.running = 99;
    points[777]!.queued = 55;
    const out = downsample(points, 2000);
    expect(out.length).toBeLessThanOrEqual(2000);
    expect(Math.max(...out.map((p) => p.instances.running!))).toBe(99);
    expect(Math.max(...out.map((p) => p.queued))).toBe(55);
    expect(out.filter((p) => p.instances.running === 99)).toHaveLength(1);
    const times = out.map((p) => p.t);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(times[0]).toBe(0);
  });

  it('leaves short runs as they are, sorted', () => {
    const points: ChartPoint[] = [
      { t: 2, instances: { idle: 1 }, queued: 0 },
      { t: 1, instances: { idle: 2 }, queued: 1 },
    ];
    expect(downsample(points, 2000).map((p) => p.t)).toEqual([1, 2]);
    expect(points[0]!.t).toBe(2); // the input is not reordered
  });

  it('refuses a cap below 1', () => {
    expect(() => downsample([], 0)).toThrow(RangeError);
  });
});

describe('chartStates', () => {
  it('orders the known states bottom-up and others after them by name', () => {
    const points: ChartPoint[] = [{ t: 0, instances: { zeta: 1, shutdown: 0, idle: 1, creating: 1, alpha: 2, running: 3, booting: 0 }, queued: 0 }];
    expect(chartStates(points)).toEqual(['running', 'idle', 'booting', 'creating', 'shutdown', 'alpha', 'zeta']);
  });
});
