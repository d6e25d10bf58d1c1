import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import PostalMime from 'postal-mime';
import { beforeAll, describe, expect, it } from 'vitest';
import { claimDeliveries, finishDeliveries, getDelivery } from '../../libs/db/repositories/deliveries.js';
import { unwantedWeeklyDeliveries } from '../../libs/db/repositories/weekly-status.js';
import { createLogger } from '../../libs/log/index.js';
import { createMailDriver, type StillWantedCheck } from '../../libs/mail/index.js';
import { jobIdFor, listDeadLetters } from '../../libs/queues/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { deleteQueueKeys } from '../../libs/testing/redis.js';
import { refusals } from '../../libs/testing/resend-stand-in.js';
import { waitFor, type EmailHarness } from './int-harness.js';
import { emailTestFile } from './test-setup.js';

const file = emailTestFile({ MAIL_RATE_PER_SECOND: '20' }, process.env.EMAIL_TEST_DEBUG ? { log: (await import('pino')).pino({ level: 'debug' }) as never } : {});
const harness = file.harness;
let database: TestDatabase;
beforeAll(() => {
  database = file.database();
});

const statusOf = async (id: string) => (await getDelivery(database.db, id))?.status;
const sentOrFailed = (id: string) => waitFor(`delivery ${id} to finish`, async () => {
  const s = await statusOf(id);
  return s === 'sent' || s === 'failed' || s === 'dropped' ? s : undefined;
});

