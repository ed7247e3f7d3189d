// The daemon's logger: pino, writing readable lines to a terminal and JSON lines to anything else,
// unless log.format (or `drover run --log-format`) names one.
import { pino, type Logger } from 'pino';
import type { LogFormat, LogSettings } from '../config/schema.js';
import { prettyStream } from './pretty.js';

/** `auto` made definite: pretty when `out` is a terminal. */
export function effectiveLogFormat(format: LogFormat, out: { isTTY?: boolean }): 'pretty' | 'json' {
  return format === 'auto' ? (out.isTTY === true ? 'pretty' : 'json') : format;
}

export function createLogger(settings: LogSettings, out: NodeJS.WriteStream = process.stdout): Logger {
  return pino({ level: settings.level }, effectiveLogFormat(settings.format, out) === 'pretty' ? prettyStream(out) : out);
}
