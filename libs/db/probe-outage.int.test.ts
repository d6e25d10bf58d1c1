import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { tcpProxyFor } from '../testing/tcp-proxy.js';
import { openProbeConnection } from './client.js';

/**
 * The readiness probe's connection (GET /ready) across a PostgreSQL outage, through a TCP proxy
 * standing in for the server. postgres.js waits before each reconnect by its default backoff,
 * which grows with every failed connect of the pool to 10-20 s; the probe tries on every /ready,
 * so after ~7 tries in an outage it said "no answer within 2000 ms" instead of why, and /ready
 * stayed 503 up to 20 s after PostgreSQL was back (drill: PostgreSQL stopped for 45 s, /ready
 * 503 for 12.8 s after its start while the imports had resumed).
 */

let db: TestDatabase;
let proxy: ReturnType<typeof tcpProxyFor>;

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = tcpProxyFor(db.url);
  await proxy.open();
});

afterAll(async () => {
  await proxy?.close();
  await db?.drop();
});

const settled = (p: Promise<unknown>, ms: number) =>
  Promise.race([
    p.then(
      () => 'ok',
      (err: { code?: string }) => `failed ${err.code}`,
    ),
    new Promise<string>((resolve) => setTimeout(() => resolve('no answer'), ms)),
  ]);

describe('readiness probe connection across an outage', () => {
  it('says at once why it cannot connect, on every try, and answers at once when the server is back', async () => {
    const probe = openProbeConnection({ url: proxy.url });
    try {
      expect(await settled(probe`select 1`.execute(), 2_000)).toBe('ok');
      await proxy.close();
      // Each try as /ready makes it, one after the other: the cause at once, never a wait.
      // (The first may still meet the connection the proxy just ended.)
      for (let i = 0; i < 10; i++) expect(await settled(probe`select 1`.execute(), 1_000)).toMatch(/^failed (ECONNREFUSED|CONNECTION_CLOSED)$/);
      await proxy.open();
      expect(await settled(probe`select 1`.execute(), 1_000)).toBe('ok');
    } finally {
      await probe.end({ timeout: 1 });
    }
  }, 60_000);

  it('checked in a loop while the server refuses sessions as it starts up (57P03): says so each time, with a few connection attempts a second, not one per check', async () => {
    // Before, every check connected at once: /ready asked in a loop (a drill) met a PostgreSQL
    // starting up with 75-165 attempts a second, each refused.
    proxy.refuseStartup();
    const probe = openProbeConnection({ url: proxy.url });
    try {
      const from = proxy.accepted;
      let checks = 0;
      for (const end = Date.now() + 2_000; Date.now() < end; checks++) expect(await settled(probe`select 1`.execute(), 1_000)).toBe('failed 57P03');
      const attempts = proxy.accepted - from;
      expect(checks).toBeGreaterThan(1);
      // PROBE_RECONNECT_MS (250) apart: 8 or 9 in 2 s.
      expect(attempts).toBeLessThanOrEqual(12);
      proxy.forward();
      expect(await settled(probe`select 1`.execute(), 1_000)).toBe('ok');
    } finally {
      proxy.forward();
      await probe.end({ timeout: 1 });
    }
  }, 60_000);
});
