// Copies the web view's static files (src/web/*.html, *.css) next to its compiled script in
// dist/web; the last step of `npm run build`. Plain Node, so the build needs nothing more.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { URL } from 'node:url';

const from = new URL('./', import.meta.url);
const to = new URL('../../dist/web/', import.meta.url);
mkdirSync(to, { recursive: true });
for (const name of readdirSync(from)) {
  if (name.endsWith('.html') || name.endsWith('.css')) copyFileSync(new URL(name, from), new URL(name, to));
}
