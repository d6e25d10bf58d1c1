import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { queueDelivery } from '../../libs/db/repositories/deliveries.js';
import { countWeeklyCandidates, recordWeeklyDelivery } from '../../libs/db/repositories/weekly-status.js';
import { patienten, platzsuche } from '../../libs/db/schema/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { discardOne, requeueOne } from '../../libs/ops/dead-letters.js';
import { addDeadLetter, listDeadLetters } from '../../libs/queues/index.js';
import { fixedClock, openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { isoWeekOf, isoWeekRange } from '../../libs/weekly/iso-week.js';
import { DeliveryContentsRemovedError, emailDeadLetterHook, restoreEmailDeadLetters } from './dead-letters.js';
import { runEmailRetention } from './run-retention.js';

const DAY = 86_400_000;

let database: TestDatabase;
let ctx: FleetContext;
let env: Record<string, string>;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
  const q = testQueuePrefix();
  cleanups.push(q.cleanup);
  env = { DATABASE_URL: database.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
  ctx = openContext(loadConfig(env), silentLogger());
});

afterAll(async () => {
  await ctx?.close();
  for (const c of cleanups.reverse()) await c();
  await database?.drop();
});

beforeEach(async () => {
  await database.sql`truncate fleet.deliveries, patient_service.patienten, matching_service.platzsuche cascade`;
  await ctx.queues.queue('email-dlq').obliterate({ force: true });
});

/** Another process on the same database and queues, with its own settings and clock. */
function otherProcess(over: Record<string, string> = {}, clock?: ReturnType<typeof fixedClock>): FleetContext {
  const other = openContext(loadConfig({ ...env, ...over }), silentLogger(), clock ? { clock } : {});
  cleanups.push(() => other.close());
  return other;
}

type Row = Record<string, unknown>;
const row = async (id: string) => (await database.sql`select * from fleet.deliveries where id = ${id}`)[0] as Row;
const CONTENTS = ['subject', 'html', 'text', 'headers', 'contents_removed_at'];
const withoutContents = (r: Row) => Object.fromEntries(Object.entries(r).filter(([k]) => !CONTENTS.includes(k)));

let n = 0;
/** A delivery as the sender leaves it, whose last change was `daysAgo` days ago. */
async function craft(status: 'pending' | 'sending' | 'sent' | 'failed' | 'dropped', daysAgo: number): Promise<string> {
  const i = ++n;
  const { id } = await queueDelivery(ctx.database.db, {
    idempotencyKey: `weekly.${i}.2026-W${String((i % 50) + 1).padStart(2, '0')}`,
    kind: 'weekly-status',
    toAddress: `patientin${i}@example.org`,
    fromAddress: 'Curavani <noreply@curavani.com>',
    subject: `Ihre Therapieplatzsuche, Frau Muster ${i}`,
    html: `<p>Liebe Frau Muster ${i}, 3 Anfragen an Therapeut:innen ...</p>`,
    text: `Liebe Frau Muster ${i}, 3 Anfragen an Therapeut:innen ...`,
    headers: { 'List-Unsubscribe': `<https://fleet.example/unsubscribe?t=token-of-${i}>`, 'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click' },
    patientId: i,
  });
  const at = new Date(Date.now() - daysAgo * DAY).toISOString();
  await database.sql`
    update fleet.deliveries
       set status = ${status}, attempts = 1, created_at = ${at}::timestamptz - interval '1 minute', updated_at = ${at}::timestamptz,
           sent_at = case when ${status} = 'sent' then ${at}::timestamptz end,
           provider_message_id = case when ${status} = 'sent' then ${`msg-${i}`} end,
           last_error = case when ${status} in ('failed', 'dropped') then 'rejected: 422 invalid recipient' end,
           batch_id = case when ${status} = 'sending' then gen_random_uuid() end,
           claimed_at = case when ${status} = 'sending' then ${at}::timestamptz end
     where id = ${id}`;
  return id;
}

/** The dead letter a delivery that failed for good leaves in `email-dlq` (what `fleet dlq requeue` works on). */
async function deadLetter(deliveryId: string, jobSuffix = ''): Promise<string> {
  return addDeadLetter(ctx.queues, {
    originalQueue: 'email',
    originalJobId: `email-send.delivery.${deliveryId}${jobSuffix}`,
    name: 'email-send',
    data: { deliveryId },
    reason: 'provider rejected delivery (status 422)',
    code: 'rejected',
    attemptsMade: 1,
    enqueuedAt: null,
    failedAt: new Date().toISOString(),
  });
}

const operator = () => ({ db: ctx.database.db, queues: ctx.queues, hooks: { 'email-send': emailDeadLetterHook } });

/** An operator discards the dead letter of a failed delivery (audited, as `fleet dlq discard` and /ops do). */
async function discard(dlqId: string): Promise<void> {
  await discardOne(operator(), dlqId, { actor: 'test', reason: 'address gone' }, 'email');
}

/** A failed delivery whose dead letter an operator has discarded. */
async function discardedFailure(daysAgo: number): Promise<string> {
  const id = await craft('failed', daysAgo);
  await discard(await deadLetter(id));
  return id;
}

