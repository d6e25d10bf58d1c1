import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eq, sql } from 'drizzle-orm';
import { loadConfig } from '../../libs/config/index.js';
import { claimDeliveries, finishDeliveries, getDelivery } from '../../libs/db/repositories/deliveries.js';
import { eligiblePatientIds, eligiblePatientIdsQuery } from '../../libs/db/repositories/weekly-status.js';
import { deliveries, patienten, platzsuche, therapeutAnfragePatient, therapeuten, therapeutenanfrage } from '../../libs/db/schema/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { fixedClock, openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { until } from '../../libs/testing/until.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { isPlausibleEmail } from '../../libs/weekly/email-address.js';
import { isoWeekRange } from '../../libs/weekly/iso-week.js';
import { runWeeklyFanout } from './run-fanout.js';
import { weeklyStillWanted } from './still-wanted.js';
import { weeklyHandlers } from './worker.js';

/**
 * The weekly rules around sending (real PostgreSQL and Redis, injected clock): one email per
 * ISO week even when an older one is still waiting, `weekly_update_last_sent` only moving when
 * an email goes out, and patients without a plausible address never selected. The email
 * worker's part is played by the repository calls it makes (claim, finish) and the
 * still-wanted check it asks; its own tests live in workers/email.
 */
const W48_MONDAY = '2026-11-23T08:00:05Z'; // Monday 09:00:05 Berlin
const W49_MONDAY = '2026-11-30T08:00:05Z';
const DAY = 86_400_000;
let db: TestDatabase;
let ctx: FleetContext;
let cleanupRedis: () => Promise<void>;
let therapistId = 0;
let seq = 0;
const clock = fixedClock(W48_MONDAY);
const helpers = { log: silentLogger(), jobId: 'x', attempt: 1, maxAttempts: 1, isFinalAttempt: false, updateProgress: async () => {} };

async function patient(email: string | null, requestsSentAt: Date[] = []): Promise<number> {
  seq++;
  const [row] = await ctx.database.db
    .insert(patienten)
    .values({ anrede: 'Frau', geschlecht: 'weiblich', vorname: 'Erika', nachname: `Muster${seq}`, email, zahlungsreferenz: `WR${seq}`, status: 'auf_der_Suche' })
    .returning({ id: patienten.id });
  const [search] = await ctx.database.db.insert(platzsuche).values({ patientId: row!.id, status: 'aktiv' }).returning({ id: platzsuche.id });
  for (const at of requestsSentAt) await request(search!.id, at);
  return row!.id;
}
async function request(searchId: number, sentAt: Date) {
  const [r] = await ctx.database.db.insert(therapeutenanfrage).values({ therapistId, gesendetDatum: sentAt }).returning({ id: therapeutenanfrage.id });
  await ctx.database.db.insert(therapeutAnfragePatient).values({ therapeutenanfrageId: r!.id, platzsucheId: searchId, status: 'anstehend' });
}
async function searchOf(patientId: number): Promise<number> {
  const [s] = await ctx.database.db.select({ id: platzsuche.id }).from(platzsuche).where(eq(platzsuche.patientId, patientId));
  return s!.id;
}
/** The weekly-status job of a patient and week, as its worker runs it. */
async function record(patientId: number, isoWeek: string) {
  return (await weeklyHandlers(ctx)['weekly-status']!({ patientId, isoWeek }, helpers)) as { outcome: string; deliveryId?: string; reason?: string };
}
async function lastSent(patientId: number): Promise<Date | null> {
  const [p] = await ctx.database.db.select({ at: patienten.weeklyUpdateLastSent }).from(patienten).where(eq(patienten.id, patientId));
  return p!.at;
}
async function ref(deliveryId: string) {
  const d = (await getDelivery(ctx.database.db, deliveryId))!;
  return { id: d.id, kind: d.kind, idempotencyKey: d.idempotencyKey, patientId: d.patientId, toAddress: d.toAddress };
}
/** What the email worker does with a delivery once the provider answered: claim it alone, record the outcome. */
async function finish(deliveryId: string, how: 'sent' | 'failed' | 'dropped') {
  const claim = await claimDeliveries(ctx.database.db, deliveryId, { batchSize: 1, batchableKinds: null, now: clock.now() });
  if (claim.kind !== 'claimed') throw new Error(`not claimed: ${claim.kind}`);
  await finishDeliveries(
    ctx.database.db,
    claim.batchId,
    {
      sent: how === 'sent' ? [{ id: deliveryId, providerMessageId: 'pm-1' }] : [],
      failed: how === 'failed' ? [{ id: deliveryId, reason: 'resend 422 validation_error' }] : [],
      dropped: how === 'dropped' ? [{ id: deliveryId, reason: 'weekly status no longer wanted: opted_out', code: 'opted_out' }] : [],
    },
    clock.now(),
  );
}

