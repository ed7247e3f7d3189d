#!/usr/bin/env node
// The `drover` command as npm installs it (npx, npm link, npm install -g): the compiled CLI in
// dist/. This file is not built, so the link npm makes to it always has a target, even before
// the first build.
import { existsSync } from 'node:fs';
import process from 'node:process';
import { fileURLToPath, URL } from 'node:url';

const cli = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write(`drover: ${fileURLToPath(cli)} is missing; run npm run build in ${fileURLToPath(new URL('..', import.meta.url))} (npm ci does it)\n`);
  process.exit(1);
}
await import(cli.href);
