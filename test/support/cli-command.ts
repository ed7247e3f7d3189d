// How tests start the drover CLI: the compiled one (bin/drover.js → dist/) when `npm run build`
// output is newer than every source file, as it is under README's test command; otherwise the
// TypeScript source through tsx. The compiled CLI starts in about half the time, and the CLI tests
// start it some hundred times.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', '..');
const compiledMain = join(root, 'dist', 'src', 'cli', 'main.js');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function builtIsFresh(): boolean {
  if (!existsSync(compiledMain)) return false;
  const built = statSync(compiledMain).mtimeMs;
  return newestMtimeMs(join(root, 'src')) <= built && newestMtimeMs(join(root, 'machines')) <= built;
}

/** Node arguments that run the CLI; append drover's own arguments. */
export const droverCli: readonly string[] = builtIsFresh() ? [join(root, 'bin', 'drover.js')] : ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts')];
