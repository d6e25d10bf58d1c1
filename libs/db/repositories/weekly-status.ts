import { and, eq, inArray, sql } from 'drizzle-orm';
import { appendEvent } from '../../events/index.js';
import { isPlausibleEmail, PLAUSIBLE_EMAIL_SOURCE, TRIMMED_CHARS, trimEmail } from '../../weekly/email-address.js';
import { InvalidIsoWeekError, isoWeekOf, isoWeekRange, parseIsoWeek } from '../../weekly/iso-week.js';
import type { Db, DbOrTx } from '../client.js';
import { deliveries, type DeliveryStatus } from '../schema/fleet.js';
import { patienten } from '../schema/platform.js';
import { recordAudit } from './audit.js';
import { queueDelivery, type NewDelivery } from './deliveries.js';
import { WEEKLY_DELIVERY_KIND } from './deliveries-sent.js';

export { WEEKLY_DELIVERY_KIND };

/**
 * Reads and writes of the weekly patient status emails. The matching tables are only read.
 *
 * Who gets an email for an ISO week: status `auf_der_Suche`, at least one `aktiv`
 * platzsuche, a plausible email address (isPlausibleEmail), no opt-out, and nothing for that
 * week yet: no delivery under the week's key `weekly.<patientId>.<isoWeek>` (whatever its
 * status) and no email sent since the week's start (weekly_update_last_sent, which moves when
 * an email goes out, see applySentEffects). The key is checked again under the row lock per job.
 */
export function weeklyIdempotencyKey(patientId: number, isoWeek: string): string {
  return `weekly.${patientId}.${isoWeek}`;
}

const WEEKLY_KEY = /^weekly\.([1-9][0-9]*)\.(\d{4}-W\d{2})$/;

/** The patient and ISO week a weekly delivery key names; null for any other key (or no such week). */
export function parseWeeklyIdempotencyKey(key: string): { patientId: number; isoWeek: string } | null {
  const m = WEEKLY_KEY.exec(key);
  if (!m) return null;
  try {
    parseIsoWeek(m[2]!);
  } catch (err) {
    if (err instanceof InvalidIsoWeekError) return null;
    throw err;
  }
  return { patientId: Number(m[1]), isoWeek: m[2]! };
}

export interface WeekWindow {
  isoWeek: string;
  /** Monday 00:00 local time of the week (in WEEKLY_TZ). */
  weekStart: Date;
}

const hasActiveSearch = sql`exists (select 1 from matching_service.platzsuche ps where ps.patient_id = p.id and ps.status = 'aktiv')`;
const trimmedEmail = sql`btrim(p.email, ${TRIMMED_CHARS}::text)`;
const hasEmail = sql`(p.email is not null and ${trimmedEmail} <> '')`;
/**
 * The same rule as isPlausibleEmail (the pattern reads the same in PostgreSQL); false for no
 * email. In coalesce, not as a bare `~`: PostgreSQL has no statistics for the pattern on
 * btrim(email) and guesses that 0.5 % of rows match, so for a fan-out page (limit 1000) it
 * expected to need the whole remaining id range and hashed, joined and sorted all of it
 * (75-145 ms a page at 100,000 patients, the fan-out 2.6x slower) instead of walking both
 * indexes in id order and stopping at the limit (1-2 ms). As an expression it is estimated as
 * an ordinary condition and the plan walks the indexes again.
 */
const validEmailSql = sql`coalesce(${trimmedEmail} ~ ${PLAUSIBLE_EMAIL_SOURCE}::text, false)`;
// The week's delivery key (unique, looked up by its index) says "recorded for this week",
// also while that email is still pending; weekly_update_last_sent only moves when an email
// goes out, so alone it would let a second fan-out select a patient whose email waits.
// A last_sent in this week that is the send time of last week's email (checked just before
// Monday 00:00, its answer just after) is last week's, not this week's.
const alreadySent = (w: WeekWindow) =>
  sql`((p.weekly_update_last_sent is not null and p.weekly_update_last_sent >= ${w.weekStart.toISOString()}::timestamptz
      and not exists (select 1 from fleet.deliveries d where d.idempotency_key = 'weekly.' || p.id || '.' || ${previousIsoWeek(w)}::text
        and d.status = 'sent' and d.sent_at = p.weekly_update_last_sent))
    or exists (select 1 from fleet.deliveries d where d.idempotency_key = 'weekly.' || p.id || '.' || ${w.isoWeek}::text))`;

