// The daemon's state is private to the user it runs as: the queue file holds every submitted env
// value, the token file the admin API's key, the loopback directory SSH private keys. Missing state
// is created private (files 0600, directories 0700, whatever the umask); state that already exists
// is only checked: a file or directory that group or others may read or write stops start-up,
// naming the key, the path, its mode and the chmod that fixes it. An existing file is never
// chmodded behind the operator's back, who may have made it so on purpose.
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { makePrivateDirectory } from '../private-directory.js';

/** State that exists with group or other read/write bits set. */
export class StatePermissionError extends Error {
  override readonly name = 'StatePermissionError';

  constructor(
    /** The config key naming the state, e.g. `queue.path`. */
    readonly key: string,
    /** The file or directory found too open (absolute). */
    readonly path: string,
    /** Its permission bits, e.g. 0o644. */
    readonly mode: number,
    readonly kind: 'file' | 'directory',
    /** What it holds, for the message. */
    holds: string,
  ) {
    const wanted = kind === 'file' ? '600' : '700';
    super(
      `${key}: ${path} is mode ${formatMode(mode)} (${openTo(mode)} by other users, and it holds ${holds}); ` +
        `run chmod ${wanted} ${path}`,
    );
  }
}

/** Bits that let group or others read or write. Execute alone on a directory lets nobody list or change it. */
const openBits = 0o066;

/** Permission bits as chmod spells them: `0644`. */
export function formatMode(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

function openTo(mode: number): string {
  const readable = (mode & 0o044) !== 0;
  const writable = (mode & 0o022) !== 0;
  return readable && writable ? 'readable and writable' : readable ? 'readable' : 'writable';
}

/**
 * Throws StatePermissionError when `path` exists and group or others may read or write it.
 * A missing path passes: whoever creates it creates it private.
 */
export function checkPrivate(key: string, path: string, kind: 'file' | 'directory', holds: string): void {
  const absolute = resolve(path);
  let mode: number;
  try {
    mode = statSync(absolute).mode & 0o777;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if ((mode & openBits) !== 0) throw new StatePermissionError(key, absolute, mode, kind, holds);
}

/**
 * Start-up check of the config's state, before anything is created: the queue file (and its -wal
 * and -shm when present) and its directory, the token file, and on the loopback driver the
 * loopback directory. Creates the queue directory private when it is missing, since the state
 * locks would otherwise create it with the umask's mode. Throws StatePermissionError.
 */
export function ensurePrivateState(config: Config): void {
  const queuePath = resolve(config.queue.path);
  const queueDir = dirname(queuePath);
  checkPrivate('queue.path', queueDir, 'directory', 'the queue file');
  for (const path of [queuePath, `${queuePath}-wal`, `${queuePath}-shm`]) {
    checkPrivate('queue.path', path, 'file', 'submitted env values');
  }
  checkPrivate('http.tokenFile', config.http.tokenFile, 'file', 'the admin API token');
  if (config.cloud.driver === 'loopback') {
    checkPrivate('cloud.loopback.directory', config.cloud.loopback.directory, 'directory', 'SSH private keys');
  }
  makePrivateDirectory(queueDir);
}