describe('email delivery (PostgreSQL, Redis, the resend SDK against the stand-in)', () => {
  it('sends a delivery enqueued twice (and once more under another job id) exactly once', async () => {
    const t = await harness();
    const id = await t.addDelivery({ idempotencyKey: 'staff.import.42' });
    await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.ctx.queues.enqueue('email-send', { deliveryId: id }, { jobId: `email-send.delivery.${id}.again` });
    await t.startWorkers();
    expect(await sentOrFailed(id)).toBe('sent');
    const other = await t.ctx.queues.queue('email').getJob(`email-send.delivery.${id}.again`);
    await waitFor('second job to finish', async () => (await other!.getState()) === 'completed');
    expect(t.standIn.messages).toHaveLength(1);
    expect(t.standIn.requests.filter((r) => r.status === 200)).toHaveLength(1);
    expect(t.standIn.requests[0]).toMatchObject({ path: '/emails', idempotencyKey: 'staff.import.42' });
    const row = await getDelivery(database.db, id);
    expect(row).toMatchObject({ status: 'sent', providerMessageId: t.standIn.messages[0]!.id, attempts: 1 });
  });

  it('sends a delivery\'s Reply-To as `reply_to`, alone and in a batch; a delivery without one sends none', async () => {
    const t = await harness();
    const alone = await t.addDelivery({ replyToAddress: 'fragen@curavani.com' });
    await t.startWorkers();
    expect(await sentOrFailed(alone)).toBe('sent');
    const withReply = await t.addDelivery({ replyToAddress: 'fragen@curavani.com' }, { enqueue: false });
    const without = await t.addDelivery({}, { enqueue: false });
    for (const id of [withReply, without]) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    for (const id of [withReply, without]) expect(await sentOrFailed(id)).toBe('sent');
    expect(t.standIn.requests.filter((r) => r.status === 200).map((r) => [r.path, r.size])).toEqual([['/emails', 1], ['/emails/batch', 2]]);
    const byRecipient = Object.fromEntries(t.standIn.messages.map((m) => [m.to[0], m.replyTo]));
    expect(byRecipient).toEqual({ 'patient1@example.com': ['fragen@curavani.com'], 'patient2@example.com': ['fragen@curavani.com'], 'patient3@example.com': undefined });
  });

  it('waits for retry-after on a 429 and then sends', async () => {
    const t = await harness();
    t.standIn.inject({ kind: 'status', status: 429, retryAfterSeconds: 1 });
    const id = await t.addDelivery();
    await t.startWorkers();
    expect(await sentOrFailed(id)).toBe('sent');
    const [limited, ok] = t.standIn.requests;
    expect(limited!.status).toBe(429);
    expect(ok!.status).toBe(200);
    expect(ok!.at - limited!.at).toBeGreaterThanOrEqual(950);
    expect(t.standIn.messages).toHaveLength(1);
  });

  it('a 429 holds back the requests of every worker for retry-after, also those already waiting for a rate slot', async () => {
    // 20 deliveries of one batch each, 16 jobs at once: each reserves a rate slot (200 ms apart
    // at 5 requests/s), so when the first request is answered 429 the slots already handed out
    // reach seconds ahead. None of them may be used before retry-after (1 s) has passed.
    const t = await harness({ env: { MAIL_BATCH_SIZE: '1', MAIL_RATE_PER_SECOND: '5' } });
    t.standIn.inject({ kind: 'status', status: 429, retryAfterSeconds: 1 });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await t.addDelivery({}, { enqueue: false }));
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers();
    for (const id of ids) expect(await sentOrFailed(id)).toBe('sent');
    const [limited, ...rest] = t.standIn.requests;
    expect(limited!.status).toBe(429);
    const during = rest.filter((r) => r.at - limited!.at < 950);
    expect(during.map((r) => ({ status: r.status, afterMs: r.at - limited!.at }))).toEqual([]);
    expect(t.standIn.stats()).toMatchObject({ messages: 20, recipients: 20, duplicates: 0 });
  });

  it('retries a 500 and a timeout with backoff, then sends once under the same key', async () => {
    const t = await harness();
    t.standIn.inject({ kind: 'status', status: 500 });
    t.standIn.inject({ kind: 'hang' });
    const id = await t.addDelivery({ idempotencyKey: 'retry.me' });
    await t.startWorkers();
    expect(await sentOrFailed(id)).toBe('sent');
    expect(t.standIn.requests.map((r) => r.status)).toEqual([500, 0, 200]);
    expect(t.standIn.requests.every((r) => r.idempotencyKey === 'retry.me')).toBe(true);
    expect(t.standIn.messages).toHaveLength(1);
    expect((await getDelivery(database.db, id))!.attempts).toBe(3);
  });

  it('a permanent 4xx ends failed with its reason in the dead-letter queue', async () => {
    const t = await harness({ standIn: { rejectTo: (a) => a.startsWith('reject') } });
    const id = await t.addDelivery({ toAddress: 'reject@example.com' });
    await t.startWorkers();
    expect(await sentOrFailed(id)).toBe('failed');
    const row = await getDelivery(database.db, id);
    expect(row!.lastError).toMatch(/422 validation_error: Invalid `to` field/);
    const dead = await waitFor('dead letter', async () => (await listDeadLetters(t.ctx.queues, { queue: 'email' }))[0]);
    expect(dead).toMatchObject({ name: 'email-send', code: 'rejected', data: { deliveryId: id }, attemptsMade: 1 });
    expect(dead.reason).toContain(id);
    expect(t.standIn.requests).toHaveLength(1);
  });

  /** The fleet's log lines (JSON), to check what they say and that they name no one. */
  const capturedLog = () => {
    const lines: string[] = [];
    return { lines, log: createLogger({ level: 'info', pretty: 'false' }, { write: (line: string) => void lines.push(line) }) };
  };
  const refusedRequests = (t: EmailHarness) => t.standIn.requests.filter((r) => r.status === 403).length;

  it('a refused API key (403) keeps the deliveries waiting under their key; once the provider accepts again they go out exactly once', async () => {
    const { lines, log } = capturedLog();
    const t = await harness({ log });
    t.standIn.refuse(refusals.invalidApiKey);
    const ids = [await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false })];
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers();
    await waitFor('three refused requests', async () => refusedRequests(t) >= 3);
    const reason = 'the email provider refused the API key (403 invalid_api_key): check RESEND_API_KEY';
    for (const id of ids) expect(await getDelivery(database.db, id)).toMatchObject({ status: 'sending', lastError: reason });
    expect(await listDeadLetters(t.ctx.queues, { queue: 'email' })).toEqual([]);
    // Counted when the answer has come back: the stand-in records the request a moment before.
    await waitFor('three refusals counted', async () => ((await metricValues(t.ctx.metrics.registry, 'fleet_email_requests_total', 'outcome')).refused ?? 0) >= 3);
    const said = lines.map((l) => JSON.parse(l) as { msg: string; reason?: string; status?: number });
    expect(said).toContainEqual(expect.objectContaining({ msg: 'email-send: the provider refused the API key or sending domain; the deliveries wait and are retried', reason, status: 403 }));

    t.standIn.refuse(null); // the key is fixed
    for (const id of ids) expect(await sentOrFailed(id)).toBe('sent');
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0, acceptedRequests: 1 });
    expect(new Set(t.standIn.requests.map((r) => r.idempotencyKey)).size).toBe(1);
    expect(await listDeadLetters(t.ctx.queues, { queue: 'email' })).toEqual([]);
    // No address, subject or body in any log line.
    expect(lines.filter((l) => /@example\.com|Ihre Suche|Hallo/.test(l))).toEqual([]);
  });

  it('a sending domain refused (403) until the last attempt fails the deliveries for good, dead-lettered with code refused', async () => {
    const { lines, log } = capturedLog();
    // 18 attempts of the email family, its backoff scaled down to milliseconds.
    const t = await harness({ log, env: { RETRY_BACKOFF_SCALE: '0.001' } });
    t.standIn.refuse(refusals.unverifiedDomain);
    const ids = [await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false })];
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers();
    for (const id of ids) expect(await sentOrFailed(id)).toBe('failed');
    const reason = 'the email provider refused the sender (403 validation_error): check that the sending domain of MAIL_FROM is verified in Resend, and RESEND_API_KEY';
    // One attempt per request: the last one is recorded once, with the failure.
    for (const id of ids) expect(await getDelivery(database.db, id)).toMatchObject({ lastError: reason, attempts: 18 });
    expect(refusedRequests(t)).toBe(18);
    const dead = await waitFor('two dead letters', async () => {
      const d = await listDeadLetters(t.ctx.queues, { queue: 'email' });
      return d.length === 2 && d;
    });
    expect(dead.map((d) => [d.code, (d.data as { deliveryId: string }).deliveryId]).sort()).toEqual(ids.map((id) => ['refused', id]).sort());
    expect(t.standIn.messages).toEqual([]);
    // Resend's text names the account's own address: it is in no reason and no log line.
    expect(lines.filter((l) => /@example\.com|Ihre Suche|Hallo/.test(l))).toEqual([]);
    expect(JSON.stringify(dead)).not.toContain('owner@example.com');
  });

  it('sends 250 pending deliveries in 3 batch requests, none twice', async () => {
    const t = await harness();
    const ids: string[] = [];
    for (let i = 0; i < 250; i++) ids.push(await t.addDelivery({}, { enqueue: false }));
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    await t.startWorkers();
    await waitFor('all sent', async () => {
      const [r] = await database.sql<{ n: number }[]>`select count(*)::int as n from fleet.deliveries where status = 'sent'`;
      return r!.n === 250;
    });
    const batches = t.standIn.requests.filter((r) => r.status === 200);
    expect(batches.map((r) => r.path)).toEqual(['/emails/batch', '/emails/batch', '/emails/batch']);
    expect(batches.map((r) => r.size).sort()).toEqual([100, 100, 50].sort());
    expect(t.standIn.stats()).toMatchObject({ messages: 250, recipients: 250, duplicates: 0 });
    // The carried deliveries' jobs were taken off the queue or ran as no-ops; none is left.
    const queue = t.ctx.queues.queue('email');
    await waitFor('no job left', async () => {
      const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized');
      return Object.values(c).every((n) => n === 0);
    });
  });

  it('drops a message a still-wanted check refuses (opt-out after queueing)', async () => {
    const t = await harness();
    const optedOut = new Set([2]);
    const keep = await t.addDelivery({ kind: 'weekly-status', patientId: 1 }, { enqueue: false });
    const drop = await t.addDelivery({ kind: 'weekly-status', patientId: 2 }, { enqueue: false });
    await t.startWorkers({
      stillWanted: {
        'weekly-status': async (refs) => refs.filter((r) => r.patientId !== null && optedOut.has(r.patientId)).map((r) => ({ id: r.id, reason: 'patient opted out' })),
      },
    });
    await t.ctx.queues.enqueue('email-send', { deliveryId: drop });
    await t.ctx.queues.enqueue('email-send', { deliveryId: keep });
    expect(await sentOrFailed(drop)).toBe('dropped');
    expect(await sentOrFailed(keep)).toBe('sent');
    expect((await getDelivery(database.db, drop))!.lastError).toBe('patient opted out');
    expect(t.standIn.messages.map((m) => m.to[0])).toEqual(['patient1@example.com']);
  });

  /** A weekly-status check that drops the patients in `optedOut` (filled by the test as it goes). */
  const optOutCheck = (optedOut: Set<number>, before?: () => void): StillWantedCheck => async (refs) => {
    before?.();
    return refs.filter((r) => r.patientId !== null && optedOut.has(r.patientId)).map((r) => ({ id: r.id, reason: 'weekly status no longer wanted: opted_out' }));
  };
  const weeklyRows = async (t: EmailHarness, n: number) => {
    const ids: string[] = [];
    for (let i = 1; i <= n; i++) ids.push(await t.addDelivery({ kind: 'weekly-status', patientId: i, toAddress: `patient${i}@example.com` }, { enqueue: false }));
    return ids;
  };
  /** Marks the rows as one batch claimed two hours ago by the first (a worker died with it). */
  const stuckBatch = async (ids: string[]) => {
    const [{ batch }] = (await database.sql<{ batch: string }[]>`select gen_random_uuid()::text as batch`) as unknown as [{ batch: string }];
    const leader = [...ids].sort()[0]!;
    await database.sql`update fleet.deliveries set status = 'sending', batch_id = ${batch}::uuid, batch_leader_id = ${leader}::uuid,
      claimed_at = now() - interval '2 hours', updated_at = now() - interval '2 hours' where id in ${database.sql(ids)}`;
    return batch;
  };

  it('a batch retried after a 500 leaves out the patient who opted out meanwhile, under the same key', async () => {
    const t = await harness();
    const optedOut = new Set<number>();
    // The patient opts out once the first (failing) request has been made.
    await t.startWorkers({ stillWanted: { 'weekly-status': optOutCheck(optedOut, () => t.standIn.requests.length && optedOut.add(3)) } });
    t.standIn.inject({ kind: 'status', status: 500 });
    const ids = await weeklyRows(t, 3);
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    for (const id of ids) await sentOrFailed(id);
    expect(await Promise.all(ids.map(statusOf))).toEqual(['sent', 'sent', 'dropped']);
    expect((await getDelivery(database.db, ids[2]!))!.lastError).toBe('weekly status no longer wanted: opted_out');
    expect(t.standIn.messages.map((m) => m.to[0]).sort()).toEqual(['patient1@example.com', 'patient2@example.com']);
    expect(t.standIn.requests.map((r) => [r.status, r.path])).toEqual([[500, '/emails/batch'], [200, '/emails/batch']]);
    expect(t.standIn.requests[1]!.idempotencyKey).toBe(t.standIn.requests[0]!.idempotencyKey);
  });

  it('a 429 wait asks again: the patient who opted out during the wait is dropped', async () => {
    const t = await harness();
    const optedOut = new Set<number>();
    await t.startWorkers({ stillWanted: { 'weekly-status': optOutCheck(optedOut, () => t.standIn.requests.length && optedOut.add(2)) } });
    t.standIn.inject({ kind: 'status', status: 429, retryAfterSeconds: 1 });
    const ids = await weeklyRows(t, 2);
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    for (const id of ids) await sentOrFailed(id);
    expect(await Promise.all(ids.map(statusOf))).toEqual(['sent', 'dropped']);
    expect(t.standIn.messages.map((m) => m.to[0])).toEqual(['patient1@example.com']);
  });

  it('a stuck batch the sweep hands over asks again and leaves out the patient who opted out', async () => {
    const t = await harness({ env: { MAIL_SWEEP_INTERVAL_MS: '1000' } });
    const ids = await weeklyRows(t, 2);
    const batch = await stuckBatch(ids);
    await t.startWorkers({ stillWanted: { 'weekly-status': optOutCheck(new Set([2])) } });
    await t.startSweep();
    for (const id of ids) await sentOrFailed(id);
    expect(await Promise.all(ids.map(statusOf))).toEqual(['sent', 'dropped']);
    expect(t.standIn.messages.map((m) => m.to[0])).toEqual(['patient1@example.com']);
    // Same form and key as the request the dead worker may have made: a batch, one row left.
    expect(t.standIn.requests.map((r) => [r.status, r.path, r.size, r.idempotencyKey])).toEqual([[200, '/emails/batch', 1, `fleet-batch/${batch}`]]);
  });

  it('a stuck batch the provider had accepted is not changed: the smaller request is refused (409) and the unchanged one replays', async () => {
    const t = await harness({ env: { MAIL_SWEEP_INTERVAL_MS: '1000' } });
    const ids = (await weeklyRows(t, 2)).sort();
    const batch = await stuckBatch(ids);
    // The dead worker's request did reach the provider.
    const rows = await Promise.all(ids.map(async (id) => (await getDelivery(database.db, id))!));
    const accepted = await createMailDriver(t.ctx.config.mail).sendBatch(
      rows.map((r) => ({ idempotencyKey: r.idempotencyKey, from: r.fromAddress, to: r.toAddress, subject: r.subject, html: r.html, text: r.text, headers: r.headers })),
      { idempotencyKey: `fleet-batch/${batch}` },
    );
    expect(accepted.every((r) => r.ok)).toBe(true);
    await t.startWorkers({ stillWanted: { 'weekly-status': optOutCheck(new Set([2])) } });
    await t.startSweep();
    for (const id of ids) await sentOrFailed(id);
    expect(await Promise.all(ids.map(statusOf))).toEqual(['sent', 'sent']);
    expect(t.standIn.requests.map((r) => [r.status, r.size, r.replayed])).toEqual([[200, 2, false], [409, 0, false], [200, 0, true]]);
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
    const ownIds = accepted.map((r) => (r.ok ? r.providerMessageId : ''));
    expect(await Promise.all(ids.map(async (id) => (await getDelivery(database.db, id))!.providerMessageId))).toEqual(ownIds);
  });

  it('the sweep re-enqueues an old pending weekly delivery of an ended ISO week: dropped with the reason, never sent', async () => {
    const t = await harness({ env: { MAIL_SWEEP_INTERVAL_MS: '1000' } });
    const weekly: StillWantedCheck = async (refs) =>
      [...(await unwantedWeeklyDeliveries(database.db, refs, { now: new Date(), timeZone: 'Europe/Berlin' }))].map(([id, u]) => ({ id, reason: `${u.reason} (${u.detail})` }));
    const old = await t.addDelivery({ kind: 'weekly-status', idempotencyKey: 'weekly.7.2020-W10', patientId: 7 }, { enqueue: false });
    await database.sql`update fleet.deliveries set created_at = now() - interval '2 minutes' where id = ${old}`;
    await t.startWorkers({ stillWanted: { 'weekly-status': weekly } });
    await t.startSweep();
    expect(await sentOrFailed(old)).toBe('dropped');
    expect((await getDelivery(database.db, old))!.lastError).toBe('week_over (2020-W10 ended 2020-03-08T23:00:00.000Z)');
    expect(t.standIn.requests).toEqual([]);
  });

  it('the sweep enqueues a delivery nobody enqueued and re-sends a batch stuck in sending under its key', async () => {
    const t = await harness({ env: { MAIL_SWEEP_INTERVAL_MS: '1000' } });
    const forgotten = await t.addDelivery({}, { enqueue: false });
    await database.sql`update fleet.deliveries set created_at = now() - interval '2 minutes' where id = ${forgotten}`;
    const stuck = await t.addDelivery({ idempotencyKey: 'stuck.1' }, { enqueue: false });
    // A worker died after claiming (and maybe sending) this row two hours ago.
    await database.sql`update fleet.deliveries set status = 'sending', batch_id = gen_random_uuid(), batch_leader_id = id,
      claimed_at = now() - interval '2 hours', updated_at = now() - interval '2 hours' where id = ${stuck}`;
    await t.startWorkers();
    await t.startSweep();
    expect(await sentOrFailed(forgotten)).toBe('sent');
    expect(await sentOrFailed(stuck)).toBe('sent');
    expect(t.standIn.requests.find((r) => r.idempotencyKey === 'stuck.1')).toBeTruthy();
    expect(t.standIn.stats().duplicates).toBe(0);
  });
});