beforeAll(async () => {
  db = await createTestDatabase();
  const { prefix, cleanup } = testQueuePrefix();
  cleanupRedis = cleanup;
  const config = loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, UNSUBSCRIBE_SECRET: 'x'.repeat(40) });
  ctx = openContext(config, silentLogger(), { clock });
  const [t] = await ctx.database.db.insert(therapeuten).values({ anrede: 'Herr', geschlecht: 'männlich', vorname: 'Gustav', nachname: 'Geheimname', plz: '10115' }).returning({ id: therapeuten.id });
  therapistId = t!.id;
});
afterEach(async () => {
  clock.set(W48_MONDAY);
  for (const q of ['weekly-fanout', 'weekly-status', 'email']) await ctx.queues.queue(q).obliterate({ force: true });
  await ctx.database.db.execute(
    sql`truncate fleet.deliveries, patient_service.patienten, matching_service.platzsuche, matching_service.therapeutenanfrage, matching_service.therapeut_anfrage_patient`,
  );
});
afterAll(async () => {
  await ctx?.close();
  await cleanupRedis?.();
  await db?.drop();
});

describe('one weekly email per ISO week', () => {
  it('a weekly delivery is wanted only within its ISO week (ends Monday 00:00 Berlin); then it is dropped with the reason', async () => {
    const p = await patient('erika@example.org');
    const { deliveryId } = await record(p, '2026-W48');
    const check = weeklyStillWanted(ctx);
    clock.set('2026-11-29T22:59:59Z'); // Sunday 23:59:59 Berlin
    expect(await check([await ref(deliveryId!)])).toEqual([]);
    clock.set(isoWeekRange('2026-W48', 'Europe/Berlin').end); // Monday 00:00 Berlin
    expect(await check([await ref(deliveryId!)])).toEqual([
      { id: deliveryId, reason: 'weekly status no longer wanted: week_over (2026-W48 ended 2026-11-29T23:00:00.000Z)', code: 'week_over' },
    ]);
  });

  it('W48 still pending when W49 is fanned out (email role down): only W49 is wanted, and it counts from the last email that went out', async () => {
    const p = await patient('erika@example.org', [new Date(Date.parse(W48_MONDAY) - 10 * DAY), new Date(Date.parse(W48_MONDAY) - 9 * DAY)]);
    expect(await runWeeklyFanout(ctx, { isoWeek: '2026-W48', dryRun: false })).toMatchObject({ eligible: 1, queued: 1 });
    const w48 = await record(p, '2026-W48');
    const search = await searchOf(p);
    await request(search, new Date(Date.parse(W48_MONDAY) + 2 * DAY));
    await request(search, new Date(Date.parse(W48_MONDAY) + 3 * DAY));

    clock.set(W49_MONDAY);
    expect(await runWeeklyFanout(ctx, { isoWeek: '2026-W49', dryRun: false })).toMatchObject({ eligible: 1, queued: 1, skippedAlreadySent: 0 });
    const w49 = await record(p, '2026-W49');
    expect(w49.outcome).toBe('queued');
    const drops = await weeklyStillWanted(ctx)([await ref(w48.deliveryId!), await ref(w49.deliveryId!)]);
    expect(drops).toEqual([{ id: w48.deliveryId, reason: 'weekly status no longer wanted: week_over (2026-W48 ended 2026-11-29T23:00:00.000Z)', code: 'week_over' }]);
    // Nothing went out in W48, so W49 reports everything since the search began.
    expect(await lastSent(p)).toBeNull();
    const text = (await getDelivery(ctx.database.db, w49.deliveryId!))!.text;
    expect(text).toContain('Seit Beginn Ihrer Platzsuche haben wir 4 Anfragen an Praxen gesendet.');
  });
});

