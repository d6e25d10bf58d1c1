import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getDelivery } from '../../libs/db/repositories/deliveries.js';
import { discardOne, requeueOne } from '../../libs/ops/dead-letters.js';
import { listDeadLetters } from '../../libs/queues/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { deleteQueueKeys, testQueuePrefix } from '../../libs/testing/redis.js';
import { startEmailHarness, waitFor, type EmailHarness } from './int-harness.js';
import { emailDeadLetterHook, restoreEmailDeadLetters } from './dead-letters.js';

/**
 * Redis restarted without its data while email deliveries had failed for good: their rows say
 * `failed`, their dead letters are gone. Without them no operator sees those emails (`fleet dlq`,
 * /ops, the dead-letter alert), none can be requeued, and the retention sweep blanks their
 * contents as if an operator had discarded them.
 */
let database: TestDatabase;
let h: EmailHarness;
let q: ReturnType<typeof testQueuePrefix>;
let rejecting = true;

beforeAll(async () => {
  database = await createTestDatabase();
  q = testQueuePrefix();
  h = await startEmailHarness({ databaseUrl: database.url, queuePrefix: q.prefix, standIn: { rejectTo: (a) => rejecting && a.startsWith('reject') } });
});
afterAll(async () => {
  await h?.close();
  await q?.cleanup();
  await database?.drop();
});

const deps = () => ({ db: h.ctx.database.db, queues: h.ctx.queues, hooks: { 'email-send': emailDeadLetterHook } });
const deadLetterFor = async (id: string) => (await listDeadLetters(h.ctx.queues, { queue: 'email' })).find((d) => (d.data as { deliveryId?: string }).deliveryId === id);

describe('failed email deliveries after Redis lost its data', () => {
  it('get their dead letters back (not the discarded one), once; a requeue then sends the email', async () => {
    const kept = await h.addDelivery({ toAddress: 'reject-kept@example.com' });
    const discarded = await h.addDelivery({ toAddress: 'reject-discarded@example.com' });
    await h.startWorkers();
    for (const id of [kept, discarded]) await waitFor(`dead letter of ${id}`, () => deadLetterFor(id));
    await discardOne(deps(), (await deadLetterFor(discarded))!.id, { actor: 'test', reason: 'wrong address' });
    await h.stopWorkers();

    await deleteQueueKeys(q.prefix); // Redis comes back empty
    expect(await listDeadLetters(h.ctx.queues, { queue: 'email' })).toHaveLength(0);

    expect(await restoreEmailDeadLetters(h.ctx)).toBe(1);
    const restored = await deadLetterFor(kept);
    expect(restored).toMatchObject({ id: `email-send.delivery.${kept}`, name: 'email-send', data: { deliveryId: kept }, code: 'restored' });
    expect(restored!.reason).toMatch(/Invalid `to` field/);
    expect(await deadLetterFor(discarded)).toBeUndefined();
    expect(await restoreEmailDeadLetters(h.ctx)).toBe(0);

    // The address was fixed on the provider's side: the operator requeues it, it goes out once.
    rejecting = false;
    const before = h.standIn.requests.length;
    await h.startWorkers();
    await requeueOne(deps(), restored!.id, { actor: 'test', reason: 'fixed' });
    await waitFor('the requeued delivery sent', async () => ((await getDelivery(database.db, kept))?.status === 'sent' ? true : undefined));
    expect(h.standIn.requests.slice(before).map((r) => r.status)).toEqual([200]);
    expect((await getDelivery(database.db, discarded))?.status).toBe('failed');
    expect(await restoreEmailDeadLetters(h.ctx)).toBe(0);
  });
});
