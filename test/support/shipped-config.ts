// A shipped config (config/<name>) with some keys set, for tests that run it with their own state
// paths or port. Keys are set in the parsed YAML, not replaced in its text, so a change to the
// shipped file can never leave a test silently on the shipped value (and on the user's state).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';

/** The text of config/<name> with each dotted key (`queue.path`, `http.port`) set to its value; missing keys are added. */
export function shippedConfig(name: 'loopback.yml' | 'stub.yml', settings: Record<string, unknown>): string {
  const doc = parseDocument(readFileSync(fileURLToPath(new URL(`../../config/${name}`, import.meta.url)), 'utf8'));
  for (const [key, value] of Object.entries(settings)) doc.setIn(key.split('.'), value);
  return doc.toString();
}
