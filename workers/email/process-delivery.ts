import { PermanentError } from '../../libs/errors/index.js';
import type { Logger } from '../../libs/log/index.js';
import type { DeliveryRef, DropDecision, MailDriver, OutgoingMail, SendResult, StillWantedChecks } from '../../libs/mail/index.js';
import type { Clock } from '../../libs/runtime/clock.js';
import type { BatchOutcome } from '../../libs/db/repositories/deliveries.js';

/** The fields of a delivery row the sender needs. */
export interface ClaimedDelivery extends DeliveryRef {
  toAddress: string;
  fromAddress: string;
  /** Null or absent: no Reply-To. */
  replyToAddress?: string | null;
  subject: string;
  html: string;
  text: string;
  headers: Record<string, string>;
}

export type Claim =
  | { kind: 'claimed'; batchId: string; rows: ClaimedDelivery[] }
  /** `requestRows`: rows of the batch's earlier requests (their form), when more than `rows` (see ClaimOutcome). */
  | { kind: 'resume'; batchId: string; rows: ClaimedDelivery[]; claimedAt: Date; requestRows?: number }
  | { kind: 'noop'; reason: string };

export type { BatchOutcome };

/** Delivery persistence (libs/db in production, an in-memory fake in unit tests). */
export interface DeliveryStore {
  claim(deliveryId: string, now: Date): Promise<Claim>;
  finish(batchId: string, outcome: BatchOutcome, now: Date): Promise<void>;
  /** Takes the batch's attempt lease (no other request for it in flight, or that one started before `expiredBefore`). */
  beginAttempt(batchId: string, now: Date, expiredBefore: Date): Promise<boolean>;
  /**
   * Counts a failed request and frees the lease. `outcomeUnknown`: the request got no answer
   * that says it was not accepted (a timeout, a 5xx, a dropped connection).
   */
  recordAttempt(batchId: string, reason: string, now: Date, outcomeUnknown?: boolean): Promise<void>;
  release(batchId: string, now: Date): Promise<void>;
}

export interface SendLimiter {
  reserve(): Promise<number>;
  pause(ms: number): Promise<void>;
  /**
   * How long a pause (a 429's retry-after, from any worker) still holds; a slot waited for is
   * not used while one does, and is reserved again. Absent: no such check (tests).
   */
  pausedFor?(): Promise<number>;
}

export interface EmailMetrics {
  /** `refused`: the provider refused the fleet's account (API key, sending domain), see SendResult. */
  requests(outcome: 'ok' | 'rate_limited' | 'transient' | 'refused' | 'rejected'): void;
  deliveries(status: 'sent' | 'failed' | 'dropped', n: number): void;
}

export interface ProcessDeliveryDeps {
  store: DeliveryStore;
  mail: MailDriver;
  /** Provider request rate across every worker. */
  limiter: SendLimiter;
  stillWanted: StillWantedChecks;
  /** Dead-letters a delivery that failed for good and is not this job's own (it rode in its batch). */
  deadLetter(deliveryId: string, reason: string, code: string): Promise<void>;
  metrics?: EmailMetrics;
  clock: Clock;
  log: Logger;
  sleep(ms: number): Promise<void>;
  /** This run is the job's last: a transient failure now fails the deliveries for good. */
  isFinalAttempt: boolean;
  /** A claim older than this is not sent again (the provider's 24 h idempotency window, minus a margin). */
  idempotencyWindowMs?: number;
  /** 429 answers waited out within one run before the job retries with backoff. */
  maxRateLimitWaits?: number;
  /** How long an attempt lease holds (the request time limit plus a margin). */
  attemptLeaseMs?: number;
  /**
   * Optional: takes the still-waiting jobs of deliveries that a fresh batch now carries off
   * the queue, so they need not run only to find nothing to do (at 200 emails/s that is
   * most of the queue's work). Best effort: a job that already runs is a cheap no-op.
   */
  discardCarriedJobs?(deliveryIds: string[]): Promise<void>;
  /** Makes sure a job runs again for deliveries given back to `pending` (not this job's own). */
  requeue?(deliveryIds: string[]): Promise<void>;
}

export type ProcessDeliveryResult =
  | { outcome: 'noop'; reason: string }
  | { outcome: 'done'; batchId: string; requestSize: number; sent: number; failed: number; dropped: number; rateLimitWaits: number };

/** A provider request failed in a way worth retrying (the job's retry policy applies). */
export class TransientSendError extends Error {
  override name = 'TransientSendError';
  constructor(message: string, readonly status?: number) {
    super(message);
  }
}