/** The ISO week before `w` (its Sunday noon, in UTC, is in it in any zone). */
function previousIsoWeek(w: WeekWindow): string {
  return isoWeekOf(new Date(w.weekStart.getTime() - 12 * 3600_000), 'UTC');
}

export interface FanoutCounts {
  /** Searching patients with an active search. */
  candidates: number;
  eligible: number;
  skippedOptedOut: number;
  skippedNoEmail: number;
  /** An email address is stored but it is not a plausible one (e.g. `kein-gueltiger-eintrag`). */
  skippedInvalidEmail: number;
  /**
   * The total of `skippedAlreadyRecorded`, whatever became of this week's email (kept under its
   * old name for scripts that read it: it is not "sent", see the split).
   */
  skippedAlreadySent: number;
  /**
   * Skipped because this week's email is already recorded (the week's delivery key), by what
   * became of it: sent (or an email sent this week another way: weekly_update_last_sent), pending
   * (waiting or being sent), failed (for good; it waits in email-dlq), dropped (no longer wanted at
   * send time: opted out, stopped searching, address changed). None of them gets a second one.
   */
  skippedAlreadyRecorded: { sent: number; pending: number; failed: number; dropped: number };
}

/** How the searching patients split for a week (each counted once, in this order of reasons). */
export async function countWeeklyCandidates(db: DbOrTx, w: WeekWindow): Promise<FanoutCounts> {
  type Row = { candidates: number; opted_out: number; no_email: number; invalid_email: number; already: number; already_sent: number; already_pending: number; already_failed: number; already_dropped: number; eligible: number };
  // Each patient's facts are worked out once (a materialized CTE: the filters below would
  // otherwise repeat alreadySent's index lookups into deliveries once per count, ~13 a patient).
  // week_status: the status of this week's delivery; none (null) with a last_sent in the week is
  // an email sent another way.
  const rows = await db.execute<Row>(sql`
    with c as materialized (
      select p.weekly_update_opt_out as opted_out, ${hasEmail} as has_email, ${validEmailSql} as valid_email, ${alreadySent(w)} as already,
        (select d.status from fleet.deliveries d where d.idempotency_key = 'weekly.' || p.id || '.' || ${w.isoWeek}::text) as week_status
      from patient_service.patienten p
      where p.status = 'auf_der_Suche' and ${hasActiveSearch}
    )
    select count(*)::int as candidates,
      count(*) filter (where opted_out)::int as opted_out,
      count(*) filter (where not opted_out and not has_email)::int as no_email,
      count(*) filter (where not opted_out and has_email and not valid_email)::int as invalid_email,
      count(*) filter (where not opted_out and valid_email and already)::int as already,
      count(*) filter (where not opted_out and valid_email and already and coalesce(week_status, 'sent') = 'sent')::int as already_sent,
      count(*) filter (where not opted_out and valid_email and already and week_status in ('pending', 'sending'))::int as already_pending,
      count(*) filter (where not opted_out and valid_email and already and week_status = 'failed')::int as already_failed,
      count(*) filter (where not opted_out and valid_email and already and week_status = 'dropped')::int as already_dropped,
      count(*) filter (where not opted_out and valid_email and not already)::int as eligible
    from c`);
  const r = rows[0]!;
  return {
    candidates: r.candidates,
    eligible: r.eligible,
    skippedOptedOut: r.opted_out,
    skippedNoEmail: r.no_email,
    skippedInvalidEmail: r.invalid_email,
    skippedAlreadySent: r.already,
    skippedAlreadyRecorded: { sent: r.already_sent, pending: r.already_pending, failed: r.already_failed, dropped: r.already_dropped },
  };
}

