import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, within, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { TEST_ADMIN_DB_URL, TEST_REDIS_URL, randomSuffix } from '../../libs/testing/services.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';
import { outboxRelayComponents } from './worker.js';

let db: TestDatabase;
let ctx: FleetContext;
const admin = new URL(TEST_ADMIN_DB_URL);
const pg = tcpProxy({ host: admin.hostname, port: Number(admin.port || 5432) });

beforeAll(async () => {
  db = await createTestDatabase();
  await pg.open();
  const url = new URL(db.url);
  url.host = `127.0.0.1:${pg.port}`;
  ctx = openContext(loadConfig({ NODE_ENV: 'test', DATABASE_URL: url.toString(), REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: `relay_${randomSuffix()}`, KAFKA_BROKERS: '' }), silentLogger());
  outboxRelayComponents(ctx);
});

afterAll(async () => {
  await pg.close();
  await ctx?.close().catch(() => {});
  await db?.drop();
});

describe('the outbox gauges while PostgreSQL does not answer (stopped with SIGSTOP, hung)', () => {
  it('/metrics still answers within seconds, without the gauges it could not read, and reads them again once PostgreSQL answers', async () => {
    const scrape = () => within(ctx.metrics.registry.metrics(), 6_000);
    expect(await scrape()).toMatch(/^fleet_outbox_unpublished 0$/m);

    pg.hang();
    // Before: the scrape waited for PostgreSQL for as long as it was silent, so Prometheus saw
    // the whole process as down (FleetProcessDown) and lost every other metric of it.
    const text = await scrape();
    expect(text).not.toMatch(/^fleet_outbox_unpublished /m);
    expect(text).not.toMatch(/^fleet_outbox_lag_seconds /m);
    expect(text).toMatch(/^fleet_outbox_kafka_configured 0$/m);

    // PostgreSQL back (the silent connections are gone, new ones answer).
    await pg.close();
    await pg.open();
    let back = '';
    for (let i = 0; i < 50 && !/^fleet_outbox_unpublished 0$/m.test(back); i++) {
      back = await scrape();
      if (!/^fleet_outbox_unpublished 0$/m.test(back)) await new Promise((r) => setTimeout(r, 200));
    }
    expect(back).toMatch(/^fleet_outbox_unpublished 0$/m);
  });
});