/**
 * How long after its claim a batch is sent again under its key: the provider keeps an
 * idempotency key 24 h, minus a margin. Also bounds an operator's requeue of a batch whose last
 * request got no answer (see requeueFailedDelivery).
 */
export const IDEMPOTENCY_WINDOW_MS = 23 * 3600_000;

/** The provider idempotency key of a request: the delivery's own key alone, the batch id for a batch (`requestRows`: how many rows the batch's earlier requests carried). */
export function requestKeyFor(batchId: string, rows: ClaimedDelivery[], requestRows = rows.length): string {
  return requestRows === 1 ? rows[0]!.idempotencyKey : `fleet-batch/${batchId}`;
}

function toMail(row: ClaimedDelivery): OutgoingMail {
  return {
    idempotencyKey: row.idempotencyKey,
    from: row.fromAddress,
    to: row.toAddress,
    ...(row.replyToAddress ? { replyTo: row.replyToAddress } : {}),
    subject: row.subject,
    html: row.html,
    text: row.text,
    headers: row.headers,
  };
}

async function askStillWanted(rows: ClaimedDelivery[], checks: StillWantedChecks): Promise<DropDecision[]> {
  const byKind = new Map<string, ClaimedDelivery[]>();
  for (const r of rows) byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r]);
  const drops: DropDecision[] = [];
  for (const [kind, group] of byKind) {
    const check = checks[kind];
    if (!check) continue;
    const ids = new Set(group.map((g) => g.id));
    const refs = group.map(({ id, kind: k, idempotencyKey, patientId, toAddress }) => ({ id, kind: k, idempotencyKey, patientId, toAddress }));
    for (const d of await check(refs)) if (ids.has(d.id)) drops.push(d);
  }
  return drops;
}

/**
 * The form and provider idempotency key of a request carrying `rows` (see requestKeyFor), or of
 * the earlier requests of a batch that carried `requestRows` rows.
 */
function requestFor(batchId: string, rows: ClaimedDelivery[], requestRows = rows.length): { single: boolean; key: string } {
  return { single: requestRows === 1, key: requestKeyFor(batchId, rows, requestRows) };
}

/** Drops of a resumed batch that no answer settled: an earlier request may have carried them. */
function unconfirmed(drops: DropDecision[]): DropDecision[] {
  return drops.map((d) => ({ ...d, reason: `${d.reason}; not re-sent (an earlier request for it got no answer, it may have gone out then)` }));
}

/**
 * The provider refused the request because its key already carries another payload (Resend:
 * `409 invalid_idempotent_request`, a permanent answer; the driver maps the concurrent-request
 * 409 to a transient one): an earlier request under this key was accepted.
 */
function refusedAsChangedPayload(results: SendResult[]): boolean {
  return results.length > 0 && results.every((r) => !r.ok && !r.transient && r.status === 409);
}

/**
 * Sends the delivery of one `email-send` job, at most once.
 *
 * 1. Claim: the delivery (if still pending) leads a batch of up to 100 pending deliveries,
 *    or, if it leads a batch still `sending`, that batch resumes; otherwise the job is a
 *    no-op (already sent, or carried by another job's batch) and costs no rate slot.
 * 2. Still wanted? Asked before every provider request (fresh batch, resumed batch, after a
 *    429 wait): before taking a rate slot and again after waiting for it.
 *    - A fresh batch has not reached the provider: unwanted rows are `dropped` at once.
 *    - A resumed batch (a retry, a 429 run given up, a stuck batch the sweep hands over) may
 *      have been accepted by an earlier request whose answer was lost. Unwanted rows are left
 *      out of the request, which keeps the batch's form and idempotency key, and are dropped
 *      together with its answer (a success proves the earlier request was not accepted). If
 *      the provider did accept it, it refuses the changed payload under the same key (409):
 *      the unchanged rows are sent again, the provider replays its first answer and nothing
 *      goes out twice (those rows had left before the check could stop them, they end `sent`).
 * 3. One provider request per batch, after a slot of the shared rate limiter; 429 waits for
 *    retry-after (every worker pauses) and tries again; other transient failures throw so
 *    the job retries with backoff, keeping the same rows and idempotency key. So does a
 *    refusal of the fleet's account (a revoked API key): fixed within the job's retries, the
 *    batch goes out then.
 * 4. Sent rows get the provider id; rejected rows end `failed` with the reason and a
 *    dead letter. On the last attempt a transient failure fails the whole batch the same way.
 */
