// Which errors make `drover run` and `drover teardown` refuse to start (exit code 2, their message alone),
// decided in one place for both.
import { describe, expect, it } from 'vitest';
import { runExitCodes, teardownExitCodes } from '../src/cli/exit-codes.js';
import { refusal } from '../src/cli/refusals.js';
import { UnsupportedDriverError } from '../src/cloud/from-config.js';
import { ConfigError } from '../src/config/load.js';
import { StateLockedError } from '../src/daemon/state-lock.js';
import { StatePermissionError } from '../src/daemon/state-permissions.js';
import { QueueStorageError } from '../src/queue/storage.js';

describe('refusal', () => {
  it('gives the message of every error that means refused to start, and nothing for a bug', () => {
    const refusals: Error[] = [
      new ConfigError('config.yml', [{ path: 'pool.syncInterval', message: 'expected a duration' }]),
      new UnsupportedDriverError('cloud.driver: ec2 is not built yet'),
      new StateLockedError('queue.path', '/q.sqlite', { pid: 1, host: 'h', since: '2025-01-01T00:00:00Z' }, '/q.sqlite.lock'),
      new StatePermissionError('http.tokenFile', '/t', 0o644, 'file', 'the admin token'),
      new QueueStorageError('/q.sqlite', 'not a SQLite database'),
    ];
    for (const error of refusals) expect(refusal(error)).toBe(error.message);
    const taken = Object.assign(new Error('listen EADDRINUSE: address already in use 127.0.0.1:8420'), { code: 'EADDRINUSE' });
    expect(refusal(taken)).toBe('http.port: listen EADDRINUSE: address already in use 127.0.0.1:8420; is another daemon running? Stop it or set another port');
    expect(refusal(new TypeError('x is undefined'))).toBeUndefined();
    expect(refusal('a string')).toBeUndefined();
  });

  it('comes with the exit codes README gives for drover run and drover teardown', () => {
    expect(runExitCodes).toEqual({ stopped: 0, notStoppedCleanly: 1, refused: 2 });
    expect(teardownExitCodes).toEqual({ allGone: 0, somethingLeft: 1, refused: 2 });
  });
});
