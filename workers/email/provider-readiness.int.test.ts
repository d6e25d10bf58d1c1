import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getDelivery } from '../../libs/db/repositories/deliveries.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { startEmailHarness, waitFor, type EmailHarness } from './int-harness.js';
import { emailProviderComponent } from './provider-readiness.js';

let database: TestDatabase;
let h: EmailHarness;
let q: ReturnType<typeof testQueuePrefix>;

beforeAll(async () => {
  database = await createTestDatabase();
  q = testQueuePrefix();
  // Real backoff: a failed send waits ~5 s for its retry, long enough to look at /ready meanwhile.
  h = await startEmailHarness({ databaseUrl: database.url, queuePrefix: q.prefix, env: { RETRY_BACKOFF_SCALE: '1' } });
});
afterAll(async () => {
  await h?.close();
  await q?.cleanup();
  await database?.drop();
});

describe('readiness of the email provider (GET /ready of a process with role email)', () => {
  it('is degraded while an email waits for a retry after a failed provider request, naming the error but no address; ready again once it is sent', { timeout: 60_000 }, async () => {
    expect(await emailProviderComponent(h.ctx).ready!()).toEqual({ ok: true });

    h.standIn.inject({ kind: 'status', status: 503 });
    const id = await h.addDelivery({ toAddress: 'ida.muster@example.com' });
    await h.startWorkers();
    await waitFor('the failed attempt', async () => {
      const d = await getDelivery(h.ctx.database.db, id);
      return d?.lastError && (d.status === 'pending' || d.status === 'sending');
    });
    const failing = await emailProviderComponent(h.ctx).ready!();
    expect(failing.ok).toBe(false);
    expect(failing.critical).toBeUndefined(); // degraded, not 503: mail waits in the database
    expect(failing.detail).toMatch(/^1 email\(s\) wait for a retry after a provider request that failed in the last 15 minutes; the latest at \d{4}-\d\d-\d\dT[\d:.]+Z: .*503/);
    expect(failing.detail).not.toContain('ida.muster');

    await waitFor('the retry to send it', async () => (await getDelivery(h.ctx.database.db, id))?.status === 'sent', 30_000);
    expect(await emailProviderComponent(h.ctx).ready!()).toEqual({ ok: true });

    // An operator's requeue of an email whose provider request failed an hour ago: waiting again
    // with its old error and updated now, but the provider has not failed since.
    const requeued = await h.addDelivery({}, { enqueue: false });
    await h.ctx.database.sql`update fleet.deliveries set last_error = 'Resend: 503 internal_server_error', last_error_at = now() - interval '1 hour', updated_at = now() where id = ${requeued}`;
    expect(await emailProviderComponent(h.ctx).ready!()).toEqual({ ok: true });
  });
});