export async function processDelivery(input: { deliveryId: string }, deps: ProcessDeliveryDeps): Promise<ProcessDeliveryResult> {
  const { store, clock, log } = deps;
  const started = Date.now();
  const claim = await store.claim(input.deliveryId, clock.now());
  const claimMs = Date.now() - started;
  if (claim.kind === 'noop') {
    log.debug({ deliveryId: input.deliveryId, reason: claim.reason }, 'email-send: nothing to send');
    return { outcome: 'noop', reason: claim.reason };
  }
  const batchId = claim.batchId;
  const resumed = claim.kind === 'resume';
  // The batch's rows still `sending`: for a resumed batch, exactly those of its earlier requests.
  let rows = claim.rows;
  const outcome: BatchOutcome = { sent: [], failed: [], dropped: [] };

  if (resumed) {
    const age = clock.now().getTime() - claim.claimedAt.getTime();
    if (age > (deps.idempotencyWindowMs ?? IDEMPOTENCY_WINDOW_MS)) {
      const reason = `claimed ${Math.round(age / 3600_000)} h ago and never confirmed: not re-sent, the provider's idempotency window is over (it may have been sent)`;
      return failForGood(input.deliveryId, batchId, rows, reason, 'claim_expired', deps, { outcomeUnknown: true });
    }
    log.info({ deliveryId: input.deliveryId, batchId, rows: rows.length }, 'email-send: resuming a claimed batch');
  } else {
    const carried = rows.filter((r) => r.id !== input.deliveryId).map((r) => r.id);
    if (carried.length && deps.discardCarriedJobs) {
      await deps.discardCarriedJobs(carried).catch((err: unknown) => log.warn({ err, batchId }, 'email-send: could not discard carried jobs'));
    }
  }

  // A resumed batch keeps the form and key of its earlier requests, whatever rows it leaves out.
  const resumedRequest = resumed ? requestFor(batchId, rows, Math.max(rows.length, claim.requestRows ?? 0)) : null;
  /** Unwanted rows of a resumed batch: left out of the request, dropped with its answer. */
  let deferred: DropDecision[] = [];
  /** The provider holds an earlier request of the batch: its unchanged rows are sent again. */
  let replay = false;

  /** Counts, logs and reports drops the store has recorded. */
  const noteDropped = (drops: DropDecision[]) => {
    if (!drops.length) return;
    deps.metrics?.deliveries('dropped', drops.length);
    log.info({ batchId, dropped: drops.map((d) => d.id) }, 'email-send: deliveries no longer wanted, dropped');
    outcome.dropped.push(...drops);
  };
  const dropNow = async (drops: DropDecision[]) => {
    await store.finish(batchId, { sent: [], failed: [], dropped: drops }, clock.now());
    noteDropped(drops);
  };
  const askBeforeSending = async () => {
    if (replay) return;
    let drops: DropDecision[];
    try {
      drops = await askStillWanted(rows, deps.stillWanted);
    } catch (err) {
      // Nothing of a fresh batch has reached the provider (a 429 accepts nothing): give it back.
      if (!resumed) await store.release(batchId, clock.now());
      throw err;
    }
    if (resumed) {
      deferred = drops;
      return;
    }
    if (drops.length) {
      await dropNow(drops);
      const gone = new Set(drops.map((d) => d.id));
      rows = rows.filter((r) => !gone.has(r.id));
    }
  };
  const payload = () => {
    if (!deferred.length) return rows;
    const left = new Set(deferred.map((d) => d.id));
    return rows.filter((r) => !left.has(r.id));
  };

  let rateLimitWaits = 0;
  let results: SendResult[] | undefined;
  let sending: ClaimedDelivery[] = [];
  for (;;) {
    results = undefined;
    await askBeforeSending();
    if (payload().length === 0) break;
    const wait = await deps.limiter.reserve();
    log.debug({ batchId, waitMs: wait }, 'email-send: rate slot reserved');
    if (wait > 0) {
      await deps.sleep(wait);
      // A 429 answered to another worker while this one waited: its slot was handed out before
      // the pause and falls inside it. Not used: a new slot, after the pause.
      const held = (await deps.limiter.pausedFor?.()) ?? 0;
      if (held > 0) {
        log.debug({ batchId, pausedForMs: held }, 'email-send: the provider asked to wait (429) meanwhile: reserving a new rate slot');
        continue;
      }
      await askBeforeSending(); // right before the request, not only before the wait
      if (payload().length === 0) break;
    }
    sending = payload();
    const request = resumedRequest ?? requestFor(batchId, sending);
    const now = clock.now();
    if (!(await store.beginAttempt(batchId, now, new Date(now.getTime() - (deps.attemptLeaseMs ?? 40_000))))) {
      // Another job is sending this very batch right now (a duplicate job, or a worker that
      // stalled): do not send alongside it; come back later and find it finished.
      throw new TransientSendError(`batch ${batchId} has a provider request in flight; retrying later`);
    }
    const mails = sending.map(toMail);
    results = request.single ? [await deps.mail.send(mails[0]!)] : await deps.mail.sendBatch(mails, { idempotencyKey: request.key });
    if (!replay && deferred.length && refusedAsChangedPayload(results)) {
      log.warn(
        { batchId, unwanted: deferred.map((d) => d.id) },
        'email-send: an earlier request of this batch was accepted before the still-wanted check; sending it unchanged so the provider replays its answer',
      );
      replay = true;
      deferred = [];
      await store.recordAttempt(batchId, (results[0] as { message: string }).message, clock.now());
      continue;
    }
    const first = results[0];
    const rateLimited = first && !first.ok && first.status === 429 && results.every((r) => !r.ok && r.status === 429);
    if (!rateLimited || rateLimitWaits >= (deps.maxRateLimitWaits ?? 5)) break;
    const retryAfter = (first as { retryAfterMs?: number }).retryAfterMs ?? 1000;
    deps.metrics?.requests('rate_limited');
    log.warn({ batchId, retryAfterMs: retryAfter }, 'email-send: provider rate limit (429), waiting for retry-after');
    rateLimitWaits++;
    await store.recordAttempt(batchId, (first as { message: string }).message, clock.now());
    await deps.limiter.pause(retryAfter);
  }

  if (!results) {
    // Every row left was unwanted: no request in this run.
    if (deferred.length) {
      await dropNow(unconfirmed(deferred));
    }
    return { outcome: 'done', batchId, requestSize: 0, sent: 0, failed: 0, dropped: outcome.dropped.length, rateLimitWaits };
  }

  const whole = results.every((r) => !r.ok && r.transient);
  if (whole) {
    const first = results[0] as SendResult & { ok: false };
    const reason = batchReason(results as Array<SendResult & { ok: false }>);
    // No answer says this request was not accepted (a timeout, a 5xx, a dropped connection):
    // recorded, so that an operator's requeue of the failed rows resends them under this key.
    // A refusal of the account or a 429 accepts nothing.
    const unknown = !first.refused && first.status !== 429;
    // On the last attempt `failForGood` records this request with the failure (once).
    if (!deps.isFinalAttempt) await store.recordAttempt(batchId, reason, clock.now(), unknown);
    if (first.refused) {
      // Not this batch's fault: every request fails alike until an operator fixes the setting.
      deps.metrics?.requests('refused');
      log.error(
        { batchId, rows: sending.length, status: first.status, reason: first.message, finalAttempt: deps.isFinalAttempt },
        deps.isFinalAttempt ? 'email-send: the provider refused the API key or sending domain on the last attempt' : 'email-send: the provider refused the API key or sending domain; the deliveries wait and are retried',
      );
      if (deps.isFinalAttempt) return failForGood(input.deliveryId, batchId, sending, first.message, 'refused', deps, { dropped: unconfirmed(deferred) });
      throw new TransientSendError(`provider request for batch ${batchId} refused: ${first.message}`, first.status);
    }
    deps.metrics?.requests('transient');
    if (deps.isFinalAttempt) {
      return failForGood(input.deliveryId, batchId, sending, reason, 'send_failed', deps, { dropped: unconfirmed(deferred), ...(unknown ? { outcomeUnknown: true } : {}) });
    }
    // The cause, not only a status (the outbox folder has none: it read 'status network' for a
    // folder it may not write). Drivers' reasons carry no addresses or names (see SendResult).
    throw new TransientSendError(`provider request for batch ${batchId} failed: ${reason}`, first.status);
  }
  deps.metrics?.requests(results.some((r) => r.ok) ? 'ok' : 'rejected');
  // A resumed batch refused as a changed payload with no unwanted rows to put back: the provider
  // holds an earlier request of it with rows since left out (an operator's requeue without a row
  // whose dead letter was discarded). That request was accepted, so these rows may have gone out
  // then: not re-sent, and still unknown (a requeue tries the same key again).
  const heldElsewhere = resumed && !replay && refusedAsChangedPayload(results);
  const retry: Array<{ id: string; reason: string }> = [];
  results.forEach((r, i) => {
    const row = sending[i]!;
    if (heldElsewhere) {
      const reason = `${(r as { message: string }).message}; the provider holds an earlier request of batch ${batchId} with other rows: it may have gone out then, not re-sent`;
      outcome.failed.push({ id: row.id, reason, outcomeUnknown: true });
    } else if (r.ok) outcome.sent.push({ id: row.id, providerMessageId: r.providerMessageId });
    // A per-message transient answer inside a request that went through (the outbox folder:
    // one message hit a full disk) goes back to pending for a batch of its own: re-sending
    // this batch under its key would only replay the same answer. On the last attempt it fails.
    else if (r.transient && !deps.isFinalAttempt) retry.push({ id: row.id, reason: r.message });
    // Answered: the provider's answer would only be replayed under this key; a requeue makes a new batch.
    else outcome.failed.push({ id: row.id, reason: r.message, outcomeUnknown: false });
  });
  // The answer and the rows left out of the request, in one transaction.
  await store.finish(batchId, { sent: outcome.sent, failed: outcome.failed, dropped: deferred, retry }, clock.now());
  const othersBack = retry.filter((r) => r.id !== input.deliveryId).map((r) => r.id);
  if (othersBack.length) await deps.requeue?.(othersBack);
  deps.metrics?.deliveries('sent', outcome.sent.length);
  noteDropped(deferred);
  if (outcome.failed.length) {
    deps.metrics?.deliveries('failed', outcome.failed.length);
    for (const f of outcome.failed) {
      log.error({ deliveryId: f.id, batchId, code: 'rejected' }, 'email delivery rejected by the provider: failed for good');
      if (f.id !== input.deliveryId) await deps.deadLetter(f.id, f.reason, 'rejected');
    }
  }
  log.info(
    { deliveryId: input.deliveryId, batchId, sent: outcome.sent.length, failed: outcome.failed.length, claimMs, totalMs: Date.now() - started },
    'email-send: batch sent',
  );
  const ownBack = retry.find((r) => r.id === input.deliveryId);
  if (ownBack) throw new TransientSendError(`delivery ${ownBack.id} not sent in batch ${batchId} (${ownBack.reason}): pending again, retried`);
  const own = outcome.failed.find((f) => f.id === input.deliveryId);
  if (own) {
    const status = results[sending.findIndex((r) => r.id === own.id)];
    throw new PermanentError('rejected', `provider rejected delivery ${own.id}${status && !status.ok && status.status ? ` (status ${status.status})` : ''}`);
  }
  return {
    outcome: 'done',
    batchId,
    requestSize: sending.length,
    sent: outcome.sent.length,
    failed: outcome.failed.length,
    dropped: outcome.dropped.length,
    rateLimitWaits,
  };
}