describe('Redis back without its data', () => {
  it('a batch being sent then (its job gone with Redis) is handed over at the sweep\'s next pass, not after MAIL_SENDING_STALE_MS, and goes out once', async () => {
    const t = await harness({ env: { MAIL_SWEEP_INTERVAL_MS: '1000' } });
    await t.startWorkers();
    await t.startSweep();
    // The sweep's first pass (after 1 s) has run: it leaves its marker in Redis. (A first pass
    // slower than a fixed 1.5 s came after the data loss below and handed the batch over as the
    // first sweep against a fresh Redis does: the test passed without a running sweep noticing
    // the loss.)
    const redis = await t.ctx.queues.redis();
    await waitFor('the sweep\'s first pass', async () => (await redis.exists(`${t.ctx.queues.prefix}:email-sweep:seen`)) === 1);
    // A batch claimed a minute ago whose job waited in Redis for its retry (a 500 answered
    // its request); then Redis restarts without its data.
    const ids = [await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false })];
    await database.sql`update fleet.deliveries set status = 'sending', batch_id = '6f1d1a52-0000-4000-8000-000000000001', batch_leader_id = ${ids[0]!},
      claimed_at = now() - interval '1 minute', updated_at = now() - interval '1 minute', outcome_unknown = true where id in ${database.sql(ids)}`;
    await deleteQueueKeys(t.ctx.config.queues.prefix);
    for (const id of ids) expect(await sentOrFailed(id)).toBe('sent');
    expect(t.standIn.requests.filter((r) => r.status === 200).map((r) => [r.path, r.size, r.idempotencyKey])).toEqual([
      ['/emails/batch', 2, 'fleet-batch/6f1d1a52-0000-4000-8000-000000000001'],
    ]);
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
  });

  it('a batch whose job still waits for its retry gets no second job from the first sweep against this Redis (a fresh one, or a first start)', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', pretty: 'false' }, { write: (line: string) => void lines.push(line) });
    const t = await harness({ log, env: { MAIL_SWEEP_INTERVAL_MS: '1000' } });
    const ids = [await t.addDelivery({}, { enqueue: false }), await t.addDelivery({}, { enqueue: false })];
    await database.sql`update fleet.deliveries set status = 'sending', batch_id = '6f1d1a52-0000-4000-8000-000000000002', batch_leader_id = ${ids[0]!},
      claimed_at = now() - interval '1 minute', updated_at = now() - interval '1 minute', outcome_unknown = true where id in ${database.sql(ids)}`;
    // Its leader's job waits for its next attempt (a 500 answered the last one).
    await t.ctx.queues.enqueue('email-send', { deliveryId: ids[0]! }, { delayMs: 4_000 });
    await t.startSweep();
    // The sweep's first pass has looked at the batch (said after its recoverBatch calls; a fixed
    // wait let a pass slower than it go unchecked, the test then passing without its fix).
    await waitFor('the first sweep pass', async () => lines.some((l) => (JSON.parse(l) as { msg: string; staleBatches?: number }).staleBatches === 1) || undefined);
    const jobs = await t.ctx.queues.queue('email').getJobs(['waiting', 'delayed', 'active', 'completed', 'failed']);
    expect(jobs.map((j) => j.id)).toEqual([jobIdFor('email-send', { deliveryId: ids[0]! })]);
    await t.startWorkers();
    for (const id of ids) expect(await sentOrFailed(id)).toBe('sent');
    expect(t.standIn.stats()).toMatchObject({ messages: 2, duplicates: 0 });
  });
});