/** Why a patient who would get the weekly email gets none: no email address, or one that is not plausible. */
export type WeeklyUnreachableWhy = 'no_email' | 'invalid_email';

/**
 * Patients who would get the weekly email (searching, an `aktiv` platzsuche, no opt-out) but
 * have no plausible email address: the fan-out skips them every week (its counts
 * skippedNoEmail/skippedInvalidEmail). Staff see how many on /daily and `fleet daily`.
 */
const unreachable = sql`p.status = 'auf_der_Suche' and not p.weekly_update_opt_out and ${hasActiveSearch} and not ${validEmailSql}`;

export async function weeklyUnreachableCounts(db: DbOrTx): Promise<{ noEmail: number; invalidEmail: number }> {
  const [r] = await db.execute<{ no_email: number; invalid_email: number }>(sql`
    select count(*) filter (where not ${hasEmail})::int as no_email, count(*) filter (where ${hasEmail})::int as invalid_email
    from patient_service.patienten p where ${unreachable}`);
  return { noEmail: r?.no_email ?? 0, invalidEmail: r?.invalid_email ?? 0 };
}

/** Their ids (and why), by id: ids only, no names or addresses. */
export async function weeklyUnreachablePatients(db: DbOrTx): Promise<Array<{ patientId: number; why: WeeklyUnreachableWhy }>> {
  const rows = await db.execute<{ id: number; why: WeeklyUnreachableWhy }>(sql`
    select p.id, case when ${hasEmail} then 'invalid_email' else 'no_email' end as why
    from patient_service.patienten p where ${unreachable} order by p.id`);
  return rows.map((r) => ({ patientId: Number(r.id), why: r.why }));
}

/** The query of eligiblePatientIds (its plan is tested: it must stop at the limit). */
export function eligiblePatientIdsQuery(w: WeekWindow, afterId: number, limit: number) {
  return sql`
    select p.id from patient_service.patienten p
    where p.id > ${afterId} and p.status = 'auf_der_Suche' and not p.weekly_update_opt_out
      and ${validEmailSql} and not ${alreadySent(w)}
      -- the bound repeated on the search side keeps each page's index range short
      and exists (select 1 from matching_service.platzsuche ps where ps.patient_id = p.id and ps.patient_id > ${afterId} and ps.status = 'aktiv')
    order by p.id
    limit ${limit}`;
}

/** One page of eligible patient ids after `afterId` (keyset pagination on the primary key). */
export async function eligiblePatientIds(db: DbOrTx, w: WeekWindow, afterId: number, limit: number): Promise<number[]> {
  const rows = await db.execute<{ id: number }>(eligiblePatientIdsQuery(w, afterId, limit));
  return rows.map((r) => Number(r.id));
}

export interface WeeklyFacts {
  patientId: number;
  vorname: string;
  nachname: string;
  email: string | null;
  status: string;
  optedOut: boolean;
  lastSent: Date | null;
  /**
   * The ISO week of the fleet's weekly email whose send time `lastSent` is; null when none is
   * (an email sent another way). Last week's email can be sent just after Monday 00:00.
   */
  lastSentWeek?: string | null;
  activeSearches: number;
  /** Requests sent to therapists (gesendet_datum set) for the active searches, in total and since the last update. */
  requestsTotal: number;
  requestsSince: number;
  /** Answers received (accepted or declined), in total and since the last update. */
  answersTotal: number;
  answersSince: number;
  /** Of the answers, how many offered a place, in total and since the last update. */
  acceptances: number;
  acceptancesSince: number;
}

/**
 * Where "since the last update" starts: what the last email that went out counted up to.
 * That email's facts are as of when it was written (its delivery's created_at, see
 * recordWeeklyDelivery), and it went out later (weekly_update_last_sent): a request or answer
 * in between (seconds in a big run, days while the email role is down) was in neither email
 * as new, so the next one counts from when the last one was written. A weekly email goes out
 * only within its own ISO week (unwantedWeeklyDeliveries), so its delivery is found by key: the
 * weeks of lastSent ± 1 day (UTC) include its week in any zone. Without one (an email sent
 * before the fleet), lastSent itself. An SQL expression, so the facts come in one statement.
 */
