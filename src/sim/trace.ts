// A replay trace: a CSV of container submissions for `drover simulate --trace FILE`.
//
//   submit_s,duration_s,vcpus,ram_mib,priority
//   0,312.5,1,2048,0
//   1.25,40,2,4096,1
//
// The header names the columns, in any order; submit_s, duration_s, vcpus and ram_mib are
// required, priority is optional (default 0) and any other column is ignored. Values may be
// double-quoted (RFC 4180: a quote inside a quoted value is written twice). Blank lines, CRLF line
// ends, a leading byte-order mark and a trailing newline are all fine; rows may come in any order
// and are returned sorted by submit time (rows submitted at the same time keep their file order).
import { readFileSync } from 'node:fs';

export interface TraceRow {
  /** Seconds after the start of the trace at which the container is submitted (≥ 0). */
  submitS: number;
  /** How long the container runs once started, in seconds (≥ 0). */
  durationS: number;
  /** vCPUs the container needs (integer ≥ 1). */
  vcpus: number;
  /** RAM the container needs in MiB (integer ≥ 1). */
  ramMiB: number;
  /** Queue priority, higher first (integer, may be negative; default 0). */
  priority: number;
}

/** A trace that cannot be read: `message` is `source:line: detail`, line 1-based in the file. */
export class TraceError extends Error {
  readonly source: string;
  readonly line: number;
  /** The column the error is about, when it is about one. */
  readonly column: string | undefined;

  constructor(source: string, line: number, detail: string, column?: string) {
    super(`${source}:${line}: ${column === undefined ? '' : `${column}: `}${detail}`);
    this.name = 'TraceError';
    this.source = source;
    this.line = line;
    this.column = column;
  }
}

const requiredColumns = ['submit_s', 'duration_s', 'vcpus', 'ram_mib'] as const;
const optionalColumns = ['priority'] as const;
type Column = (typeof requiredColumns)[number] | (typeof optionalColumns)[number];

interface CsvRecord {
  /** 1-based line on which the record starts. */
  line: number;
  fields: string[];
  /** True for a line holding nothing at all (not even a quoted empty value). */
  blank: boolean;
}

/** Splits CSV text into records (RFC 4180 quoting; a quoted value may span lines). */
function* csvRecords(text: string, source: string): Generator<CsvRecord> {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let field = '';
    let quotedAny = false;
    let endOfRecord = false;
    while (!endOfRecord) {
      // One field, starting at i.
      if (text[i] === '"') {
        quotedAny = true;
        const quoteLine = line;
        i++;
        for (;;) {
          if (i >= n) throw new TraceError(source, quoteLine, 'unterminated quoted value');
          const c = text[i];
          if (c === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === '\n') line++;
          field += c;
          i++;
        }
        // After the closing quote: only a separator or the end of the record may follow.
        const after = text[i];
        if (after !== undefined && after !== ',' && after !== '\n' && !(after === '\r' && text[i + 1] === '\n')) {
          throw new TraceError(source, line, `unexpected ${JSON.stringify(after)} after a closing quote`);
        }
      } else {
        while (i < n) {
          const c = text[i];
          if (c === ',' || c === '\n' || (c === '\r' && text[i + 1] === '\n')) break;
          if (c === '"') throw new TraceError(source, line, 'a quote inside an unquoted value (quote the whole value and double the quote)');
          field += c;
          i++;
        }
      }
      fields.push(field);
      field = '';
      const sep = text[i];
      if (sep === ',') {
        i++;
      } else {
        // End of line or of text.
        if (sep === '\r') i += 2;
        else if (sep === '\n') i++;
        if (sep !== undefined) line++;
        endOfRecord = true;
      }
    }
    const blank = !quotedAny && fields.length === 1 && (fields[0] ?? '').trim() === '';
    yield { line: startLine, fields, blank };
  }
}

const decimal = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

function parseNumber(raw: string): number | undefined {
  const s = raw.trim();
  if (!decimal.test(s)) return undefined;
  const value = Number(s);
  return Number.isFinite(value) ? value : undefined;
}