describe('a fan-out held up while its week ends', () => {
  it('queues nobody for the week that ended while its count waited (a lock, a slow database), instead of one job per patient that only skips', async () => {
    await patient('erika@example.org');
    await patient('max@example.org');
    clock.set('2026-11-29T22:59:58Z'); // Sunday 23:59:58 Berlin: W48 is still the current week
    const locker = ctx.database.sql.reserve();
    const conn = await locker;
    try {
      await conn`begin`;
      await conn`lock table patient_service.patienten in access exclusive mode`;
      const run = weeklyHandlers(ctx)['weekly-fanout']!({ isoWeek: '2026-W48' }, helpers);
      // The fan-out has started and its count waits for the lock (a fixed pause let a slow start
      // read the clock after it moved on, and the test passed without its fix).
      await until('the fan-out waiting for the lock', async () =>
        (await ctx.database.sql`select 1 from pg_locks where not granted and relation = 'patient_service.patienten'::regclass
          and database = (select oid from pg_database where datname = current_database())`).length > 0 || undefined);
      clock.set(isoWeekRange('2026-W48', 'Europe/Berlin').end); // Monday 00:00 Berlin
      await conn`commit`;
      expect(await run).toMatchObject({ isoWeek: '2026-W48', queued: 0, refused: 'past_week' });
    } finally {
      conn.release();
    }
    expect(await ctx.queues.queue('weekly-status').getJobCounts('waiting', 'delayed')).toEqual({ waiting: 0, delayed: 0 });
  });
});

describe('the schedule tick', () => {
  it("run by a process whose clock is a little behind the scheduler's, it waits for its time instead of skipping the week", async () => {
    const tick = weeklyHandlers(ctx)['weekly-tick']!;
    const scheduledAt = new Date('2026-11-23T08:00:00Z'); // Monday 09:00 Berlin, as BullMQ fired it
    clock.set('2026-11-23T07:59:59.990Z'); // this host's clock: 10 ms before
    await expect(tick({}, { ...helpers, scheduledAt })).rejects.toThrow(/before its scheduled time/);
    expect(await ctx.queues.queue('weekly-fanout').getJobs(['waiting', 'delayed'])).toEqual([]);
    clock.set('2026-11-23T08:00:00.020Z'); // the retry
    expect(await tick({}, { ...helpers, scheduledAt })).toMatchObject({ outcome: 'fanout_enqueued', isoWeek: '2026-W48' });
    // A tick enqueued by hand (no scheduled time) before the week's time is not due, as before.
    clock.set('2026-11-23T07:59:00Z');
    expect(await tick({}, helpers)).toEqual({ outcome: 'not_due' });
    // A scheduled time far from this clock (a fixed clock in tests, or a clock that is badly off) is not waited for.
    expect(await tick({}, { ...helpers, scheduledAt: new Date('2026-12-07T08:00:00Z') })).toEqual({ outcome: 'not_due' });
  });
});