function sinceLastUpdate(patientId: number, lastSent: Date | null) {
  if (!lastSent) return sql`'epoch'::timestamptz`;
  return sql`least(${lastSent.toISOString()}::timestamptz, (select d.created_at from fleet.deliveries d
    where d.idempotency_key in ${keysAround(patientId, lastSent)} and d.status = 'sent'
    order by d.sent_at desc limit 1))`;
}

/** The keys of the weekly emails that can have gone out at `at`: the weeks of `at` ± 1 day (UTC), which include its week in any zone. */
function keysAround(patientId: number, at: Date) {
  const keys = [...new Set([-1, 0, 1].map((d) => weeklyIdempotencyKey(patientId, isoWeekOf(new Date(at.getTime() + d * 86_400_000), 'UTC'))))];
  return sql`(${sql.join(keys.map((k) => sql`${k}`), sql`, `)})`;
}

/** The key of the fleet's weekly email that went out at `lastSent` (an SQL expression; null when none did). */
function keyOfLastSent(patientId: number, lastSent: Date | null) {
  if (!lastSent) return sql`null::text`;
  return sql`(select d.idempotency_key from fleet.deliveries d
    where d.idempotency_key in ${keysAround(patientId, lastSent)} and d.status = 'sent' and d.sent_at = ${lastSent.toISOString()}::timestamptz limit 1)`;
}

/** What the email of one patient says, as of `now`. Null when the patient does not exist. */
export async function loadWeeklyFacts(db: DbOrTx, patientId: number, now: Date): Promise<WeeklyFacts | null> {
  const [p] = await db
    .select({
      id: patienten.id,
      vorname: patienten.vorname,
      nachname: patienten.nachname,
      email: patienten.email,
      status: patienten.status,
      optedOut: patienten.weeklyUpdateOptOut,
      lastSent: patienten.weeklyUpdateLastSent,
    })
    .from(patienten)
    .where(eq(patienten.id, patientId));
  if (!p) return null;
  const nowIso = now.toISOString();
  const rows = await db.execute<{
    searches: number;
    requests_total: number;
    requests_since: number;
    answers_total: number;
    answers_since: number;
    acceptances: number;
    acceptances_since: number;
    last_sent_key: string | null;
  }>(sql`
    with since as (
      select ${sinceLastUpdate(patientId, p.lastSent)} as t
    ), searches as (
      select id from matching_service.platzsuche where patient_id = ${patientId} and status = 'aktiv'
    ), requests as (
      select distinct on (ta.id) ta.id, ta.gesendet_datum, ta.antwort_datum, tap.status
      from matching_service.therapeut_anfrage_patient tap
      join matching_service.therapeutenanfrage ta on ta.id = tap.therapeutenanfrage_id
      where tap.platzsuche_id in (select id from searches)
        and ta.gesendet_datum is not null and ta.gesendet_datum <= ${nowIso}::timestamptz
      order by ta.id, (tap.status = 'angenommen') desc
    )
    select (select count(*) from searches)::int as searches, ${keyOfLastSent(patientId, p.lastSent)} as last_sent_key,
      count(r.id)::int as requests_total,
      count(r.id) filter (where r.gesendet_datum > (select t from since))::int as requests_since,
      count(r.id) filter (where r.status in ('angenommen', 'abgelehnt'))::int as answers_total,
      count(r.id) filter (where r.status in ('angenommen', 'abgelehnt')
        and coalesce(r.antwort_datum, r.gesendet_datum) > (select t from since))::int as answers_since,
      count(r.id) filter (where r.status = 'angenommen')::int as acceptances,
      count(r.id) filter (where r.status = 'angenommen'
        and coalesce(r.antwort_datum, r.gesendet_datum) > (select t from since))::int as acceptances_since
    from requests r`);
  const f = rows[0]!;
  return {
    patientId: p.id,
    vorname: p.vorname,
    nachname: p.nachname,
    email: p.email,
    status: p.status,
    optedOut: p.optedOut,
    lastSent: p.lastSent,
    lastSentWeek: f.last_sent_key === null ? null : (parseWeeklyIdempotencyKey(f.last_sent_key)?.isoWeek ?? null),
    activeSearches: f.searches,
    requestsTotal: f.requests_total,
    requestsSince: f.requests_since,
    answersTotal: f.answers_total,
    answersSince: f.answers_since,
    acceptances: f.acceptances,
    acceptancesSince: f.acceptances_since,
  };
}