describe('a batch with a message the driver could not take for now', () => {
  it('records the others as sent and gives that one back to pending, out of the batch (a later claim makes it a batch of its own)', async () => {
    const t = await harness({ driver: 'outbox' });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await t.addDelivery({}, { enqueue: false }));
    const now = new Date('2026-11-23T09:00:00Z');
    const claim = await claimDeliveries(database.db, ids[0]!, { batchSize: 10, batchableKinds: null, now });
    expect(claim.kind).toBe('claimed');
    const batchId = (claim as { batchId: string }).batchId;
    const rows = (claim as { rows: Array<{ id: string }> }).rows.map((r) => r.id);
    const [back, ...sent] = rows;
    await finishDeliveries(database.db, batchId, { sent: sent.map((id) => ({ id, providerMessageId: `p.${id}` })), failed: [], dropped: [], retry: [{ id: back!, reason: 'outbox folder: ENOSPC' }] }, now);
    expect(await getDelivery(database.db, back!)).toMatchObject({ status: 'pending', batchId: null, lastError: 'outbox folder: ENOSPC', attempts: 1 });
    for (const id of sent) expect(await statusOf(id)).toBe('sent');
    const again = await claimDeliveries(database.db, back!, { batchSize: 10, batchableKinds: null, now });
    expect(again).toMatchObject({ kind: 'claimed', rows: [expect.objectContaining({ id: back })] });
    expect((again as { batchId: string }).batchId).not.toBe(batchId);
  });
});

