import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['apps/**/*.test.ts', 'workers/**/*.test.ts', 'libs/**/*.test.ts', 'scripts/**/*.test.ts'],
    globalSetup: ['libs/testing/global-setup.ts'],
    pool: 'forks',
    // One test file per core at a time (vitest's default in a run is one fewer, which on a
    // 2-core machine runs the files one after another). Each file has its own database and queue
    // prefix, so they do not meet; on this 2-core machine the suite took 325 s instead of 582 s.
    maxWorkers: availableParallelism(),
    testTimeout: 60_000,
    hookTimeout: 120_000,
    env: { NODE_ENV: 'test', LOG_LEVEL: 'silent' },
  },
});