export type WeeklyIneligibleReason = 'not_found' | 'not_searching' | 'no_active_search' | 'no_email' | 'invalid_email' | 'opted_out' | 'already_sent';

/**
 * Why a patient gets no email this week, from the facts (the same rules as the fan-out's
 * selection). The week's delivery key is checked by recordWeeklyDelivery before this.
 */
export function ineligibleReason(f: WeeklyFacts | null, w: WeekWindow): WeeklyIneligibleReason | null {
  if (!f) return 'not_found';
  if (f.status !== 'auf_der_Suche') return 'not_searching';
  if (f.activeSearches === 0) return 'no_active_search';
  if (f.optedOut) return 'opted_out';
  if (!f.email || trimEmail(f.email) === '') return 'no_email';
  if (!isPlausibleEmail(f.email)) return 'invalid_email';
  if (f.lastSent && f.lastSent >= w.weekStart && !(f.lastSentWeek && f.lastSentWeek < w.isoWeek)) return 'already_sent';
  return null;
}

export type RecordOutcome =
  | { outcome: 'recorded'; deliveryId: string }
  | { outcome: 'exists'; deliveryId: string }
  | { outcome: 'skipped'; reason: WeeklyIneligibleReason };

/**
 * Records the week's email of one patient, once. In one transaction that holds the
 * patient's row lock: the week's delivery (unique idempotency key) is looked up, the
 * eligibility checked again, the email composed from the facts and the delivery recorded.
 * Running it twice, or concurrently, records one delivery. weekly_update_last_sent is not
 * touched here: it moves when the email is sent (applySentEffects).
 */
export async function recordWeeklyDelivery(
  db: Db,
  input: WeekWindow & { patientId: number; now: Date },
  compose: (facts: WeeklyFacts) => Omit<NewDelivery, 'idempotencyKey' | 'kind' | 'patientId' | 'toAddress' | 'createdAt'>,
): Promise<RecordOutcome> {
  const key = weeklyIdempotencyKey(input.patientId, input.isoWeek);
  return db.transaction(async (tx) => {
    await tx.execute(sql`select 1 from patient_service.patienten where id = ${input.patientId} for update`);
    // Looked up after the lock (a new statement, so it sees what a concurrent run committed).
    const [existing] = await tx.select({ id: deliveries.id }).from(deliveries).where(eq(deliveries.idempotencyKey, key));
    if (existing) return { outcome: 'exists', deliveryId: existing.id };
    const facts = await loadWeeklyFacts(tx, input.patientId, input.now);
    const reason = ineligibleReason(facts, input);
    if (reason) return { outcome: 'skipped', reason };
    const message = compose(facts!);
    const { id } = await queueDelivery(tx, {
      ...message,
      idempotencyKey: key,
      kind: WEEKLY_DELIVERY_KIND,
      patientId: input.patientId,
      toAddress: trimEmail(facts!.email!),
      // The facts are as of `now`: the next email counts "since the last update" from here (sinceLastUpdate).
      createdAt: input.now,
    });
    return { outcome: 'recorded', deliveryId: id };
  });
}

export type WeeklyUnwantedReason = 'week_over' | 'not_a_weekly_key' | 'no_patient' | 'not_found' | 'opted_out' | 'not_searching' | 'no_active_search' | 'address_changed';

/**
 * Checked right before sending (one query for a whole batch): why each weekly delivery is
 * no longer wanted. The week in its key has ended (`now` at or after the week's end, Monday
 * 00:00 in `timeZone`): one email per ISO week, so a late one is never sent, it would be a
 * second email in the week that follows. Or the patient opted out, stopped searching (status, or
 * no `aktiv` platzsuche any more: found a place, paused, cancelled; the email says the search
 * goes on) or is gone: the same rules as the selection (ineligibleReason).
 */
