import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/support/drover-home.ts'],
    // Vitest leaves one core free by default: on the 2-core CI machine that runs every file in
    // turn. Most files wait on timers, child processes and sockets, so two at once fit 2 cores.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
