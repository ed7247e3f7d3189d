// Directories that hold secrets (the queue's env values, the token, SSH keys) are made private,
// whatever the process umask.
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Creates `path` and any missing parents with mode 0700, set explicitly so the umask does not
 * decide it. Directories that already existed are left as they are.
 */
export function makePrivateDirectory(path: string): void {
  const absolute = resolve(path);
  const first = mkdirSync(absolute, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  // mkdirSync returns the topmost directory it created; every one from the leaf up to it is ours.
  for (let dir = absolute; ; dir = dirname(dir)) {
    chmodSync(dir, 0o700);
    if (dir === first || dirname(dir) === dir) break;
  }
}