/**
 * One reason for a whole batch that failed, recorded on each of its deliveries: the drivers'
 * reasons are the same for every message of a request (a status, a folder), and when they are
 * not, the first one is given as an example, not as every delivery's own.
 */
export function batchReason(results: Array<SendResult & { ok: false }>): string {
  const reasons = [...new Set(results.map((r) => r.message))];
  if (reasons.length === 1) return reasons[0]!;
  return `${reasons.length} different reasons for ${results.length} deliveries, e.g. ${reasons[0]}`;
}

/**
 * Fails the rows of a batch for good (each with a dead letter). `outcomeUnknown`: its last
 * request got no answer (it may have been accepted); absent keeps what earlier requests left.
 */
async function failForGood(
  ownId: string,
  batchId: string,
  rows: ClaimedDelivery[],
  reason: string,
  code: string,
  deps: ProcessDeliveryDeps,
  opts: { dropped?: DropDecision[]; outcomeUnknown?: true } = {},
): Promise<never> {
  const dropped = opts.dropped ?? [];
  const failed = rows.map((r) => ({ id: r.id, reason, ...(opts.outcomeUnknown ? { outcomeUnknown: true } : {}) }));
  await deps.store.finish(batchId, { sent: [], failed, dropped }, deps.clock.now());
  deps.metrics?.deliveries('failed', rows.length);
  if (dropped.length) deps.metrics?.deliveries('dropped', dropped.length);
  for (const r of rows) {
    deps.log.error({ deliveryId: r.id, batchId, code }, 'email delivery failed for good');
    if (r.id !== ownId) await deps.deadLetter(r.id, reason, code);
  }
  throw new PermanentError(code, `delivery batch ${batchId} failed for good (${rows.length} deliveries, code ${code})`);
}
