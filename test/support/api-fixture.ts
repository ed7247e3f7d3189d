// The daemon's API deps over a real queue file in a temporary directory and an empty pool, for
// tests that serve the HTTP API to the drover CLI.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { ApiDeps } from '../../src/http/server.js';
import { SqliteQueue } from '../../src/queue/sqlite-queue.js';

export interface ApiFixture {
  /** The temporary directory the queue file is in; close() removes it. */
  dir: string;
  queue: SqliteQueue;
  deps: ApiDeps;
  close(): void;
}

/** `prefix` names the temporary directory; `liveLogs`, when given, is the deps' live output. */
export function apiFixture(options: { prefix: string; token: string; liveLogs?: ApiDeps['liveLogs'] }): ApiFixture {
  const dir = mkdtempSync(join(tmpdir(), options.prefix));
  const queue = new SqliteQueue({ path: join(dir, 'queue.sqlite'), maxAttempts: 3 });
  const deps: ApiDeps = {
    queue,
    pool: { instances: () => [], orphans: () => [], instance: () => undefined, setIdleBehavior: () => undefined, shutdown: () => false },
    token: options.token,
    registry: new Registry(),
    logger: pino({ level: 'silent' }),
  };
  if (options.liveLogs !== undefined) deps.liveLogs = options.liveLogs;
  return {
    dir,
    queue,
    deps,
    close: () => {
      queue.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
