// The readable log lines a terminal gets: pino's JSON entries turned into one line each, multi-line
// values (a container's output, an error's stack) as plain indented lines, and JSON kept elsewhere.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createLogger, effectiveLogFormat } from '../src/log/logger.js';
import { formatLogLine, prettyStream } from '../src/log/pretty.js';

const time = new Date(2026, 0, 2, 3, 4, 5, 67).getTime();
const entry = (fields: Record<string, unknown>) => JSON.stringify({ level: 30, time, pid: 4242, hostname: 'box', ...fields });

/** What a terminal stream records. */
function sink(isTTY: boolean) {
  const out = { isTTY, text: '', write: (text: string) => ((out.text += text), true) };
  return out;
}

describe('formatLogLine', () => {
  it('writes local time, level and message, then the fields as key=value, without pid and hostname', () => {
    expect(formatLogLine(entry({ msg: 'drover started', poolName: 'drover-loopback', maxInstances: 2, ok: true, url: 'http://127.0.0.1:8420' }))).toBe(
      '03:04:05.067 INFO  drover started poolName=drover-loopback maxInstances=2 ok=true url=http://127.0.0.1:8420\n',
    );
  });

  it('quotes strings with spaces, quotes, = or nothing in them, and writes arrays, objects and null as JSON', () => {
    expect(formatLogLine(entry({ msg: 'm', reason: 'probe failed: exit 1', empty: '', eq: 'a=b', types: ['small', 'large'], from: null, limits: { max: 2 } }))).toBe(
      '03:04:05.067 INFO  m reason="probe failed: exit 1" empty="" eq="a=b" types=["small","large"] from=null limits={"max":2}\n',
    );
  });

  it('names every level, padded to one width', () => {
    const levels = [10, 20, 30, 40, 50, 60].map((level) => formatLogLine(JSON.stringify({ level, time, msg: 'x' })).slice(13, 19));
    expect(levels).toEqual(['TRACE ', 'DEBUG ', 'INFO  ', 'WARN  ', 'ERROR ', 'FATAL ']);
  });

  it("prints a value of several lines, such as a container's output, as plain lines under the entry", () => {
    const line = entry({ msg: 'sample container finished', state: 'complete', exitCode: 0, output: 'hello from Drover\n\nsecond line\n' });
    expect(formatLogLine(line)).toBe(
      ['03:04:05.067 INFO  sample container finished state=complete exitCode=0', '  output:', '    hello from Drover', '', '    second line', ''].join('\n'),
    );
  });

  it("prints an error's stack under the entry", () => {
    const error = new Error('port taken');
    error.stack = 'Error: port taken\n    at listen (net.js:1:1)';
    const logged: string[] = [];
    pino({ level: 'info', timestamp: () => `,"time":${time}` }, { write: (text: string) => logged.push(text) }).error({ err: error }, 'drover did not stop cleanly');
    expect(formatLogLine(logged[0] ?? '')).toBe(
      ['03:04:05.067 ERROR drover did not stop cleanly', '  err:', '    Error: port taken', '        at listen (net.js:1:1)', ''].join('\n'),
    );
  });

  it('passes a line that is not a JSON object through unchanged', () => {
    expect(formatLogLine('not json\n')).toBe('not json\n');
    expect(formatLogLine('[1,2]')).toBe('[1,2]\n');
  });
});

describe('the daemon logger', () => {
  it('is pretty on a terminal and JSON elsewhere, unless the format is named', () => {
    expect(effectiveLogFormat('auto', { isTTY: true })).toBe('pretty');
    expect(effectiveLogFormat('auto', { isTTY: false })).toBe('json');
    expect(effectiveLogFormat('auto', {})).toBe('json');
    expect(effectiveLogFormat('json', { isTTY: true })).toBe('json');
    expect(effectiveLogFormat('pretty', { isTTY: false })).toBe('pretty');
  });

  it('writes readable lines to a terminal', () => {
    const terminal = sink(true);
    createLogger({ level: 'info', format: 'auto' }, terminal as unknown as NodeJS.WriteStream).info({ instanceId: 'lo-1' }, 'runner installed');
    expect(terminal.text).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}runner installed instanceId=lo-1\n$/);
  });

  it('writes JSON lines to anything else', () => {
    const pipe = sink(false);
    createLogger({ level: 'info', format: 'auto' }, pipe as unknown as NodeJS.WriteStream).info({ instanceId: 'lo-1' }, 'runner installed');
    expect(JSON.parse(pipe.text)).toMatchObject({ level: 30, msg: 'runner installed', instanceId: 'lo-1' });
  });

  it('formats each entry of a chunk holding several', () => {
    const terminal = sink(true);
    prettyStream(terminal).write(`${entry({ msg: 'one' })}\n${entry({ msg: 'two' })}\n`);
    expect(terminal.text).toBe('03:04:05.067 INFO  one\n03:04:05.067 INFO  two\n');
  });
});
