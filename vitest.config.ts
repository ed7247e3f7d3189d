import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// The files that take longest, longest first. Vitest orders a run by the timings of the last one;
// on a clean clone (CI) it has none and orders by file size, which left a minute-long file to start
// last and the other worker idle meanwhile.
const slowest = ['pool-restart-scale', 'launch-config-weights', 'soak', 'completions', 'cli-client', 'e2e-loopback', 'cli-launch-configs', 'bench-smoke'];

class SlowestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification): number => {
      const index = slowest.findIndex((name) => file.moduleId.endsWith(`/test/${name}.test.ts`));
      return index < 0 ? slowest.length : index;
    };
    // Stable: the rest keep vitest's own order.
    return (await super.sort(files)).map((file, order) => ({ file, order })).sort((a, b) => rank(a.file) - rank(b.file) || a.order - b.order).map(({ file }) => file);
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/support/drover-home.ts'],
    // Vitest leaves one core free by default: on the 2-core CI machine that runs every file in
    // turn. Most files wait on timers, child processes and sockets, so two at once fit 2 cores.
    maxWorkers: 2,
    sequence: { sequencer: SlowestFirst },
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