describe('still wanted at send time', () => {
  it('a recorded email is dropped when the patient stops searching or no search of theirs is active any more', async () => {
    const [stopped, found, paused, oneLeft] = [await patient('a@example.org'), await patient('b@example.org'), await patient('c@example.org'), await patient('d@example.org')];
    const extra = await ctx.database.db.insert(platzsuche).values({ patientId: oneLeft, status: 'aktiv' }).returning({ id: platzsuche.id });
    const ids = [];
    for (const p of [stopped, found, paused, oneLeft]) ids.push((await record(p, '2026-W48')).deliveryId!);
    // Between recording (Monday 09:00) and sending, the platform changes the patient or the searches.
    await ctx.database.db.update(patienten).set({ status: 'in_Therapie' }).where(eq(patienten.id, stopped));
    await ctx.database.db.update(platzsuche).set({ status: 'erfolgreich' }).where(eq(platzsuche.patientId, found));
    await ctx.database.db.update(platzsuche).set({ status: 'pausiert' }).where(eq(platzsuche.patientId, paused));
    await ctx.database.db.update(platzsuche).set({ status: 'abgebrochen' }).where(eq(platzsuche.id, extra[0]!.id)); // one of two ends
    const drops = await weeklyStillWanted(ctx)(await Promise.all(ids.map(ref)));
    expect(drops).toEqual([
      { id: ids[0], reason: 'weekly status no longer wanted: not_searching', code: 'not_searching' },
      { id: ids[1], reason: 'weekly status no longer wanted: no_active_search', code: 'no_active_search' },
      { id: ids[2], reason: 'weekly status no longer wanted: no_active_search', code: 'no_active_search' },
    ]);
  });

  it('a recorded email is dropped when staff changed the patient\'s address since (it must not go to the old one); the same address in other case or with spaces is sent', async () => {
    const [moved, removed, recased] = [await patient('old@example.org'), await patient('gone@example.org'), await patient('same@example.org')];
    const ids = [];
    for (const p of [moved, removed, recased]) ids.push((await record(p, '2026-W48')).deliveryId!);
    await ctx.database.db.update(patienten).set({ email: 'new@example.org' }).where(eq(patienten.id, moved));
    await ctx.database.db.update(patienten).set({ email: null }).where(eq(patienten.id, removed));
    await ctx.database.db.update(patienten).set({ email: ' Same@Example.org ' }).where(eq(patienten.id, recased));
    const drops = await weeklyStillWanted(ctx)(await Promise.all(ids.map(ref)));
    expect(drops).toEqual([
      { id: ids[0], reason: 'weekly status no longer wanted: address_changed', code: 'address_changed' },
      { id: ids[1], reason: 'weekly status no longer wanted: address_changed', code: 'address_changed' },
    ]);
    // The reason names no address.
    expect(JSON.stringify(drops)).not.toMatch(/example\.org/);
  });
});

