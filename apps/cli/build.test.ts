import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/**
 * README "Running in production": `npm run build` (tsc -p tsconfig.build.json) compiles the
 * fleet to dist/. Test helpers are not part of it: they need vitest's types and test setup.
 */
const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');

describe('the production build', () => {
  it('leaves out test helpers (harnesses, fixtures, libs/testing)', async () => {
    const { stdout } = await run(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--listFilesOnly'], { cwd: root });
    const own = stdout.split('\n').filter((f) => f && !f.includes('/node_modules/'));
    expect(own.length).toBeGreaterThan(50);
    expect(own.filter((f) => /\/libs\/testing\/|int-harness\.ts$|fixtures(\.ts$|\/)|\.test\.ts$/.test(f))).toEqual([]);
  });

  it('type-checks without errors (npm run build exits 0)', { timeout: 120_000 }, async () => {
    const result = await run(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--noEmit'], { cwd: root }).then(
      (r) => ({ code: 0, out: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
    );
    expect(result.out).toBe('');
    expect(result.code).toBe(0);
  });
});