/**
 * Parses a trace. `source` names it in errors (usually the file's path). Throws a TraceError at
 * the first problem.
 */
export function parseTrace(text: string, source: string): TraceRow[] {
  const records = csvRecords(text, source);
  // The first non-blank record is the header (stepped by hand: a for-of with break would close the generator).
  let header: CsvRecord | undefined;
  for (let next = records.next(); !next.done; next = records.next()) {
    if (!next.value.blank) {
      header = next.value;
      break;
    }
  }
  const found = header ? header.fields.map((name) => name.trim()) : [];
  const headerLine = header?.line ?? 1;
  const index = new Map<Column, number>();
  found.forEach((name, i) => {
    const key = name.toLowerCase();
    if ((requiredColumns as readonly string[]).includes(key) || (optionalColumns as readonly string[]).includes(key)) {
      if (index.has(key as Column)) throw new TraceError(source, headerLine, `column ${key} appears more than once in the header`);
      index.set(key as Column, i);
    }
  });
  const missing = requiredColumns.filter((name) => !index.has(name));
  if (missing.length > 0) {
    const foundText = found.length === 0 || (found.length === 1 && found[0] === '') ? '(none)' : found.join(',');
    throw new TraceError(
      source,
      headerLine,
      `missing required column${missing.length === 1 ? '' : 's'} ${missing.join(', ')} (columns found: ${foundText}; required: ${requiredColumns.join(',')}, optional: ${optionalColumns.join(',')})`,
    );
  }

  const rows: TraceRow[] = [];
  for (const record of records) {
    if (record.blank) continue;
    const cell = (column: Column): string | undefined => {
      const i = index.get(column);
      return i === undefined ? undefined : record.fields[i];
    };
    const fail = (column: Column, detail: string): never => {
      throw new TraceError(source, record.line, detail, column);
    };
    const required = (column: Column): string => {
      const raw = cell(column);
      if (raw === undefined) {
        return fail(column, `missing value (the row has ${record.fields.length} field${record.fields.length === 1 ? '' : 's'}, the header ${found.length})`);
      }
      return raw;
    };
    const nonNegative = (column: Column): number => {
      const raw = required(column);
      const value = parseNumber(raw);
      if (value === undefined || value < 0) return fail(column, `expected a number ≥ 0, got ${JSON.stringify(raw)}`);
      return value;
    };
    const positiveInteger = (column: Column): number => {
      const raw = required(column);
      const value = parseNumber(raw);
      if (value === undefined || !Number.isSafeInteger(value) || value < 1) {
        return fail(column, `expected an integer ≥ 1, got ${JSON.stringify(raw)}`);
      }
      return value;
    };
    const submitS = nonNegative('submit_s');
    const durationS = nonNegative('duration_s');
    const vcpus = positiveInteger('vcpus');
    const ramMiB = positiveInteger('ram_mib');
    const integer = (column: Column): number => {
      const raw = cell(column);
      if (raw === undefined || raw.trim() === '') return 0; // absent column or empty value: the default
      const value = parseNumber(raw);
      if (value === undefined || !Number.isSafeInteger(value)) return fail(column, `expected an integer, got ${JSON.stringify(raw)}`);
      return value === 0 ? 0 : value; // never -0
    };
    const priority = integer('priority');
    rows.push({ submitS, durationS, vcpus, ramMiB, priority });
  }
  // Array.prototype.sort is stable: rows submitted at the same time keep their file order.
  return rows.sort((a, b) => a.submitS - b.submitS);
}

/** Reads and parses a trace file; the path names it in errors. */
export function readTrace(path: string): TraceRow[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`trace file not found: ${path}`, { cause: error });
    if (code === 'EISDIR') throw new Error(`trace file is a directory: ${path}`, { cause: error });
    throw new Error(`cannot read trace file ${path}: ${(error as Error).message}`, { cause: error });
  }
  return parseTrace(text, path);
}