describe('weekly_update_last_sent', () => {
  it('moves when the email goes out (in the transaction that marks it sent), not when it is recorded, fails or is dropped', async () => {
    const [sent, failed, dropped] = [await patient('a@example.org'), await patient('b@example.org'), await patient('c@example.org')];
    const ids = [];
    for (const p of [sent, failed, dropped]) ids.push((await record(p, '2026-W48')).deliveryId!);
    for (const p of [sent, failed, dropped]) expect(await lastSent(p)).toBeNull();

    clock.set('2026-11-23T08:30:00Z');
    await finish(ids[0]!, 'sent');
    await finish(ids[1]!, 'failed');
    await finish(ids[2]!, 'dropped');
    expect(await lastSent(sent)).toEqual(new Date('2026-11-23T08:30:00Z'));
    expect(await lastSent(failed)).toBeNull();
    expect(await lastSent(dropped)).toBeNull();

    // "Already this week" comes from the week's delivery key, whatever became of it.
    // Counted by what became of it: not all three "sent" (skippedAlreadySent keeps the total).
    expect(await runWeeklyFanout(ctx, { isoWeek: '2026-W48', dryRun: true })).toMatchObject({
      eligible: 0,
      skippedAlreadySent: 3,
      skippedAlreadyRecorded: { sent: 1, pending: 0, failed: 1, dropped: 1 },
    });
    for (const p of [sent, failed, dropped]) expect(await record(p, '2026-W48')).toMatchObject({ outcome: 'already_recorded' });
  });

  it('a fan-out run again while the week\'s email still waits selects nobody (the delivery key, not last_sent)', async () => {
    const p = await patient('a@example.org');
    await record(p, '2026-W48');
    expect(await lastSent(p)).toBeNull();
    expect(await runWeeklyFanout(ctx, { isoWeek: '2026-W48', dryRun: false })).toMatchObject({
      eligible: 0,
      queued: 0,
      skippedAlreadySent: 1,
      skippedAlreadyRecorded: { sent: 0, pending: 1, failed: 0, dropped: 0 },
    });
  });

  it("last week's email whose answer came after Monday 00:00 does not count as this week's: the patient still gets this week's", async () => {
    const [late, other] = [await patient('a@example.org'), await patient('b@example.org')];
    const w48 = await record(late, '2026-W48');
    // Checked at Sunday 23:59:59.9 Berlin, the provider's answer (and so `sent`) after midnight.
    clock.set('2026-11-29T23:00:00.200Z');
    await finish(w48.deliveryId!, 'sent');
    expect(await lastSent(late)).toEqual(new Date('2026-11-29T23:00:00.200Z'));
    // Something else sent the other patient an email this week (last_sent by hand, no W48 delivery): that one counts.
    await ctx.database.db.update(patienten).set({ weeklyUpdateLastSent: new Date('2026-11-30T07:00:00Z') }).where(eq(patienten.id, other));

    clock.set(W49_MONDAY);
    // an email sent this week another way (no delivery of the week) counts as sent
    expect(await runWeeklyFanout(ctx, { isoWeek: '2026-W49', dryRun: true })).toMatchObject({
      eligible: 1,
      skippedAlreadySent: 1,
      skippedAlreadyRecorded: { sent: 1, pending: 0, failed: 0, dropped: 0 },
    });
    expect(await eligiblePatientIds(ctx.database.db, { isoWeek: '2026-W49', weekStart: isoWeekRange('2026-W49', 'Europe/Berlin').start }, 0, 10)).toEqual([late]);
    expect(await record(late, '2026-W49')).toMatchObject({ outcome: 'queued' });
    expect(await record(other, '2026-W49')).toMatchObject({ outcome: 'skipped', reason: 'already_sent' });
  });

  it('the next week counts "since the last update" from the email that went out', async () => {
    const p = await patient('a@example.org', [new Date(Date.parse(W48_MONDAY) - 3 * DAY)]);
    const w48 = await record(p, '2026-W48');
    clock.set('2026-11-24T10:00:00Z'); // sent on Tuesday
    await finish(w48.deliveryId!, 'sent');
    await request(await searchOf(p), new Date('2026-11-25T10:00:00Z'));
    clock.set(W49_MONDAY);
    const w49 = await record(p, '2026-W49');
    const text = (await getDelivery(ctx.database.db, w49.deliveryId!))!.text;
    expect(text).toContain('Seit unserer letzten Nachricht haben wir 1 neue Anfrage an eine Praxis gesendet.');
    expect(text).toContain('Insgesamt haben wir bisher 2 Anfragen an Praxen gesendet.');
  });
});

