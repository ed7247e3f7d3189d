// Every test file gets a DROVER_HOME of its own in a temp directory, so no test (nor a drover
// process a test starts, which inherits it) ever reads or writes the user's ~/.drover.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const home = mkdtempSync(join(tmpdir(), 'drover-home-'));
process.env.DROVER_HOME = home;

afterAll(() => {
  rmSync(home, { recursive: true, force: true });
});
