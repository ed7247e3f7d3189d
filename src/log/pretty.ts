// Log lines for a person at a terminal: each of pino's JSON entries becomes one line,
// `HH:MM:SS.mmm LEVEL message key=value ...`, and a value of several lines (a container's output,
// an error's stack) follows it as plain lines, indented under its key.
import type { DestinationStream } from 'pino';

const levelNames: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** pino's own fields: the time, level and message lead the line; pid and hostname say nothing at a terminal. */
const ownFields = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** A string shown as is in `key=value`; anything else (spaces, quotes, `=`, control characters, empty) is JSON-quoted. */
const bare = /^[^\s"=\p{Cc}]+$/u;

/** One pino JSON line as the readable line (plus any block lines), ending in a newline. A line that is not JSON passes unchanged. */
export function formatLogLine(line: string): string {
  const text = line.replace(/\n$/, '');
  let entry: unknown;
  try {
    entry = JSON.parse(text);
  } catch {
    return `${text}\n`;
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return `${text}\n`;
  const fields = entry as Record<string, unknown>;

  const head: string[] = [];
  if (typeof fields.time === 'number') head.push(clockTime(new Date(fields.time)));
  if (typeof fields.level === 'number') head.push((levelNames[fields.level] ?? `LEVEL${fields.level}`).padEnd(5));
  if (typeof fields.msg === 'string') head.push(fields.msg);
  const blocks: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (ownFields.has(key)) continue;
    const lines = blockLines(value);
    if (lines === undefined) head.push(`${key}=${inline(value)}`);
    else blocks.push(`  ${key}:`, ...lines.map((blockLine) => (blockLine === '' ? '' : `    ${blockLine}`)));
  }
  return `${[head.join(' '), ...blocks].join('\n')}\n`;
}

/** A pino destination that writes each entry to `out` as formatLogLine shows it. */
export function prettyStream(out: { write(text: string): unknown }): DestinationStream {
  return {
    write(chunk: string) {
      // pino hands over one entry per write; splitting anyway keeps a batched chunk readable.
      for (const line of chunk.split('\n')) if (line !== '') out.write(formatLogLine(line));
    },
  };
}

function clockTime(date: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, '0')}`;
}

/** The lines of a value shown as a block: a string of several lines, or an error's stack. */
function blockLines(value: unknown): string[] | undefined {
  let text: string | undefined;
  if (typeof value === 'string' && value.includes('\n')) text = value;
  // pino's err serializer gives { type, message, stack }; the stack's first line holds the message.
  else if (typeof value === 'object' && value !== null && typeof (value as { stack?: unknown }).stack === 'string') text = (value as { stack: string }).stack;
  return text?.replace(/\r?\n$/, '').split(/\r?\n/);
}

function inline(value: unknown): string {
  if (typeof value === 'string') return bare.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}