export async function unwantedWeeklyDeliveries(
  db: DbOrTx,
  refs: Array<{ id: string; idempotencyKey: string; patientId: number | null; toAddress: string }>,
  at: { now: Date; timeZone: string },
): Promise<Map<string, { reason: WeeklyUnwantedReason; detail?: string }>> {
  const unwanted = new Map<string, { reason: WeeklyUnwantedReason; detail?: string }>();
  const ends = new Map<string, Date>();
  const toCheck: Array<{ id: string; patientId: number; toAddress: string }> = [];
  for (const r of refs) {
    const key = parseWeeklyIdempotencyKey(r.idempotencyKey);
    if (!key) {
      unwanted.set(r.id, { reason: 'not_a_weekly_key' });
      continue;
    }
    let end = ends.get(key.isoWeek);
    if (!end) ends.set(key.isoWeek, (end = isoWeekRange(key.isoWeek, at.timeZone).end));
    if (at.now >= end) unwanted.set(r.id, { reason: 'week_over', detail: `${key.isoWeek} ended ${end.toISOString()}` });
    else if (r.patientId === null) unwanted.set(r.id, { reason: 'no_patient' });
    else toCheck.push({ id: r.id, patientId: r.patientId, toAddress: r.toAddress });
  }
  if (toCheck.length === 0) return unwanted;
  const rows = await db
    .select({
      id: patienten.id,
      email: patienten.email,
      optedOut: patienten.weeklyUpdateOptOut,
      status: patienten.status,
      // (the table named in full: a bare column would be taken as the subquery's own ps.id)
      searching: sql<boolean>`exists (select 1 from matching_service.platzsuche ps where ps.patient_id = ${patienten}.id and ps.status = 'aktiv')`,
    })
    .from(patienten)
    .where(inArray(patienten.id, [...new Set(toCheck.map((c) => c.patientId))]));
  const byId = new Map(rows.map((r) => [r.id, r]));
  // Staff may have corrected the patient's address since the email was recorded (a typo that
  // reached a stranger): it must not go to the old one.
  const sameAddress = (a: string | null | undefined, b: string | null | undefined) => Boolean(a && b) && trimEmail(a!).toLowerCase() === trimEmail(b!).toLowerCase();
  for (const c of toCheck) {
    const p = byId.get(c.patientId);
    if (!p) unwanted.set(c.id, { reason: 'not_found' });
    else if (p.optedOut) unwanted.set(c.id, { reason: 'opted_out' });
    else if (p.status !== 'auf_der_Suche') unwanted.set(c.id, { reason: 'not_searching' });
    else if (!p.searching) unwanted.set(c.id, { reason: 'no_active_search' });
    else if (!sameAddress(c.toAddress, p.email)) unwanted.set(c.id, { reason: 'address_changed' });
  }
  return unwanted;
}

/**
 * Opts a patient out of the weekly emails. When that changes the patient (opt-out false ->
 * true), the same transaction writes the audit row and a `patient.updated` event (key =
 * patient id, payload `{patientId, changedFields: ['weekly_update_opt_out'], source}`: source
 * `unsubscribe` when the patient used the link, `staff` when staff did it for them with
 * `fleet weekly opt-out`), so the platform learns of it. Idempotent: a second call, also a
 * concurrent one (it waits for the row lock and then matches nothing), changes and writes
 * nothing and reports `changed: false`.
 */
export function optOutOfWeeklyUpdates(db: Db, patientId: number, by: OptOutChange): Promise<{ found: boolean; changed: boolean }> {
  return setWeeklyOptOut(db, patientId, true, by);
}

/**
 * Undoes an opt-out (a patient who clicked by mistake, on the unsubscribe page): the same
 * as `optOutOfWeeklyUpdates` the other way round, audited as `weekly.opt-in`. The emails
 * resume with the next week not yet sent (one per patient per week still holds).
 */
export function optBackInToWeeklyUpdates(db: Db, patientId: number, by: OptOutChange): Promise<{ found: boolean; changed: boolean }> {
  return setWeeklyOptOut(db, patientId, false, by);
}

