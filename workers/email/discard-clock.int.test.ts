import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { failedDeliveriesAwaitingOperator, getDelivery, queueDelivery } from '../../libs/db/repositories/deliveries.js';
import { discardOne, requeueOne } from '../../libs/ops/dead-letters.js';
import { addDeadLetter, jobIdFor } from '../../libs/queues/index.js';
import { useDatabaseAndQueues } from '../../libs/testing/db-and-queues.js';
import { emailDeadLetterHook } from './dead-letters.js';

const f = useDatabaseAndQueues();

/** Two weekly deliveries that failed for good together in one batch whose last request got no answer, recorded at `at` by the fleet's clock, each with its dead letter. */
async function failedBatchOfTwo(at: Date) {
  const ids: string[] = [];
  for (const n of [1, 2]) {
    const { id } = await queueDelivery(f.db.db, {
      idempotencyKey: `weekly.${n}.2026-W51`,
      kind: 'weekly-status',
      toAddress: `p${n}@example.org`,
      fromAddress: 'noreply@example.org',
      subject: 's',
      html: 'h',
      text: 't',
      patientId: n,
    });
    ids.push(id);
    await addDeadLetter(f.t.queues, {
      originalQueue: 'email',
      originalJobId: jobIdFor('email-send', { deliveryId: id })!,
      name: 'email-send',
      data: { deliveryId: id },
      reason: 'resend 500 internal_server_error',
      code: 'send_failed',
      attemptsMade: 18,
      enqueuedAt: null,
      failedAt: at.toISOString(),
    });
  }
  const batchId = randomUUID();
  await f.db.sql`update fleet.deliveries set status = 'failed', batch_id = ${batchId}, batch_leader_id = ${ids[0]!},
    claimed_at = ${at.toISOString()}::timestamptz, outcome_unknown = true, attempts = 18, last_error = 'resend 500',
    updated_at = ${at.toISOString()}::timestamptz where id in ${f.db.sql(ids)}`;
  return { discarded: ids[0]!, sibling: ids[1]!, batchId };
}

describe('a discarded dead letter of an email', () => {
  it('keeps its delivery out of its batch when a sibling is requeued, also when the fleet clock is ahead of PostgreSQL', async () => {
    // The fleet's clock (the failure's updated_at) 10 minutes ahead of the database's (the audit row's created_at).
    const fleetNow = new Date(Date.now() + 10 * 60_000);
    const { discarded, sibling, batchId } = await failedBatchOfTwo(fleetNow);
    const deps = { db: f.db.db, queues: f.t.queues, hooks: { 'email-send': emailDeadLetterHook } };
    await discardOne(deps, jobIdFor('email-send', { deliveryId: discarded })!, { actor: 'ops-anna', reason: 'no email wanted' }, 'email');

    expect((await failedDeliveriesAwaitingOperator(f.db.db)).map((r) => r.id)).toEqual([sibling]);
    const r = await requeueOne(deps, jobIdFor('email-send', { deliveryId: sibling })!, { actor: 'ops-anna', reason: 'provider back' }, 'email');
    expect(r.state).toBe('requeued');
    expect((await getDelivery(f.db.db, sibling))!).toMatchObject({ status: 'sending', batchId });
    expect((await getDelivery(f.db.db, discarded))!.status).toBe('failed');
  });
});
