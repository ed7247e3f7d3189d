// Where the web view's files are and how they are served. `npm run build` compiles src/web into
// dist/web; the daemon serves them from there whether it runs from dist/ or from the sources (tsx).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Every file the page loads, with its media type; nothing else under the directory is served. */
export const webFiles: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/**
 * The page loads only its own script and style sheet and talks only to this daemon; the icon is
 * an empty data: URL, so the browser asks for no /favicon.ico (which would need the token).
 * Nothing may frame it, so a click on its kill button cannot be hijacked by another site.
 */
export const contentSecurityPolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers of every web view response besides the media type. */
export const webHeaders: Readonly<Record<string, string>> = {
  'content-security-policy': contentSecurityPolicy,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // Read from disk on every request, so a rebuild shows on reload; the browser should not keep an old copy.
  'cache-control': 'no-cache',
};

/**
 * dist/web for the daemon running from dist/src/http (the built package) or from src/http (tsx);
 * null when neither holds index.html, i.e. `npm run build` has not run.
 */
export function defaultWebRoot(): string | null {
  const candidates = [new URL('../../web/', import.meta.url), new URL('../../dist/web/', import.meta.url)];
  for (const candidate of candidates) {
    const dir = fileURLToPath(candidate);
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  return null;
}

export class WebViewMissingError extends Error {
  constructor() {
    super('the web view is not built; run npm run build in the drover package');
  }
}

/** The file's bytes; `name` must be a key of webFiles. WebViewMissingError when there is no root or no such file. */
export async function readWebFile(root: string | null, name: string): Promise<Buffer> {
  if (root === null || !Object.hasOwn(webFiles, name)) throw new WebViewMissingError();
  try {
    return await readFile(join(root, name));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new WebViewMissingError();
    throw error;
  }
}
