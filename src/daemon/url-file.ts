// The URL a running daemon listens on, kept in `daemon.url` next to its token file: with
// `http.port: 0` the port is chosen at start, and this file is how the CLI finds it.
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { HttpSettings } from '../config/schema.js';

/** Where a daemon with these settings writes its URL. */
export function daemonUrlFile(http: Pick<HttpSettings, 'tokenFile'>): string {
  return join(dirname(http.tokenFile), 'daemon.url');
}

/** Writes `url` to `path` whole (a temp file and a rename), so a reader never sees part of it. */
export function writeDaemonUrl(path: string, url: string): void {
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${url}\n`, { mode: 0o600 });
  renameSync(temp, path);
}

/** Removes the file if it still names `url`; another daemon may have written its own since. */
export function removeDaemonUrl(path: string, url: string): void {
  if (readDaemonUrl(path) === url) rmSync(path, { force: true });
}

/** The URL in the file, or undefined when there is none. */
export function readDaemonUrl(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
