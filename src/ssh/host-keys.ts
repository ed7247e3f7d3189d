// Host key pinning for SSH connections: the first key an instance presents is remembered per
// instance id, and any later connection presenting a different key is refused.
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';

export interface HostKeyStore {
  /** The pinned fingerprint for the target, or undefined when it was never contacted. */
  get(targetId: string): string | undefined;
  pin(targetId: string, fingerprint: string): void;
}

/** OpenSSH-style fingerprint of a raw public key blob: `SHA256:<base64 without padding>`. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

export class HostKeyMismatchError extends Error {
  override readonly name = 'HostKeyMismatchError';

  constructor(
    readonly targetId: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `Host key for instance ${targetId} changed: pinned ${expected}, presented ${actual}. ` +
        'The connection was refused. Either the instance was replaced behind the same id or ' +
        'someone is impersonating it. Remove the pinned key for this instance from the host key ' +
        'store only if you know why it changed.',
    );
  }
}

export class MemoryHostKeyStore implements HostKeyStore {
  private readonly keys = new Map<string, string>();

  get(targetId: string): string | undefined {
    return this.keys.get(targetId);
  }

  pin(targetId: string, fingerprint: string): void {
    this.keys.set(targetId, fingerprint);
  }
}

/**
 * Pins kept in a JSON file `{ [targetId]: fingerprint }` so they survive restarts; otherwise a
 * restart would trust whatever key an address presents next, which is what pinning prevents.
 * Sync I/O on purpose: pinning happens inside ssh2's host verifier, and pins are rare.
 */
export class FileHostKeyStore implements HostKeyStore {
  private readonly keys: Map<string, string>;

  constructor(readonly path: string) {
    this.keys = FileHostKeyStore.load(path);
  }

  get(targetId: string): string | undefined {
    return this.keys.get(targetId);
  }

  pin(targetId: string, fingerprint: string): void {
    const next = new Map(this.keys);
    next.set(targetId, fingerprint);
    this.write(next);
    // Only after the write succeeded, so memory never claims a pin the file does not have.
    this.keys.set(targetId, fingerprint);
  }

  private static load(path: string): Map<string, string> {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw err;
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new Error(`Host key file ${path} is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw new Error(`Host key file ${path} must hold a JSON object of instance id to fingerprint`);
    }
    const keys = new Map<string, string>();
    for (const [id, value] of Object.entries(data)) {
      if (typeof value !== 'string') {
        throw new Error(`Host key file ${path}: the fingerprint for ${id} is not a string`);
      }
      keys.set(id, value);
    }
    return keys;
  }

  // Temp file + rename so a crash mid-write leaves either the old or the new file, never a
  // truncated one that would silently forget every pin.
  private write(keys: Map<string, string>): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    const text = `${JSON.stringify(Object.fromEntries(keys), null, 2)}\n`;
    try {
      const fd = openSync(tmp, 'wx', 0o600);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // The temp file may never have been created; the original error is the one that matters.
      }
      throw err;
    }
  }
}
