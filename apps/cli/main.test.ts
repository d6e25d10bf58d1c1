import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const main = fileURLToPath(new URL('./main.ts', import.meta.url));

/** The real CLI; none of these commands gets as far as opening a connection. */
async function fleet(...args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...process.env, LOG_LEVEL: 'warn' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe.concurrent('fleet exit codes (README: 0 done, 1 failure, 2 bad usage or configuration, 3 not found)', () => {
  it.each([
    [['frobnicate'], "unknown command 'frobnicate'"],
    [['dlq', 'discard'], "missing required argument 'id'"],
    [['dlq', 'requeue', '--bogus'], "unknown option '--bogus'"],
    [['dlq', 'list', '--queue'], "option '--queue <queue>' argument missing"],
    [['imports'], 'Usage: fleet imports'],
    [[], 'Usage: fleet'],
  ])('fleet %j is bad usage: exit 2', { timeout: 30_000 }, async (args, message) => {
    const r = await fleet(...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });

  it.each([[['--help']], [['help', 'dlq']], [['dlq', 'discard', '--help']], [['--version']]])('fleet %j exits 0', { timeout: 30_000 }, async (args) => {
    const r = await fleet(...args);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toBe('');
  });
});
