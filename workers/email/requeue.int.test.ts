import { beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { beginDeliveryAttempt, finishDeliveries, getDelivery, listStaleClaims, queueDelivery, requeueFailedDelivery } from '../../libs/db/repositories/deliveries.js';
import type { StillWantedCheck } from '../../libs/mail/index.js';
import { discardOne, requeueOne } from '../../libs/ops/dead-letters.js';
import { listDeadLetters } from '../../libs/queues/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { waitFor, type EmailHarness } from './int-harness.js';
import { emailTestFile } from './test-setup.js';
import { emailDeadLetterHook } from './dead-letters.js';

/**
 * An operator requeues an email whose last provider request failed transiently on the job's
 * last attempt (the provider may have accepted it): within the provider's idempotency window it
 * goes out under its original batch and key, so an email the provider had accepted is not sent
 * a second time.
 */
// 18 attempts of the email family, its backoff scaled down to milliseconds.
const file = emailTestFile({ MAIL_RATE_PER_SECOND: '50', RETRY_BACKOFF_SCALE: '0.001' });
const harness = file.harness;
let database: TestDatabase;
beforeAll(() => {
  database = file.database();
});

const deps = (t: EmailHarness) => ({ db: t.ctx.database.db, queues: t.ctx.queues, hooks: { 'email-send': emailDeadLetterHook } });
const statusOf = async (id: string) => (await getDelivery(database.db, id))?.status;
const finished = (id: string) =>
  waitFor(`delivery ${id} to finish`, async () => {
    const s = await statusOf(id);
    return s === 'sent' || s === 'failed' || s === 'dropped' ? s : undefined;
  });
const deadLetterOf = (t: EmailHarness, id: string) =>
  waitFor(`dead letter of ${id}`, async () => (await listDeadLetters(t.ctx.queues, { queue: 'email' })).find((d) => (d.data as { deliveryId?: string }).deliveryId === id));
const jobDone = (t: EmailHarness, id: string) =>
  waitFor(`job of ${id} to finish`, async () => ['completed', 'failed'].includes(await t.ctx.queues.queue('email').getJobState(`email-send.delivery.${id}`)));

/** Deliveries sent in one batch whose every attempt fails; the last one reached the provider, its answer was lost. */
async function batchWithLostAnswer(t: EmailHarness, n: number, over: (i: number) => Record<string, unknown> = () => ({})) {
  t.standIn.inject({ kind: 'status', status: 500 }, 17);
  t.standIn.inject({ kind: 'lose-answer' });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(await t.addDelivery(over(i), { enqueue: false }));
  for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
  return ids;
}

describe('operator requeue of an email whose last provider request got no answer', () => {
  it('resends the batch under its original key: the provider replays its answer, nobody gets the email twice; a sibling requeue sends nothing', async () => {
    const t = await harness();
    const ids = await batchWithLostAnswer(t, 2);
    await t.startWorkers();
    for (const id of ids) expect(await finished(id)).toBe('failed');
    // The provider did send both: the fleet could not know.
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    const lost = t.standIn.requests.at(-1)!;
    expect(lost).toMatchObject({ status: 200, lost: true, path: '/emails/batch' });
    const accepted = t.standIn.messages.map((m) => m.id);
    const dead = await Promise.all(ids.map((id) => deadLetterOf(t, id)));

    const r = await requeueOne(deps(t), dead[1]!.id, { actor: 'test', reason: 'provider timeout' });
    expect(r.state).toBe('requeued');
    await waitFor('the requeued delivery sent', async () => (await statusOf(ids[1]!)) === 'sent');
    // Counting what the provider delivered: each patient once.
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    expect(t.standIn.requests.at(-1)).toMatchObject({ status: 200, replayed: true, idempotencyKey: lost.idempotencyKey, path: '/emails/batch' });
    expect(r.notice).toMatch(/1 other delivery of its batch/);
    // The batch came back whole: the sibling is sent too, with the provider's own ids.
    expect(await statusOf(ids[0]!)).toBe('sent');
    const rows = await Promise.all(ids.map((id) => getDelivery(database.db, id)));
    expect(rows.map((x) => x!.providerMessageId).sort()).toEqual([...accepted].sort());

    // The sibling's dead letter, requeued later: nothing more goes out, no failure.
    const requests = t.standIn.requests.length;
    const again = await requeueOne(deps(t), dead[0]!.id, { actor: 'test', reason: 'provider timeout' });
    expect(again.notice).toMatch(/already sent/);
    await jobDone(t, ids[0]!);
    expect(await statusOf(ids[0]!)).toBe('sent');
    expect(t.standIn.requests.length).toBe(requests);
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    expect(await listDeadLetters(t.ctx.queues, { queue: 'email' })).toEqual([]);
  });

  it('leaves out a sibling whose dead letter was discarded: the provider holds the fuller request, nothing goes out twice, the reason says why', async () => {
    const t = await harness();
    const ids = await batchWithLostAnswer(t, 2);
    await t.startWorkers();
    for (const id of ids) expect(await finished(id)).toBe('failed');
    await discardOne(deps(t), (await deadLetterOf(t, ids[0]!)).id, { actor: 'test', reason: 'not needed any more' });

    const r = await requeueOne(deps(t), (await deadLetterOf(t, ids[1]!)).id, { actor: 'test', reason: 'provider timeout' });
    expect(r.notice).not.toMatch(/other deliver/);
    await waitFor('the requeued delivery to fail again', async () => (await deadLetterOf(t, ids[1]!)) && (await statusOf(ids[1]!)) === 'failed');
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    expect(t.standIn.requests.at(-1)).toMatchObject({ status: 409, idempotencyKey: t.standIn.requests.at(-2)!.idempotencyKey });
    const row = await getDelivery(database.db, ids[1]!);
    expect(row).toMatchObject({ outcomeUnknown: true });
    expect(row!.lastError).toMatch(/the provider holds an earlier request of batch \S+ with other rows: it may have gone out then, not re-sent$/);
    expect(await statusOf(ids[0]!)).toBe('failed');
  });

  it('keeps the batch form and key when a sibling the first request carried was dropped on the last attempt (no longer wanted): nothing goes out twice', async () => {
    const t = await harness();
    // Patient 2 opts out once the first request has gone (its answer lost: both emails went out).
    const check: StillWantedCheck = async (refs) =>
      t.standIn.requests.length ? refs.filter((r) => r.patientId === 2).map((r) => ({ id: r.id, reason: 'weekly status no longer wanted: opted_out' })) : [];
    t.standIn.inject({ kind: 'lose-answer' });
    t.standIn.inject({ kind: 'status', status: 500 }, 17);
    const ids: string[] = [];
    for (let i = 1; i <= 2; i++) ids.push(await t.addDelivery({ kind: 'weekly-status', patientId: i }, { enqueue: false }));
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers({ stillWanted: { 'weekly-status': check } });
    expect(await finished(ids[0]!)).toBe('failed');
    expect(await finished(ids[1]!)).toBe('dropped');
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    const key = t.standIn.requests[0]!.idempotencyKey;

    await requeueOne(deps(t), (await deadLetterOf(t, ids[0]!)).id, { actor: 'test', reason: 'provider timeout' });
    await jobDone(t, ids[0]!);
    // The provider holds the first request (both rows) under the batch's key: refused, not sent again under another key.
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    expect(t.standIn.requests.at(-1)).toMatchObject({ status: 409, path: '/emails/batch', idempotencyKey: key });
    expect(await getDelivery(database.db, ids[0]!)).toMatchObject({ status: 'failed', outcomeUnknown: true });
  });

  it('sends a batch the provider had not accepted (a 500 on the last attempt) under its key, without the patient who opted out meanwhile', async () => {
    const t = await harness();
    const optedOut = new Set<number>();
    const check: StillWantedCheck = async (refs) =>
      refs.filter((r) => r.patientId !== null && optedOut.has(r.patientId)).map((r) => ({ id: r.id, reason: 'weekly status no longer wanted: opted_out' }));
    t.standIn.inject({ kind: 'status', status: 500 }, 18);
    const ids: string[] = [];
    for (let i = 1; i <= 2; i++) ids.push(await t.addDelivery({ kind: 'weekly-status', patientId: i }, { enqueue: false }));
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers({ stillWanted: { 'weekly-status': check } });
    for (const id of ids) expect(await finished(id)).toBe('failed');
    const key = t.standIn.requests.at(-1)!.idempotencyKey;
    expect(t.standIn.messages).toEqual([]);

    optedOut.add(2);
    await requeueOne(deps(t), (await deadLetterOf(t, ids[0]!)).id, { actor: 'test', reason: 'provider outage over' });
    for (const id of ids) await finished(id);
    expect(await Promise.all(ids.map(statusOf))).toEqual(['sent', 'dropped']);
    expect((await getDelivery(database.db, ids[1]!))!.lastError).toBe('weekly status no longer wanted: opted_out');
    expect(t.standIn.messages.map((m) => m.to[0])).toEqual(['patient1@example.com']);
    // Same form and key as the requests before: a batch, one row left.
    expect(t.standIn.requests.at(-1)).toMatchObject({ status: 200, size: 1, path: '/emails/batch', idempotencyKey: key, replayed: false });
  });

  it('a delivery the provider rejected (422) goes out once in a new batch when requeued', async () => {
    let rejecting = true;
    const t = await harness({ standIn: { rejectTo: (a) => rejecting && a.startsWith('reject') } });
    const ok = await t.addDelivery({}, { enqueue: false });
    const rejected = await t.addDelivery({ toAddress: 'reject@example.com' }, { enqueue: false });
    for (const id of [ok, rejected]) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers();
    expect(await finished(ok)).toBe('sent');
    expect(await finished(rejected)).toBe('failed');
    const first = t.standIn.requests.find((x) => x.status === 200)!;
    expect(first).toMatchObject({ path: '/emails/batch', size: 1 });

    rejecting = false; // the address was fixed on the provider's side
    const r = await requeueOne(deps(t), (await deadLetterOf(t, rejected)).id, { actor: 'test', reason: 'address allowed now' });
    expect(r.notice).toBeUndefined();
    expect(await finished(rejected)).toBe('sent');
    const last = t.standIn.requests.at(-1)!;
    expect(last).toMatchObject({ status: 200, size: 1, replayed: false });
    expect(last.idempotencyKey).not.toBe(first.idempotencyKey);
    expect(Object.fromEntries(t.standIn.perRecipient)).toEqual({ 'patient1@example.com': 1, 'reject@example.com': 1 });
    expect((await getDelivery(database.db, rejected))!.batchId).not.toBe((await getDelivery(database.db, ok))!.batchId);
  });

  it('a request whose worker died before its answer counts as unanswered: a later 429 on the last attempt does not make a requeue send it under a new key', async () => {
    const t = await harness();
    const [died, fresh] = [await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false })];
    const now = new Date();
    // `died`: its batch's request started 10 minutes ago and its worker never came back (the lease is left).
    await database.sql`update fleet.deliveries set status = 'sending', batch_id = gen_random_uuid(), claimed_at = now() - interval '10 minutes',
      attempt_started_at = now() - interval '10 minutes' where id = ${died}`;
    await database.sql`update fleet.deliveries set status = 'sending', batch_id = gen_random_uuid(), claimed_at = now() where id = ${fresh}`;
    const batchOf = async (id: string) => (await getDelivery(database.db, id))!.batchId!;
    expect(await beginDeliveryAttempt(database.db, await batchOf(died), now, new Date(now.getTime() - 60_000))).toBe(true);
    expect(await beginDeliveryAttempt(database.db, await batchOf(fresh), now, new Date(now.getTime() - 60_000))).toBe(true);
    expect((await getDelivery(database.db, died))!.outcomeUnknown).toBe(true);
    expect((await getDelivery(database.db, fresh))!.outcomeUnknown).toBe(false);
    // The retry's answer is a 429 on the last attempt: the rows fail without an answer that settles them.
    for (const id of [died, fresh]) await finishDeliveries(database.db, await batchOf(id), { sent: [], failed: [{ id, reason: '429 rate_limit_exceeded' }], dropped: [] }, new Date());
    expect(await requeueFailedDelivery(database.db, died, { now: new Date(), windowMs: 23 * 3600_000 })).toMatchObject({ kind: 'batch' });
    expect(await requeueFailedDelivery(database.db, fresh, { now: new Date(), windowMs: 23 * 3600_000 })).toEqual({ kind: 'pending', mayHaveGoneOut: false });
  });

  it('two deliveries of one batch requeued at the same moment both succeed (no deadlock), the batch goes out once', async () => {
    const t = await harness();
    for (let round = 0; round < 8; round++) {
      const ids = [await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false })];
      await database.sql`with b as (select gen_random_uuid() as id) update fleet.deliveries set status = 'failed', outcome_unknown = true, claimed_at = now(),
        batch_id = (select id from b) where id in ${database.sql(ids)}`;
      const results = await Promise.allSettled(ids.map((id) => requeueFailedDelivery(database.db, id, { now: new Date(), windowMs: 23 * 3600_000 })));
      expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).toEqual(['ok', 'ok', 'ok']);
      // One of them brought the whole batch back; the others found it sending.
      const kinds = results.map((r) => (r as PromiseFulfilledResult<{ kind: string }>).value.kind).sort();
      expect(kinds).toEqual(['batch', 'unchanged', 'unchanged']);
      expect(await database.sql`select 1 from fleet.deliveries where id in ${database.sql(ids)} and status = 'sending'`).toHaveLength(3);
    }
  });

  it('a batch requeued hours after its claim is not taken for a stuck one by the sweep, until it stands still again', async () => {
    const t = await harness();
    const ids = await batchWithLostAnswer(t, 2);
    await t.startWorkers();
    for (const id of ids) expect(await finished(id)).toBe('failed');
    await t.stopWorkers();
    await database.sql`update fleet.deliveries set claimed_at = claimed_at - interval '5 hours', updated_at = updated_at - interval '5 hours' where id in ${database.sql(ids)}`;
    const now = new Date();
    const r = await requeueFailedDelivery(database.db, ids[0]!, { now, windowMs: 23 * 3600_000 });
    expect(r.kind).toBe('batch');
    const staleMs = 3600_000;
    // The requeue's own job sends it; the sweep must not add a second one for it.
    expect(await listStaleClaims(database.db, new Date(now.getTime() - staleMs), 100)).toEqual([]);
    // Should that job die too, the batch is recovered once it has stood still for staleMs.
    const later = await listStaleClaims(database.db, new Date(now.getTime() + 1), 100);
    expect(later).toHaveLength(1);
    expect(later[0]).toMatchObject({ leaderId: ids[0], rows: 2 });
  });

  it('after the idempotency window the requeue sends a new email and tells the operator it may have gone out already', async () => {
    const t = await harness();
    const ids = await batchWithLostAnswer(t, 2);
    await t.startWorkers();
    for (const id of ids) expect(await finished(id)).toBe('failed');
    await database.sql`update fleet.deliveries set claimed_at = claimed_at - interval '24 hours' where id in ${database.sql(ids)}`;
    const dead = await deadLetterOf(t, ids[0]!);

    const r = await requeueOne(deps(t), dead.id, { actor: 'test', reason: 'operator knows' });
    expect(r.notice).toMatch(/may already have received it/);
    expect(await finished(ids[0]!)).toBe('sent');
    // Only the requeued one: its sibling waits for its own decision.
    expect(await statusOf(ids[1]!)).toBe('failed');
    const [audit] = await database.sql<{ details: { notice?: string } }[]>`select details from fleet.audit_log where action = 'dlq.requeue' and target like ${`%${ids[0]}`}`;
    expect(audit!.details.notice).toBe(r.notice);
    // The notice names no one.
    expect(r.notice).not.toMatch(/@example\.com/);
  });

  it('the advice before a requeue is given for as many email dead letters as a weekly send can leave (more than PostgreSQL takes parameters in one statement)', async () => {
    // A provider refusing every email of a weekly send to 100,000 patients leaves as many dead
    // letters; `fleet dlq list` and /ops/api/dead-letters ask for the advice of all of them.
    const { id } = await queueDelivery(database.db, {
      idempotencyKey: 'advice.many.1',
      kind: 'staff',
      toAddress: 'staff@example.com',
      fromAddress: 'Curavani <noreply@curavani.com>',
      subject: 's',
      html: '<p>h</p>',
      text: 't',
    });
    await database.sql`update fleet.deliveries set status = 'failed', contents_removed_at = '2026-11-01T03:00:00Z', subject = '', html = '', text = '' where id = ${id}`;
    const payloads = [...Array.from({ length: 70_000 }, () => ({ deliveryId: randomUUID() })), { deliveryId: id }];
    const advice = await emailDeadLetterHook.requeueAdvice!(payloads, database.db);
    expect(advice).toHaveLength(payloads.length);
    expect(advice.at(-1)).toBe('its contents were removed on 2026-11-01 03:00:00 UTC (EMAIL_RETENTION_DAYS): it cannot be sent again; discard it');
    expect(advice.filter((a) => a !== undefined)).toHaveLength(1);
  });
});
