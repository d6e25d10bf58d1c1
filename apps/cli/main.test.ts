import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { runCli } from './run-cli.js';

/** The real CLI; none of these commands gets as far as opening a connection. */
const fleet = (...args: string[]) => runCli(args, { LOG_LEVEL: 'warn' });

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

describe('a database the CLI cannot reach', () => {
  it('fails with exit 1 and what PostgreSQL said, not drizzle\'s statement and parameters', { timeout: 30_000 }, async () => {
    // a port nothing listens on
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    await new Promise((r) => server.close(r));
    const r = await runCli(['imports', 'list'], { LOG_LEVEL: 'warn', DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^fleet: database query failed: ECONNREFUSED .*\n$/);
    expect(r.stderr).not.toContain('select');
    expect(r.stderr).not.toContain('params');
  });
});