describe('outbox folder driver (the default)', () => {
  it('writes one readable .eml per delivery, never twice', async () => {
    const t = await harness({ driver: 'outbox' });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(
        await t.addDelivery(
          {
            idempotencyKey: `weekly.patient.${i}.2026-W48`,
            subject: `Ihre Suche nach einem Therapieplatz – Übersicht ${i}`,
            html: `<p>Grüße ${i}</p>`,
            text: `Grüße ${i}`,
            headers: { 'List-Unsubscribe': `<https://curavani.test/u/${i}>, <mailto:unsubscribe@curavani.com>`, 'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click' },
            ...(i === 0 ? { replyToAddress: 'fragen@curavani.com' } : {}),
          },
          { enqueue: false },
        ),
      );
    }
    await t.startWorkers();
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id });
    for (const id of ids) expect(await sentOrFailed(id)).toBe('sent');
    for (const id of ids) await t.ctx.queues.enqueue('email-send', { deliveryId: id }, { jobId: `again.${id}` });
    // The repeated jobs themselves (not a count of the queue's completed jobs: the first job's
    // batch may have carried the other two deliveries and discarded their waiting jobs).
    const email = t.ctx.queues.queue('email');
    await waitFor('repeat jobs', async () => (await Promise.all(ids.map((id) => email.getJobState(`again.${id}`)))).every((s) => s === 'completed'));
    const files = (await readdir(t.outboxDir)).filter((f) => f.endsWith('.eml')).sort();
    expect(files).toHaveLength(3);
    expect((await readdir(t.outboxDir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const parsed = await PostalMime.parse(await readFile(path.join(t.outboxDir, files[0]!)));
    expect(parsed.subject).toBe('Ihre Suche nach einem Therapieplatz – Übersicht 0');
    expect(parsed.text?.trim()).toBe('Grüße 0');
    expect(parsed.html?.trim()).toBe('<p>Grüße 0</p>');
    expect(parsed.to?.[0]?.address).toMatch(/@example\.com$/);
    expect(parsed.messageId).toMatch(/^<[0-9a-f]{32}@curavani\.com>$/);
    expect(parsed.date).toBeTruthy();
    const headers = Object.fromEntries(parsed.headers.map((x) => [x.key, x.value]));
    expect(headers['list-unsubscribe']).toBe('<https://curavani.test/u/0>, <mailto:unsubscribe@curavani.com>');
    expect(headers['list-unsubscribe-post']).toBe('List-Unsubscribe=One-Click');
    expect(headers['reply-to']).toBe('fragen@curavani.com');
    expect(parsed.replyTo?.map((a) => 'address' in a && a.address)).toEqual(['fragen@curavani.com']);
    // A delivery without a Reply-To gets no such header (replies go to From).
    const second = await PostalMime.parse(await readFile(path.join(t.outboxDir, files[1]!)));
    expect(second.headers.map((x) => x.key)).not.toContain('reply-to');
    const row = await getDelivery(database.db, ids[0]!);
    expect(row!.providerMessageId).toBe(`outbox:${files[0]}`);
  });
});