describe('a positive answer (angenommen)', () => {
  it('is announced with the promise of a call once; the weeks after state it without promising again, and a new one is announced', async () => {
    const p = await patient('a@example.org', [new Date(Date.parse(W48_MONDAY) - 5 * DAY)]);
    const search = await searchOf(p);
    await ctx.database.db.update(therapeutAnfragePatient).set({ status: 'angenommen' }).where(eq(therapeutAnfragePatient.platzsucheId, search));
    await ctx.database.db.execute(sql`update matching_service.therapeutenanfrage set antwort_datum = ${new Date(Date.parse(W48_MONDAY) - 2 * DAY).toISOString()}`);
    const w48 = await record(p, '2026-W48');
    const first = (await getDelivery(ctx.database.db, w48.deliveryId!))!.text;
    expect(first).toContain('Es gibt eine positive Rückmeldung. Wir melden uns in den nächsten Tagen persönlich bei Ihnen');
    clock.set('2026-11-23T09:00:00Z');
    await finish(w48.deliveryId!, 'sent');

    clock.set(W49_MONDAY);
    const w49 = await record(p, '2026-W49');
    const again = (await getDelivery(ctx.database.db, w49.deliveryId!))!.text;
    expect(again).toContain('Es liegt eine positive Rückmeldung vor.');
    expect(again).not.toContain('in den nächsten Tagen');
    clock.set('2026-11-30T09:00:00Z');
    await finish(w49.deliveryId!, 'sent');

    // A second acceptance during W49: announced, with the first counted alongside.
    await request(search, new Date('2026-12-01T10:00:00Z'));
    await ctx.database.db.update(therapeutAnfragePatient).set({ status: 'angenommen' }).where(eq(therapeutAnfragePatient.platzsucheId, search));
    await ctx.database.db.execute(sql`update matching_service.therapeutenanfrage set antwort_datum = '2026-12-02T10:00:00Z' where antwort_datum is null`);
    clock.set('2026-12-07T08:00:05Z');
    const w50 = await record(p, '2026-W50');
    const news = (await getDelivery(ctx.database.db, w50.deliveryId!))!.text;
    expect(news).toContain('Es gibt 2 positive Rückmeldungen, eine davon neu seit unserer letzten Nachricht. Wir melden uns in den nächsten Tagen persönlich bei Ihnen');
  });
});

describe('"since the last update" when the email went out later than it was written', () => {
  it('a request and an answer that came after the email was recorded but before it went out are counted the week after', async () => {
    const p = await patient('a@example.org', [new Date(Date.parse(W48_MONDAY) - 3 * DAY)]);
    const w48 = await record(p, '2026-W48'); // written Monday 09:00 (the email role is down until Wednesday)
    const search = await searchOf(p);
    await request(search, new Date('2026-11-23T12:00:00Z')); // Monday noon: not in the W48 email
    await ctx.database.db
      .update(therapeutAnfragePatient)
      .set({ status: 'abgelehnt' })
      .where(eq(therapeutAnfragePatient.platzsucheId, search));
    await ctx.database.db.execute(sql`update matching_service.therapeutenanfrage set antwort_datum = '2026-11-24T12:00:00Z'`);
    clock.set('2026-11-25T10:00:00Z'); // Wednesday: it goes out
    await finish(w48.deliveryId!, 'sent');
    expect(await lastSent(p)).toEqual(new Date('2026-11-25T10:00:00Z'));
    const w48text = (await getDelivery(ctx.database.db, w48.deliveryId!))!.text;
    expect(w48text).toContain('Seit Beginn Ihrer Platzsuche haben wir 1 Anfrage an eine Praxis gesendet.');
    expect(w48text).toContain('Antworten haben wir bisher noch keine erhalten.');

    clock.set(W49_MONDAY);
    const w49 = await record(p, '2026-W49');
    const text = (await getDelivery(ctx.database.db, w49.deliveryId!))!.text;
    expect(text).toContain('Seit unserer letzten Nachricht haben wir 1 neue Anfrage an eine Praxis gesendet.');
    expect(text).toContain('Insgesamt haben wir bisher 2 Anfragen an Praxen gesendet.');
    expect(text).toContain('Seit unserer letzten Nachricht haben wir die ersten 2 Antworten erhalten.');
  });
});

