// Where Drover keeps its state (DROVER_HOME, default ~/.drover), where its own packaged files are,
// and which config file the daemon and the CLI read when given none.
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The environment variable naming the state directory. */
export const stateHomeVariable = 'DROVER_HOME';

/** The config file in the state directory that, when it exists, is the default config. */
export const homeConfigName = 'config.yml';

/** How help texts describe the default config. */
export const defaultConfigDescription = `$${stateHomeVariable}/${homeConfigName} if it exists, else the packaged config/loopback.yml`;

/**
 * The state directory: DROVER_HOME (absolute, or relative to the working directory), else
 * ~/.drover. Relative state paths in a config resolve against it.
 */
export function stateHome(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[stateHomeVariable];
  return fromEnv === undefined || fromEnv === '' ? join(homedir(), '.drover') : resolve(fromEnv);
}

let cachedRoot: string | undefined;

/**
 * The directory holding Drover's package.json. Found from this module's own location, so it is
 * the same from src/ under tsx, from dist/ after a build, and from a global install.
 */
export function packageRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'drover') {
      cachedRoot = dir;
      return dir;
    }
    if (dirname(dir) === dir) throw new Error(`drover's package.json not found in ${start} or any directory above it`);
  }
}

/** Drover's version, as its package.json says. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** The config shipped with Drover: the loopback driver, this machine alone. */
export function packagedConfigPath(): string {
  return join(packageRoot(), 'config', 'loopback.yml');
}

/** The config read when none is named: `<home>/config.yml` if it exists, else the packaged one. */
export function defaultConfigPath(home: string = stateHome()): string {
  const own = join(home, homeConfigName);
  return existsSync(own) ? own : packagedConfigPath();
}