/**
 * Who changed a patient's opt-out and how: the patient on the unsubscribe page (`via`
 * `one-click` or `unsubscribe-page`, source `unsubscribe`), or staff with the CLI (`via` `cli`,
 * source `staff`, with the reason they gave, e.g. a patient's request on the phone).
 */
export type OptOutChange = { actor: string; via: string; source: 'unsubscribe' | 'staff'; reason?: string };

async function setWeeklyOptOut(db: Db, patientId: number, optOut: boolean, by: OptOutChange): Promise<{ found: boolean; changed: boolean }> {
  return db.transaction(async (tx) => {
    const at = new Date();
    const updated = await tx
      .update(patienten)
      .set({ weeklyUpdateOptOut: optOut, updatedAt: at })
      .where(and(eq(patienten.id, patientId), eq(patienten.weeklyUpdateOptOut, !optOut)))
      .returning({ id: patienten.id });
    if (updated.length === 0) {
      const [exists] = await tx.select({ id: patienten.id }).from(patienten).where(eq(patienten.id, patientId));
      return { found: Boolean(exists), changed: false };
    }
    await recordAudit(tx, {
      actor: by.actor,
      action: optOut ? 'weekly.opt-out' : 'weekly.opt-in',
      target: `patient/${patientId}`,
      reason: by.reason,
      details: { via: by.via },
    });
    await appendEvent(tx, {
      eventType: 'patient.updated',
      key: patientId,
      payload: { patientId, changedFields: ['weekly_update_opt_out'], source: by.source },
      occurredAt: at,
    });
    return { found: true, changed: true };
  });
}

/**
 * What became of a patient's weekly email of one ISO week (its delivery under the week's key),
 * null when none was queued: staff who opt a patient out on the phone can tell them whether
 * this week's email went out already.
 */
export async function weeklyDeliveryOfWeek(
  db: DbOrTx,
  patientId: number,
  isoWeek: string,
): Promise<{ status: DeliveryStatus; sentAt: Date | null; updatedAt: Date; dropReason: string | null; outcomeUnknown: boolean } | null> {
  const [row] = await db
    .select({ status: deliveries.status, sentAt: deliveries.sentAt, updatedAt: deliveries.updatedAt, dropReason: deliveries.dropReason, outcomeUnknown: deliveries.outcomeUnknown })
    .from(deliveries)
    .where(eq(deliveries.idempotencyKey, weeklyIdempotencyKey(patientId, isoWeek)));
  return row ?? null;
}

/** Whether a patient exists and has opted out (unsubscribe page). */
export async function weeklyOptOutState(db: DbOrTx, patientId: number): Promise<{ optedOut: boolean } | null> {
  const [row] = await db.select({ optedOut: patienten.weeklyUpdateOptOut }).from(patienten).where(eq(patienten.id, patientId));
  return row ?? null;
}

/**
 * The weekly emails of one ISO week by what became of them (daily health view): sent, skipped
 * (dropped at send time: opted out, stopped searching, week over), pending (waiting or being
 * sent) and failed. Patients the fan-out did not select are not recorded, so not counted.
 */
export async function weeklyDeliveryCounts(db: DbOrTx, w: WeekWindow): Promise<{ sent: number; skipped: number; pending: number; failed: number }> {
  const d = deliveries;
  const [row] = await db
    .select({
      sent: sql<number>`count(*) filter (where ${d.status} = 'sent')::int`,
      skipped: sql<number>`count(*) filter (where ${d.status} = 'dropped')::int`,
      pending: sql<number>`count(*) filter (where ${d.status} in ('pending', 'sending'))::int`,
      failed: sql<number>`count(*) filter (where ${d.status} = 'failed')::int`,
    })
    .from(d)
    .where(and(eq(d.kind, WEEKLY_DELIVERY_KIND), sql`${d.idempotencyKey} like ${`weekly.%.${w.isoWeek}`}`));
  return { sent: row?.sent ?? 0, skipped: row?.skipped ?? 0, pending: row?.pending ?? 0, failed: row?.failed ?? 0 };
}
