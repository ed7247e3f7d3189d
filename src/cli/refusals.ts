// The errors that mean `drover run` or `drover teardown` refused to start: an operator's mistake
// whose message already names the key and the fix, so it is printed alone, without a stack.
import { CredentialsError } from '../cloud/errors.js';
import { CloudSetupError, UnsupportedDriverError } from '../cloud/from-config.js';
import { ConfigError } from '../config/load.js';
import { StateLockedError } from '../daemon/state-lock.js';
import { StatePermissionError } from '../daemon/state-permissions.js';
import { QueueStorageError } from '../queue/storage.js';

const refusalClasses = [ConfigError, UnsupportedDriverError, CloudSetupError, CredentialsError, StateLockedError, StatePermissionError, QueueStorageError];

/** What to tell the operator when `error` is a refusal to start; undefined for anything else, which is a bug. */
export function refusal(error: unknown): string | undefined {
  if (refusalClasses.some((refused) => error instanceof refused)) return (error as Error).message;
  // Node's own error: it names the address, not the setting or what to do about it.
  if ((error as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE') {
    return `http.port: ${(error as Error).message}; is another daemon running? Stop it or set another port`;
  }
  return undefined;
}