describe('patients without a plausible email address', () => {
  it('are counted as "no valid email address" and never selected; the per-patient job skips them too', async () => {
    const good = await patient('erika@example.org');
    const padded = await patient('  padded@example.org ');
    const invalid = await patient('kein-gueltiger-eintrag');
    await patient(null);
    await patient('   ');
    const dry = await runWeeklyFanout(ctx, { isoWeek: '2026-W48', dryRun: true });
    expect(dry).toMatchObject({ candidates: 5, eligible: 2, skippedNoEmail: 2, skippedInvalidEmail: 1, skippedAlreadySent: 0, skippedOptedOut: 0 });
    const { start } = isoWeekRange('2026-W48', 'Europe/Berlin');
    expect(await eligiblePatientIds(ctx.database.db, { isoWeek: '2026-W48', weekStart: start }, 0, 100)).toEqual([good, padded]);
    expect(await record(invalid, '2026-W48')).toEqual({ outcome: 'skipped', reason: 'invalid_email' });
    const r = await record(padded, '2026-W48');
    expect((await getDelivery(ctx.database.db, r.deliveryId!))!.toAddress).toBe('padded@example.org');
    expect(await ctx.database.db.select({ id: deliveries.id }).from(deliveries)).toHaveLength(1);
  });

  it('PostgreSQL selects exactly the addresses isPlausibleEmail accepts', async () => {
    const emails = [
      'a@b.de', 'Erika.Muster@Example.ORG', "o'neil@example.org", 'a+tag@example.org', 'a_b-c@sub.example.co.uk', ' tab@example.org\t', 'jörg@müller.de',
      'max@example.xn--p1ai', 'a@b..de', 'nbsp\u00a0inside@example.org',
      'kein-gueltiger-eintrag', 'a@b', 'a@b.', '@b.de', 'a@.de', 'a@', 'a b@c.de', 'a@b@c.de', '<a@b.de>', 'Erika <a@b.de>', 'a@b.de\u0001', 'a\tb@c.de', 'a@b.de\u007f',
    ];
    const ids = new Map<number, string>();
    for (const e of emails) ids.set(await patient(e), e);
    const { start } = isoWeekRange('2026-W48', 'Europe/Berlin');
    const selected = await eligiblePatientIds(ctx.database.db, { isoWeek: '2026-W48', weekStart: start }, 0, 1000);
    const expected = [...ids].filter(([, e]) => isPlausibleEmail(e)).map(([id]) => id);
    expect(selected).toEqual(expected);
    expect(expected).toHaveLength(10);
  });
});

describe('a fan-out page', () => {
  it('walks the patients in id order and stops at the page size, not reading the rest of the id range', async () => {
    // Enough patients for the planner to weigh the plans; before, the plausibility pattern's
    // guessed selectivity (0.5 %) made it hash and sort every patient after the page's start.
    await ctx.database.db.execute(sql`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status)
      select 'Frau', 'weiblich', 'Erika', 'P' || g, 'p' || g || '@example.org', 'PG' || g, 'auf_der_Suche' from generate_series(1, 40000) g`);
    await ctx.database.db.execute(sql`insert into matching_service.platzsuche (patient_id, status) select id, 'aktiv' from patient_service.patienten`);
    await ctx.database.db.execute(sql`analyze patient_service.patienten, matching_service.platzsuche, fleet.deliveries`);
    const [first] = await ctx.database.db.execute<{ id: number }>(sql`select min(id)::int as id from patient_service.patienten`);
    const w = { isoWeek: '2026-W48', weekStart: isoWeekRange('2026-W48', 'Europe/Berlin').start };
    for (const after of [first!.id - 1, first!.id + 20000]) {
      const rows = await ctx.database.db.execute<{ 'QUERY PLAN': unknown }>(sql`explain (format json) ${eligiblePatientIdsQuery(w, after, 1000)}`);
      const plan = JSON.stringify(rows[0]!['QUERY PLAN']);
      expect(plan).toContain('patienten_pkey');
      expect(plan).not.toContain('"Sort"');
      expect(plan).not.toContain('Hash');
    }
  });
});