describe('retention of email contents (fleet.deliveries)', () => {
  it('blanks final deliveries past EMAIL_RETENTION_DAYS and records when; pending, sending, recent and requeueable ones keep theirs; a second run does nothing', async () => {
    const sent = await craft('sent', 31);
    const failed = await discardedFailure(45);
    const dropped = await craft('dropped', 31);
    const requeueable = await craft('failed', 40);
    const dlqId = await deadLetter(requeueable);
    const kept = [await craft('pending', 60), await craft('sending', 60), await craft('sent', 29), await craft('failed', 1), requeueable];
    const before = new Map<string, Row>();
    for (const id of [sent, failed, dropped, ...kept]) before.set(id, await row(id));

    const dry = await runEmailRetention(ctx, { dryRun: true });
    expect(dry).toEqual({ retentionDays: 30, due: 3, removed: 0, keptForDeadLetters: 1 });
    expect(await row(sent)).toEqual(before.get(sent));

    const r = await runEmailRetention(ctx);
    expect(r).toEqual({ retentionDays: 30, removed: 3, keptForDeadLetters: 1 });
    for (const id of [sent, failed, dropped]) {
      const after = await row(id);
      expect(after).toMatchObject({ subject: '', html: '', text: '', headers: {} });
      expect(after.contents_removed_at).toBeTruthy();
      // What operators and the idempotency logic read is kept: key, kind, status, recipient,
      // patient, provider id, attempts, reason and every timestamp (updated_at included).
      expect(withoutContents(after)).toEqual(withoutContents(before.get(id)!));
    }
    for (const id of kept) expect(await row(id), `delivery ${id}`).toEqual(before.get(id));
    expect(await metricValues(ctx.metrics.registry, 'fleet_email_contents_removed_total')).toEqual({ '': 3 });

    const again = await runEmailRetention(ctx);
    expect(again).toEqual({ retentionDays: 30, removed: 0, keptForDeadLetters: 1 });
    expect((await runEmailRetention(ctx, { dryRun: true })).due).toBe(0);

    // Once an operator discards the dead letter, nobody can send it again: the next run takes it.
    await discard(dlqId);
    expect(await runEmailRetention(ctx)).toEqual({ retentionDays: 30, removed: 1, keptForDeadLetters: 0 });
    expect((await row(requeueable)).contents_removed_at).toBeTruthy();
  });

  it('a failed delivery kept for its dead letter is requeued whole; a requeue of one whose contents are gone is refused and sends nothing', async () => {
    const waiting = await craft('failed', 40);
    const waitingLetter = await deadLetter(waiting);
    const emptied = await discardedFailure(40);
    await runEmailRetention(ctx);
    expect((await row(emptied)).contents_removed_at).toBeTruthy();

    const deps = operator();
    const requeued = await requeueOne(deps, waitingLetter, { actor: 'test', reason: 'provider fixed' }, 'email');
    expect(requeued.state).toBe('requeued');
    expect(await row(waiting)).toMatchObject({ status: 'pending', subject: expect.stringMatching(/^Ihre Therapieplatzsuche/), contents_removed_at: null });

    // A dead letter the sweep did not see (e.g. Redis restored from a backup): an empty email must not go out.
    const late = await deadLetter(emptied);
    await expect(requeueOne(deps, late, { actor: 'test', reason: 'try again' }, 'email')).rejects.toBeInstanceOf(DeliveryContentsRemovedError);
    expect((await row(emptied)).status).toBe('failed');
    expect((await listDeadLetters(ctx.queues, { queue: 'email' })).map((e) => e.id)).toEqual([late]);
    expect(await ctx.queues.queue('email').getJob(`email-send.delivery.${emptied}`)).toBeUndefined();
  });

  it('a failed delivery whose dead letter Redis lost (no discard recorded) keeps its contents until an operator discards it', async () => {
    // Redis restarted without its data before the email sweep gave the dead letters back (or role
    // email is not running): the rows still say failed, and no operator has decided on them.
    const lost = await craft('failed', 40);
    const requeuedSince = await craft('failed', 40);
    // An earlier failure of it was discarded, then it was sent again and failed again (a new change).
    await database.sql`insert into fleet.audit_log (actor, action, target, created_at) values ('test', 'dlq.discard', ${`email/email-send.delivery.${requeuedSince}`}, now() - interval '50 days')`;
    const before = await row(lost);
    expect(await runEmailRetention(ctx, { dryRun: true })).toEqual({ retentionDays: 30, due: 0, removed: 0, keptForDeadLetters: 2 });
    expect(await runEmailRetention(ctx)).toEqual({ retentionDays: 30, removed: 0, keptForDeadLetters: 2 });
    expect(await row(lost)).toEqual(before);
    expect((await row(requeuedSince)).contents_removed_at).toBeNull();

    // The email sweep gives the dead letters back; a requeue would send the whole email. Once an
    // operator discards one, the next run takes its contents.
    expect(await restoreEmailDeadLetters(ctx)).toBe(2);
    const letter = (await listDeadLetters(ctx.queues, { queue: 'email' })).find((d) => (d.data as { deliveryId?: string }).deliveryId === lost)!;
    await discard(letter.id);
    expect(await runEmailRetention(ctx)).toEqual({ retentionDays: 30, removed: 1, keptForDeadLetters: 1 });
    expect((await row(lost)).contents_removed_at).toBeTruthy();
  });

  it('a discard counts under the job id the sweep or a requeue gave the email (a suffix after the delivery id), and only for its own delivery', async () => {
    const swept = await craft('failed', 40);
    const retried = await craft('failed', 40);
    const other = await craft('failed', 40);
    await discard(await deadLetter(swept, `.sweep.${Date.now()}`));
    await discard(await deadLetter(retried, `.retry.${Date.now()}`));
    // Audit rows that name a target only close to the other delivery's are no discard of it.
    await database.sql`insert into fleet.audit_log (actor, action, target) values
      ('test', 'dlq.discard', ${`email/email-send.delivery.${other.slice(0, -1)}`}),
      ('test', 'dlq.requeue', ${`email/email-send.delivery.${other}`}),
      ('test', 'dlq.discard', ${`patient-import/email-send.delivery.${other}`})`;
    expect(await runEmailRetention(ctx)).toEqual({ retentionDays: 30, removed: 2, keptForDeadLetters: 1 });
    expect((await row(swept)).contents_removed_at).toBeTruthy();
    expect((await row(retried)).contents_removed_at).toBeTruthy();
    expect((await row(other)).contents_removed_at).toBeNull();
  });

  it('two sweeps at once blank every row once; EMAIL_RETENTION_DAYS=0 keeps everything', async () => {
    await database.sql`
      insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, headers, status, sent_at, created_at, updated_at)
      select 'staff.import.' || g, 'staff', 'info@curavani.com', 'noreply@curavani.com', 'Neuer Patient: Max Muster ' || g, '<p>Max</p>', 'Max',
             '{}'::jsonb, 'sent', now() - interval '40 days', now() - interval '40 days', now() - interval '40 days'
        from generate_series(1, 1200) g`;
    const forever = otherProcess({ EMAIL_RETENTION_DAYS: '0' });
    expect(await runEmailRetention(forever)).toEqual({ retentionDays: 0, removed: 0, keptForDeadLetters: 0 });
    expect(await runEmailRetention(forever, { dryRun: true })).toEqual({ retentionDays: 0, removed: 0, keptForDeadLetters: 0 });

    const [a, b] = await Promise.all([runEmailRetention(ctx), runEmailRetention(otherProcess())]);
    expect(a.removed + b.removed).toBe(1200);
    const [left] = await database.sql`select count(*)::int as n from fleet.deliveries where contents_removed_at is null or subject <> ''`;
    expect(left!.n).toBe(0);
  });

  it('after the contents are gone, the idempotency key still stops a second weekly email to the patient in that week', async () => {
    const timeZone = ctx.config.weekly.timeZone;
    const isoWeek = isoWeekOf(new Date(), timeZone);
    const week = { isoWeek, weekStart: isoWeekRange(isoWeek, timeZone).start };
    const [p] = await ctx.database.db
      .insert(patienten)
      .values({ anrede: 'Frau', geschlecht: 'weiblich', vorname: 'Erika', nachname: 'Muster', email: 'erika@example.org', zahlungsreferenz: 'RET00001', status: 'auf_der_Suche' })
      .returning({ id: patienten.id });
    await ctx.database.db.insert(platzsuche).values({ patientId: p!.id, status: 'aktiv' });
    const compose = () => ({ fromAddress: 'Curavani <noreply@curavani.com>', subject: 'Ihre Therapieplatzsuche', html: '<p>...</p>', text: '...' });

    const first = await recordWeeklyDelivery(ctx.database.db, { ...week, patientId: p!.id, now: new Date() }, compose);
    expect(first.outcome).toBe('recorded');
    const id = (first as { deliveryId: string }).deliveryId;
    // Sent (weekly_update_last_sent is left unset here, so the delivery's key is the only guard).
    await database.sql`update fleet.deliveries set status = 'sent', sent_at = now(), updated_at = now() where id = ${id}`;

    const later = otherProcess({}, fixedClock(new Date(Date.now() + 31 * DAY)));
    expect((await runEmailRetention(later)).removed).toBe(1);
    expect(await row(id)).toMatchObject({ subject: '', idempotency_key: `weekly.${p!.id}.${isoWeek}`, status: 'sent' });

    expect(await countWeeklyCandidates(ctx.database.db, week)).toMatchObject({ eligible: 0, skippedAlreadySent: 1 });
    expect(await recordWeeklyDelivery(ctx.database.db, { ...week, patientId: p!.id, now: new Date() }, compose)).toEqual({ outcome: 'exists', deliveryId: id });
    const [count] = await ctx.database.db.execute<{ n: number }>(sql`select count(*)::int as n from fleet.deliveries`);
    expect(count!.n).toBe(1);
  });
});
