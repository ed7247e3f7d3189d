// The replay trace: parsing (header order, extra columns, CRLF, quotes, blank lines, sorting),
// its errors (each naming the line and the column), and the generated traces in bench/traces/
// (deterministic for a seed, and the committed files parse, are big enough and match seed 1).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultSeed, generateTraces, traceNames } from '../bench/traces/generate.js';
import { parseTrace, readTrace, TraceError, type TraceRow } from '../src/sim/trace.js';

const tracesDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'traces');
const scratch = mkdtempSync(join(tmpdir(), 'drover-sim-trace-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function row(submitS: number, durationS: number, vcpus = 1, ramMiB = 1024, priority = 0): TraceRow {
  return { submitS, durationS, vcpus, ramMiB, priority };
}

/** The TraceError parseTrace throws for text (fails the test if it parses). */
function traceError(text: string, source = 'trace.csv'): TraceError {
  try {
    parseTrace(text, source);
  } catch (error) {
    expect(error).toBeInstanceOf(TraceError);
    return error as TraceError;
  }
  throw new Error('expected the trace to be refused');
}

describe('parseTrace', () => {
  it('reads the columns by name in any order, ignores others and defaults priority to 0', () => {
    const text = 'ram_mib,name,vcpus,submit_s,duration_s\n2048,a,2,1.5,30\n1024,b,1,3,0.25\n';
    expect(parseTrace(text, 't.csv')).toEqual([row(1.5, 30, 2, 2048), row(3, 0.25, 1, 1024)]);
  });

  it('reads priority, negative ones included', () => {
    const text = 'submit_s,duration_s,vcpus,ram_mib,priority\n0,1,1,1,5\n0,1,1,1,-3\n0,1,1,1,\n';
    expect(parseTrace(text, 't.csv').map((r) => r.priority)).toEqual([5, -3, 0]);
  });

  it('takes CRLF line ends, blank lines, a byte-order mark and no trailing newline', () => {
    const text = '\ufeffsubmit_s,duration_s,vcpus,ram_mib\r\n\r\n10,5,1,512\r\n   \r\n\r\n20,6,1,512';
    expect(parseTrace(text, 't.csv')).toEqual([row(10, 5, 1, 512), row(20, 6, 1, 512)]);
  });

  it('takes double-quoted values, with doubled quotes and commas inside', () => {
    const text = '"submit_s","duration_s",vcpus,ram_mib,"note"\n"7","8.5","2",4096,"a ""quoted"", note"\n';
    expect(parseTrace(text, 't.csv')).toEqual([row(7, 8.5, 2, 4096)]);
  });

  it('sorts rows by submit time, keeping file order for equal times', () => {
    const text = ['submit_s,duration_s,vcpus,ram_mib,priority', '30,1,1,1,0', '10,1,1,1,1', '20,1,1,1,2', '10,1,1,1,3', '0,1,1,1,4'].join('\n');
    expect(parseTrace(text, 't.csv').map((r) => [r.submitS, r.priority])).toEqual([
      [0, 4],
      [10, 1],
      [10, 3],
      [20, 2],
      [30, 0],
    ]);
  });

  it('allows a header-only trace, with or without a newline', () => {
    expect(parseTrace('submit_s,duration_s,vcpus,ram_mib\n', 't.csv')).toEqual([]);
    expect(parseTrace('submit_s,duration_s,vcpus,ram_mib', 't.csv')).toEqual([]);
  });

  it('accepts fractional times, exponents and integral values written with a fraction', () => {
    expect(parseTrace('submit_s,duration_s,vcpus,ram_mib\n.5,1e2,2.0,1024\n', 't.csv')).toEqual([row(0.5, 100, 2, 1024)]);
  });
});

describe('parseTrace errors', () => {
  it('names the missing required columns and the ones found, at line 1', () => {
    const error = traceError('submit_s,vcpus,other\n1,1,1\n');
    expect(error.line).toBe(1);
    expect(error.source).toBe('trace.csv');
    expect(error.message).toMatch(/^trace\.csv:1: /);
    expect(error.message).toContain('duration_s, ram_mib');
    expect(error.message).toContain('columns found: submit_s,vcpus,other');
  });

  it('refuses an empty file as missing every column', () => {
    const error = traceError('');
    expect(error.line).toBe(1);
    expect(error.message).toContain('submit_s, duration_s, vcpus, ram_mib');
    expect(error.message).toContain('columns found: (none)');
  });

  it('refuses a column named twice', () => {
    const error = traceError('submit_s,duration_s,vcpus,ram_mib,vcpus\n');
    expect(error.line).toBe(1);
    expect(error.message).toContain('vcpus');
  });

  const header = 'submit_s,duration_s,vcpus,ram_mib,priority';
  const cases: { name: string; row: string; column: string; detail: string }[] = [
    { name: 'a word for duration_s', row: '0,abc,1,1,0', column: 'duration_s', detail: 'duration_s: expected a number ≥ 0, got "abc"' },
    { name: 'a negative submit_s', row: '-1,1,1,1,0', column: 'submit_s', detail: 'submit_s: expected a number ≥ 0, got "-1"' },
    { name: 'an empty submit_s', row: ',1,1,1,0', column: 'submit_s', detail: 'submit_s: expected a number ≥ 0, got ""' },
    { name: 'Infinity for duration_s', row: '0,Infinity,1,1,0', column: 'duration_s', detail: 'duration_s: expected a number ≥ 0, got "Infinity"' },
    { name: 'hex for submit_s', row: '0x10,1,1,1,0', column: 'submit_s', detail: 'submit_s: expected a number ≥ 0, got "0x10"' },
    { name: 'zero vcpus', row: '0,1,0,1,0', column: 'vcpus', detail: 'vcpus: expected an integer ≥ 1, got "0"' },
    { name: 'fractional vcpus', row: '0,1,1.5,1,0', column: 'vcpus', detail: 'vcpus: expected an integer ≥ 1, got "1.5"' },
    { name: 'zero ram_mib', row: '0,1,1,0,0', column: 'ram_mib', detail: 'ram_mib: expected an integer ≥ 1, got "0"' },
    { name: 'fractional priority', row: '0,1,1,1,0.5', column: 'priority', detail: 'priority: expected an integer, got "0.5"' },
    { name: 'a word for priority', row: '0,1,1,1,high', column: 'priority', detail: 'priority: expected an integer, got "high"' },
    { name: 'a short row', row: '0,1,1', column: 'ram_mib', detail: 'ram_mib: missing value' },
  ];
  for (const { name, row: bad, column, detail } of cases) {
    it(`refuses ${name}, naming the line and the column`, () => {
      // Line 4: the header, a good row, a blank line, then the bad row.
      const error = traceError(`${header}\n0,1,1,1,0\n\n${bad}\n5,1,1,1,0\n`);
      expect(error.line).toBe(4);
      expect(error.column).toBe(column);
      expect(error.message.startsWith(`trace.csv:4: ${detail}`)).toBe(true);
    });
  }

  it('counts lines inside a multi-line quoted value and across CRLF', () => {
    const error = traceError('submit_s,duration_s,vcpus,ram_mib,note\r\n0,1,1,1,"two\r\nlines"\r\n0,x,1,1,ok\r\n');
    expect(error.line).toBe(4);
    expect(error.message).toContain('trace.csv:4: duration_s:');
  });

  it('refuses an unterminated quote at the line it opens', () => {
    const error = traceError('submit_s,duration_s,vcpus,ram_mib\n0,1,1,1\n"5,1,1,1\n6,1,1,1\n');
    expect(error.line).toBe(3);
    expect(error.message).toContain('unterminated');
  });

  it('refuses a stray quote in an unquoted value', () => {
    const error = traceError('submit_s,duration_s,vcpus,ram_mib\n0,1"2,1,1\n');
    expect(error.line).toBe(2);
  });
});

describe('readTrace', () => {
  it('reads a file, naming it in errors', () => {
    const good = join(scratch, 'good.csv');
    writeFileSync(good, 'submit_s,duration_s,vcpus,ram_mib\n2,3,1,64\n');
    expect(readTrace(good)).toEqual([row(2, 3, 1, 64)]);
    const bad = join(scratch, 'bad.csv');
    writeFileSync(bad, 'submit_s,duration_s,vcpus,ram_mib\n2,3,one,64\n');
    expect(() => readTrace(bad)).toThrow(`${bad}:2: vcpus: expected an integer ≥ 1, got "one"`);
  });

  it('names the path of a missing file', () => {
    const missing = join(scratch, 'nope.csv');
    expect(() => readTrace(missing)).toThrow(`trace file not found: ${missing}`);
  });
});

describe('generated traces', () => {
  it('are byte-identical for the same seed and differ for another', () => {
    const a = join(scratch, 'a');
    const b = join(scratch, 'b');
    const c = join(scratch, 'c');
    generateTraces(a, 42);
    generateTraces(b, 42);
    generateTraces(c, 43);
    for (const name of traceNames) {
      const first = readFileSync(join(a, `${name}.csv`));
      expect(first.equals(readFileSync(join(b, `${name}.csv`)))).toBe(true);
      expect(first.equals(readFileSync(join(c, `${name}.csv`)))).toBe(false);
    }
  });

  it('committed in bench/traces/ are the ones seed 1 gives', () => {
    const dir = join(scratch, 'default');
    generateTraces(dir, defaultSeed);
    for (const name of traceNames) {
      const fresh = readFileSync(join(dir, `${name}.csv`));
      const committed = readFileSync(join(tracesDir, `${name}.csv`));
      expect(committed.equals(fresh), `${name}.csv is out of date: run npm run traces`).toBe(true);
    }
  });

  for (const name of ['steady', 'bursty', 'longtail']) {
    it(`${name}.csv parses, has ≥ 10,000 rows over ≥ 24 h, fits 16 vCPU / 64 GiB and is under 600 KB`, () => {
      const path = join(tracesDir, `${name}.csv`);
      const text = readFileSync(path, 'utf8');
      expect(Buffer.byteLength(text)).toBeLessThan(600 * 1024);
      expect(text.split('\n', 1)[0]).toBe('submit_s,duration_s,vcpus,ram_mib,priority');
      const rows = readTrace(path);
      expect(rows.length).toBeGreaterThanOrEqual(10_000);
      expect(rows[rows.length - 1]!.submitS - rows[0]!.submitS).toBeGreaterThanOrEqual(24 * 3600);
      // Already sorted in the file: parsing keeps the file's order.
      const fileSubmits = text.trim().split('\n').slice(1).map((line) => Number(line.split(',')[0]));
      expect(rows.map((r) => r.submitS)).toEqual(fileSubmits);
      for (const r of rows) {
        expect(r.vcpus).toBeLessThanOrEqual(16);
        expect(r.ramMiB).toBeLessThanOrEqual(64 * 1024);
      }
      // At most 3 decimals.
      expect(text).not.toMatch(/\.\d{4}/);
    });
  }

  it('have the shapes they promise', () => {
    const durations = (name: string): number[] => readTrace(join(tracesDir, `${name}.csv`)).map((r) => r.durationS);
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const steady = durations('steady');
    expect(median(steady)).toBeGreaterThan(200);
    expect(median(steady)).toBeLessThan(450);
    expect(Math.max(...steady)).toBeLessThanOrEqual(2 * 3600);
    const longtail = durations('longtail');
    expect(longtail.filter((d) => d < 120).length / longtail.length).toBeGreaterThan(0.8);
    expect(Math.max(...longtail)).toBeGreaterThan(3600);
    expect(Math.max(...longtail)).toBeLessThanOrEqual(12 * 3600);
    // Bursty: some minute holds at least 100 submissions.
    const perMinute = new Map<number, number>();
    for (const r of readTrace(join(tracesDir, 'bursty.csv'))) perMinute.set(Math.floor(r.submitS / 60), (perMinute.get(Math.floor(r.submitS / 60)) ?? 0) + 1);
    expect(Math.max(...perMinute.values())).toBeGreaterThanOrEqual(100);
  });
});
