// The admin API's bearer token: created once on the daemon's first start, then read back, and compared in constant time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Returns the token stored at `path`, creating the file (mode 0600, its directory 0700) if it is missing. */
export function ensureToken(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString('base64url');
  try {
    // 'wx' refuses to overwrite: if another process created the file meanwhile, its token wins.
    writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return readFileSync(path, 'utf8').trim();
  }
  return token;
}

/** True when `given` equals `expected`; always false for an empty `expected`, so an unset token refuses everyone. */
export function tokensMatch(given: string, expected: string): boolean {
  if (expected === '') return false;
  // Comparing fixed-length digests keeps the time independent of where, and whether, the lengths differ.
  return timingSafeEqual(sha256(given), sha256(expected));
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
