import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { PermanentError } from '../../libs/errors/index.js';
import { createLogger, silentLogger } from '../../libs/log/index.js';
import type { BatchOptions, MailDriver, OutgoingMail, SendResult } from '../../libs/mail/index.js';
import { createOutboxFolderDriver } from '../../libs/mail/drivers/outbox-folder.js';
import { fixedClock } from '../../libs/runtime/clock.js';
import { batchReason, processDelivery, requestKeyFor, TransientSendError, type BatchOutcome, type Claim, type ClaimedDelivery, type DeliveryStore, type ProcessDeliveryDeps } from './process-delivery.js';
import { sweepDeliveries } from './sweep.js';

// An outbox folder the fleet may not write into (a wrong owner, an immutable mount): the tests run
// as root, who writes anywhere, so creating a file in a folder named `not-writable` fails with
// EPERM as it did for the service user (the rest of the file system is real).
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const open = ((p: Parameters<typeof fs.open>[0], ...rest: unknown[]) =>
    path.basename(path.dirname(String(p))) === 'not-writable' && rest[0] !== 'r'
      ? Promise.reject(Object.assign(new Error(`EPERM: operation not permitted, open '${String(p)}'`), { code: 'EPERM', errno: -1, syscall: 'open', path: String(p) }))
      : (fs.open as (...a: unknown[]) => Promise<unknown>)(p, ...rest)) as typeof fs.open;
  return { ...fs, open, default: { ...fs, open } };
});

type Status = 'pending' | 'sending' | 'sent' | 'failed' | 'dropped';
interface Row extends ClaimedDelivery {
  status: Status;
  batchId: string | null;
  leader: string | null;
  claimedAt: Date | null;
  attemptStartedAt: Date | null;
  attempts: number;
  lastError: string | null;
  providerId: string | null;
  /** A request of its batch got no answer saying it was not accepted (see recordAttempt). */
  outcomeUnknown: boolean;
}

/** An in-memory store with the same claim rules as the PostgreSQL one. */
function memoryStore(batchSize = 100) {
  const rows = new Map<string, Row>();
  let n = 0;
  const store: DeliveryStore & { rows: Map<string, Row>; add(kind?: string, patientId?: number | null): string } = {
    rows,
    add(kind = 'test', patientId = null) {
      const id = `d${String(++n).padStart(4, '0')}`;
      rows.set(id, {
        id, kind, patientId, idempotencyKey: `key.${id}`, toAddress: `${id}@example.com`, fromAddress: 'Curavani <noreply@curavani.com>',
        subject: 's', html: '<p>h</p>', text: 't', headers: {}, status: 'pending', batchId: null, leader: null, claimedAt: null, attemptStartedAt: null,
        attempts: 0, lastError: null, providerId: null, outcomeUnknown: false,
      });
      return id;
    },
    async claim(id, now): Promise<Claim> {
      const own = rows.get(id);
      if (!own) return { kind: 'noop', reason: 'missing' };
      if (own.status !== 'pending') {
        if (own.batchId && own.leader === own.id) {
          const batch = [...rows.values()].filter((r) => r.batchId === own.batchId && r.status === 'sending');
          if (batch.length) return { kind: 'resume', batchId: own.batchId, rows: batch, claimedAt: batch[0]!.claimedAt! };
        }
        return { kind: 'noop', reason: own.status === 'sending' ? 'claimed-by-other' : own.status };
      }
      const others = [...rows.values()].filter((r) => r.status === 'pending' && r.id !== id).slice(0, batchSize - 1);
      const batchId = `b${++n}`;
      const batch = [own, ...others].sort((a, b) => a.id.localeCompare(b.id));
      for (const r of batch) Object.assign(r, { status: 'sending', batchId, leader: id, claimedAt: now });
      return { kind: 'claimed', batchId, rows: batch };
    },
    async finish(batchId, o: BatchOutcome) {
      const inBatch = (id: string) => {
        const r = rows.get(id)!;
        return r.batchId === batchId && r.status === 'sending' ? r : null;
      };
      for (const s of o.sent) { const r = inBatch(s.id); if (r) Object.assign(r, { attemptStartedAt: null, status: 'sent', providerId: s.providerMessageId, attempts: r.attempts + 1, outcomeUnknown: false }); }
      for (const f of o.failed) { const r = inBatch(f.id); if (r) Object.assign(r, { status: 'failed', lastError: f.reason, attempts: r.attempts + 1, outcomeUnknown: f.outcomeUnknown ?? r.outcomeUnknown }); }
      for (const d of o.dropped) { const r = inBatch(d.id); if (r) Object.assign(r, { status: 'dropped', lastError: d.reason }); }
      for (const b of o.retry ?? []) { const r = inBatch(b.id); if (r) Object.assign(r, { status: 'pending', batchId: null, leader: null, claimedAt: null, attemptStartedAt: null, lastError: b.reason, attempts: r.attempts + 1, outcomeUnknown: false }); }
    },
    async beginAttempt(batchId, now, expiredBefore) {
      const batch = [...rows.values()].filter((r) => r.batchId === batchId && r.status === 'sending');
      if (!batch.length || batch.some((r) => r.attemptStartedAt && r.attemptStartedAt >= expiredBefore)) return false;
      for (const r of batch) r.attemptStartedAt = now;
      return true;
    },
    async recordAttempt(batchId, reason, _now, outcomeUnknown = false) {
      for (const r of rows.values()) if (r.batchId === batchId && r.status === 'sending') Object.assign(r, { attempts: r.attempts + 1, lastError: reason, attemptStartedAt: null, outcomeUnknown: r.outcomeUnknown || outcomeUnknown });
    },
    async release(batchId) {
      for (const r of rows.values()) if (r.batchId === batchId && r.status === 'sending') Object.assign(r, { status: 'pending', batchId: null, leader: null, claimedAt: null });
    },
  };
  return store;
}

/** A scripted driver: answers come from a queue, then success. */
function scriptedDriver(script: Array<(mails: OutgoingMail[]) => SendResult[]> = []) {
  const requests: Array<{ mails: OutgoingMail[]; key: string }> = [];
  let ids = 0;
  const next = (mails: OutgoingMail[]) => script.shift()?.(mails) ?? mails.map(() => ({ ok: true as const, providerMessageId: `p${++ids}` }));
  const driver: MailDriver & { requests: typeof requests } = {
    name: 'scripted',
    requests,
    async send(mail) {
      requests.push({ mails: [mail], key: mail.idempotencyKey });
      return next([mail])[0]!;
    },
    async sendBatch(mails, opts: BatchOptions) {
      requests.push({ mails, key: opts.idempotencyKey });
      return next(mails);
    },
  };
  return driver;
}

const all = (r: SendResult) => (mails: OutgoingMail[]) => mails.map(() => r);

/**
 * A provider with Resend's idempotency rules: an accepted request's key keeps its payload and
 * answer (the same payload again replays it, another payload gets 409
 * invalid_idempotent_request); a refused request (5xx, 429) frees the key. `lose-answer`
 * accepts the request but the answer never arrives (a timeout after the provider sent it).
 */
function idempotentProvider(faults: Array<'500' | '429' | 'lose-answer'> = []) {
  const keys = new Map<string, { payload: string; answer: SendResult[] }>();
  const requests: Array<{ key: string; to: string[]; endpoint: 'single' | 'batch'; status: number }> = [];
  const delivered: string[] = [];
  let ids = 0;
  const handle = (mails: OutgoingMail[], key: string, endpoint: 'single' | 'batch'): SendResult[] => {
    const fault = faults.shift();
    const log = (status: number) => requests.push({ key, to: mails.map((m) => m.to), endpoint, status });
    if (fault === '500' || fault === '429') {
      log(Number(fault));
      return mails.map(() => ({ ok: false, transient: true, status: Number(fault), message: `injected ${fault}`, ...(fault === '429' ? { retryAfterMs: 1000 } : {}) }));
    }
    const payload = JSON.stringify([endpoint, mails]);
    const seen = keys.get(key);
    if (seen && seen.payload !== payload) {
      log(409);
      return mails.map(() => ({ ok: false, transient: false, status: 409, message: 'resend 409 invalid_idempotent_request' }));
    }
    if (seen) {
      log(200);
      return seen.answer;
    }
    const answer = mails.map((m): SendResult => (delivered.push(m.to), { ok: true, providerMessageId: `p${++ids}` }));
    keys.set(key, { payload, answer });
    log(fault === 'lose-answer' ? 0 : 200);
    return fault === 'lose-answer' ? mails.map(() => ({ ok: false, transient: true, message: 'timeout' })) : answer;
  };
  const driver: MailDriver & { requests: typeof requests; delivered: string[] } = {
    name: 'idempotent',
    requests,
    delivered,
    send: async (mail) => handle([mail], mail.idempotencyKey, 'single')[0]!,
    sendBatch: async (mails, opts: BatchOptions) => handle(mails, opts.idempotencyKey, 'batch'),
  };
  return driver;
}

/** A still-wanted check for kind `weekly` that drops the patients in `optedOut`. */
function optOutCheck(optedOut: Set<number>) {
  return {
    weekly: async (refs: Array<{ id: string; patientId: number | null }>) =>
      refs.filter((r) => r.patientId !== null && optedOut.has(r.patientId)).map((r) => ({ id: r.id, reason: 'patient opted out' })),
  };
}

function deps(store: DeliveryStore, mail: MailDriver, over: Partial<ProcessDeliveryDeps> = {}) {
  const waits: number[] = [];
  const pauses: number[] = [];
  const dead: Array<{ id: string; code: string }> = [];
  const d: ProcessDeliveryDeps = {
    store,
    mail,
    limiter: { reserve: async () => 0, pause: async (ms) => void pauses.push(ms) },
    stillWanted: {},
    deadLetter: async (id, _reason, code) => void dead.push({ id, code }),
    clock: fixedClock('2026-11-23T09:00:00Z'),
    log: silentLogger(),
    sleep: async (ms) => void waits.push(ms),
    isFinalAttempt: false,
    ...over,
  };
  return { d, waits, pauses, dead };
}

describe('processDelivery', () => {
  it('sends a lone delivery with its own idempotency key, and a second job for it is a no-op', async () => {
    const store = memoryStore();
    const id = store.add();
    const mail = scriptedDriver();
    const { d } = deps(store, mail);
    expect(await processDelivery({ deliveryId: id }, d)).toMatchObject({ outcome: 'done', sent: 1, requestSize: 1 });
    expect(await processDelivery({ deliveryId: id }, d)).toEqual({ outcome: 'noop', reason: 'sent' });
    expect(mail.requests).toHaveLength(1);
    expect(mail.requests[0]!.key).toBe(`key.${id}`);
    expect(store.rows.get(id)).toMatchObject({ status: 'sent', providerId: 'p1', attempts: 1 });
  });

  it('carries up to 100 pending deliveries in one request; the other jobs are no-ops without a rate slot', async () => {
    const store = memoryStore();
    const ids = Array.from({ length: 250 }, () => store.add());
    const mail = scriptedDriver();
    let reserved = 0;
    const { d } = deps(store, mail, { limiter: { reserve: async () => (reserved++, 0), pause: async () => {} } });
    const outcomes = [];
    for (const id of ids) outcomes.push(await processDelivery({ deliveryId: id }, d));
    expect(mail.requests.map((r) => r.mails.length)).toEqual([100, 100, 50]);
    expect(reserved).toBe(3);
    expect(outcomes.filter((o) => o.outcome === 'noop')).toHaveLength(247);
    expect(new Set(mail.requests.map((r) => r.key)).size).toBe(3);
    expect(mail.requests[0]!.key).toMatch(/^fleet-batch\//);
    expect([...store.rows.values()].every((r) => r.status === 'sent')).toBe(true);
  });

  it('does not use a rate slot that fell inside a pause set while it waited (another worker\'s 429): reserves a new one', async () => {
    const store = memoryStore();
    const id = store.add();
    const mail = scriptedDriver();
    const held = [1500, 0];
    let reserved = 0;
    const { d, waits } = deps(store, mail, { limiter: { reserve: async () => (reserved++, 400), pause: async () => {}, pausedFor: async () => held.shift() ?? 0 } });
    expect(await processDelivery({ deliveryId: id }, d)).toMatchObject({ outcome: 'done', sent: 1 });
    expect(reserved).toBe(2);
    expect(waits).toEqual([400, 400]);
    expect(mail.requests).toHaveLength(1);
  });

  it('waits out a 429 (pausing every worker for retry-after) and then sends', async () => {
    const store = memoryStore();
    const id = store.add();
    const mail = scriptedDriver([all({ ok: false, transient: true, status: 429, message: 'rate', retryAfterMs: 1500 })]);
    const { d, pauses } = deps(store, mail);
    expect(await processDelivery({ deliveryId: id }, d)).toMatchObject({ outcome: 'done', sent: 1, rateLimitWaits: 1 });
    expect(pauses).toEqual([1500]);
    expect(mail.requests).toHaveLength(2);
    expect(mail.requests[0]!.key).toBe(mail.requests[1]!.key);
  });

  it('a transient failure throws for a retry that resends exactly the same rows under the same key', async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add(), store.add()];
    const mail = scriptedDriver([all({ ok: false, transient: true, status: 500, message: 'boom' })]);
    const { d } = deps(store, mail);
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(TransientSendError);
    expect(store.rows.get(ids[1]!)).toMatchObject({ status: 'sending', attempts: 1, lastError: 'boom' });
    store.add(); // a newcomer must not join the retried request
    expect(await processDelivery({ deliveryId: ids[1]! }, d)).toEqual({ outcome: 'noop', reason: 'claimed-by-other' });
    expect(await processDelivery({ deliveryId: ids[0]! }, d)).toMatchObject({ outcome: 'done', sent: 3 });
    expect(mail.requests[1]!.key).toBe(mail.requests[0]!.key);
    expect(mail.requests[1]!.mails.map((m) => m.to)).toEqual(mail.requests[0]!.mails.map((m) => m.to));
  });

  it('on the last attempt a transient failure fails every row of the batch and dead-letters the others', async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add()];
    const mail = scriptedDriver([all({ ok: false, transient: true, message: 'network' })]);
    const { d, dead } = deps(store, mail, { isFinalAttempt: true });
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(PermanentError);
    expect(ids.map((i) => store.rows.get(i)!.status)).toEqual(['failed', 'failed']);
    expect(dead).toEqual([{ id: ids[1], code: 'send_failed' }]);
  });

  it('marks the rows of a request that got no answer as outcome unknown (kept when they fail for good); a 429, a refusal or a rejection does not', async () => {
    const unknownOf = (store: ReturnType<typeof memoryStore>, ids: string[]) => ids.map((i) => store.rows.get(i)!.outcomeUnknown);
    const limited = { ok: false as const, transient: true, status: 429, message: 'slow down', retryAfterMs: 10 };
    const refused = { ok: false as const, transient: true, refused: true as const, status: 403, message: 'refused' };
    // 429 (waits given up) and refusals accept nothing; a 500 may have been accepted.
    const store = memoryStore();
    const ids = [store.add(), store.add()];
    const mail = scriptedDriver([all(limited), all(refused), all({ ok: false, transient: true, status: 500, message: 'boom' }), all({ ok: false, transient: true, message: 'network' })]);
    const { d } = deps(store, mail, { maxRateLimitWaits: 0 });
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(TransientSendError);
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(TransientSendError);
    expect(unknownOf(store, ids)).toEqual([false, false]);
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(TransientSendError);
    expect(unknownOf(store, ids)).toEqual([true, true]);
    await expect(processDelivery({ deliveryId: ids[0]! }, { ...d, isFinalAttempt: true })).rejects.toMatchObject({ code: 'send_failed' });
    expect(ids.map((i) => store.rows.get(i))).toEqual(ids.map(() => expect.objectContaining({ status: 'failed', outcomeUnknown: true })));

    // Refused on every attempt, the last included: known not sent.
    const s2 = memoryStore();
    const ids2 = [s2.add(), s2.add()];
    await expect(processDelivery({ deliveryId: ids2[0]! }, deps(s2, scriptedDriver([all(refused)]), { isFinalAttempt: true }).d)).rejects.toMatchObject({ code: 'refused' });
    expect(unknownOf(s2, ids2)).toEqual([false, false]);

    // An answer settles it: a rejection after an unanswered request is a known outcome.
    const s3 = memoryStore();
    const ids3 = [s3.add(), s3.add()];
    const answered = scriptedDriver([all({ ok: false, transient: true, status: 502, message: 'bad gateway' }), (m) => m.map((_, i) => (i === 0 ? { ok: false as const, transient: false, status: 422, message: 'invalid to' } : { ok: true as const, providerMessageId: 'p' }))]);
    const d3 = deps(s3, answered).d;
    await expect(processDelivery({ deliveryId: ids3[1]! }, d3)).rejects.toBeInstanceOf(TransientSendError);
    expect(unknownOf(s3, ids3)).toEqual([true, true]);
    await processDelivery({ deliveryId: ids3[1]! }, d3);
    expect(ids3.map((i) => [s3.rows.get(i)!.status, s3.rows.get(i)!.outcomeUnknown])).toEqual([['failed', false], ['sent', false]]);
  });

  it('an outbox folder it may not write into: the retry says why, and each row records the folder, not the first message\'s file', async () => {
    // It said `provider request for batch ... failed (status network)`, and every row's last_error
    // named the temporary file of the batch's first message (its idempotency key).
    const base = await mkdtemp(path.join(tmpdir(), 'outbox-'));
    const dir = path.join(base, 'not-writable');
    try {
      const store = memoryStore();
      const ids = [store.add(), store.add(), store.add()];
      const { d } = deps(store, createOutboxFolderDriver({ dir }));
      const err = await processDelivery({ deliveryId: ids[0]! }, d).catch((e: unknown) => e as Error);
      expect(err).toBeInstanceOf(TransientSendError);
      const reason = `outbox folder: EPERM: operation not permitted (open in the folder ${dir})`;
      expect((err as Error).message).toMatch(new RegExp(`^provider request for batch \\S+ failed: ${reason.replace(/[()]/g, '\\$&')}$`));
      for (const id of ids) expect(store.rows.get(id)).toMatchObject({ status: 'sending', attempts: 1, lastError: reason });
      // No file name (idempotency key), no address.
      expect((err as Error).message).not.toMatch(/key\.|\.tmp|@/);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it('a batch whose messages failed for different reasons records one batch-level reason, not the first message\'s as everyone\'s', () => {
    const failed = (message: string) => ({ ok: false as const, transient: true, message });
    expect(batchReason([failed('a'), failed('a')])).toBe('a');
    expect(batchReason([failed('a'), failed('b'), failed('a')])).toBe('2 different reasons for 3 deliveries, e.g. a');
  });

  it('a refused account (401/403) keeps the batch for retries under the same key, counted as refused, until the provider accepts', async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add()];
    const reason = 'the email provider refused the API key (403 invalid_api_key): check RESEND_API_KEY';
    const refused = all({ ok: false, transient: true, refused: true, status: 403, message: reason });
    const mail = scriptedDriver([refused, refused]);
    const outcomes: string[] = [];
    const { d, dead } = deps(store, mail, { metrics: { requests: (o) => void outcomes.push(o), deliveries: () => {} } });
    for (const attempts of [1, 2]) {
      await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toThrow(`refused: ${reason}`);
      expect(ids.map((i) => store.rows.get(i))).toEqual(ids.map(() => expect.objectContaining({ status: 'sending', attempts, lastError: reason })));
    }
    // the key is fixed: the retry sends the same rows under the same key, once
    expect(await processDelivery({ deliveryId: ids[0]! }, d)).toMatchObject({ outcome: 'done', sent: 2, failed: 0 });
    expect(new Set(mail.requests.map((r) => r.key)).size).toBe(1);
    expect(mail.requests.map((r) => r.mails.length)).toEqual([2, 2, 2]);
    expect(outcomes).toEqual(['refused', 'refused', 'ok']);
    expect(dead).toEqual([]);
  });

  it('on the last attempt a refused account fails the batch for good like any transient failure, with code refused', async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add()];
    const reason = 'the email provider refused the sender (403 validation_error): check that the sending domain of MAIL_FROM is verified in Resend, and RESEND_API_KEY';
    const mail = scriptedDriver([all({ ok: false, transient: true, refused: true, status: 403, message: reason })]);
    const { d, dead } = deps(store, mail, { isFinalAttempt: true });
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toMatchObject({ code: 'refused' });
    expect(ids.map((i) => store.rows.get(i))).toEqual(ids.map(() => expect.objectContaining({ status: 'failed', lastError: reason })));
    expect(dead).toEqual([{ id: ids[1], code: 'refused' }]);
  });

  it('a rejected message ends failed with the reason; its own job throws a permanent error', async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add()];
    const mail = scriptedDriver([(m) => m.map((x, i) => (i === 0 ? { ok: false as const, transient: false, status: 422, message: 'invalid to' } : { ok: true as const, providerMessageId: 'ok' }))]);
    const { d, dead } = deps(store, mail);
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toMatchObject({ code: 'rejected' });
    expect(store.rows.get(ids[0]!)).toMatchObject({ status: 'failed', lastError: 'invalid to' });
    expect(store.rows.get(ids[1]!)).toMatchObject({ status: 'sent' });
    expect(dead).toEqual([]);
  });

  it('a message the driver could not take for now (one file on a full disk) goes back to pending for a batch of its own; the rest of the batch is sent', async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add(), store.add()].sort();
    const mail = scriptedDriver([(m) => m.map((_, i) => (i === 1 ? { ok: false as const, transient: true, message: 'outbox folder: ENOSPC' } : { ok: true as const, providerMessageId: `ok${i}` }))]);
    const requeued: string[][] = [];
    const { d, dead } = deps(store, mail, { requeue: async (x) => void requeued.push(x) });
    await processDelivery({ deliveryId: ids[0]! }, d);
    expect(ids.map((i) => store.rows.get(i)!.status)).toEqual(['sent', 'pending', 'sent']);
    expect(store.rows.get(ids[1]!)).toMatchObject({ batchId: null, lastError: 'outbox folder: ENOSPC', attempts: 1 });
    expect(requeued).toEqual([[ids[1]]]);
    expect(dead).toEqual([]);
    // its own job: a transient error, so it is retried (and then sent in a batch of its own)
    const again = deps(store, mail);
    await expect(processDelivery({ deliveryId: ids[1]! }, again.d)).resolves.toMatchObject({ sent: 1 });
    expect(store.rows.get(ids[1]!)!.status).toBe('sent');
    expect(new Set(mail.requests.map((r) => r.key)).size).toBe(2);
  });

  it("the job's own message given back that way throws a transient error; on the last attempt it fails instead", async () => {
    const store = memoryStore();
    const ids = [store.add(), store.add()].sort();
    const oneFails = () => scriptedDriver([(m) => m.map((_, i) => (i === 0 ? { ok: false as const, transient: true, message: 'outbox folder: EFBIG' } : { ok: true as const, providerMessageId: 'ok' }))]);
    const { d } = deps(store, oneFails());
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(TransientSendError);
    expect(ids.map((i) => store.rows.get(i)!.status)).toEqual(['pending', 'sent']);
    // alone in its batch now; the last attempt fails it for good
    const last = deps(store, oneFails(), { isFinalAttempt: true });
    await expect(processDelivery({ deliveryId: ids[0]! }, last.d)).rejects.toBeInstanceOf(PermanentError);
    expect(store.rows.get(ids[0]!)).toMatchObject({ status: 'failed' });
  });

  it('drops what a still-wanted check names, before anything is sent', async () => {
    const store = memoryStore();
    const keep = store.add('weekly', 1);
    const optedOut = store.add('weekly', 2);
    const staff = store.add('staff');
    const mail = scriptedDriver();
    const seen: string[][] = [];
    const { d } = deps(store, mail, {
      stillWanted: {
        weekly: async (refs) => {
          seen.push(refs.map((r) => r.id));
          return refs.filter((r) => r.patientId === 2).map((r) => ({ id: r.id, reason: 'patient opted out' }));
        },
      },
    });
    expect(await processDelivery({ deliveryId: keep }, d)).toMatchObject({ outcome: 'done', sent: 2, dropped: 1 });
    expect(seen).toEqual([[keep, optedOut]]);
    expect(store.rows.get(optedOut)).toMatchObject({ status: 'dropped', lastError: 'patient opted out' });
    expect(mail.requests[0]!.mails.map((m) => m.to)).toEqual([`${keep}@example.com`, `${staff}@example.com`]);
  });

  it('a still-wanted check that throws gives the rows back and sends nothing', async () => {
    const store = memoryStore();
    const id = store.add('weekly', 1);
    const mail = scriptedDriver();
    const { d } = deps(store, mail, { stillWanted: { weekly: async () => { throw new Error('db down'); } } });
    await expect(processDelivery({ deliveryId: id }, d)).rejects.toThrow('db down');
    expect(store.rows.get(id)!.status).toBe('pending');
    expect(mail.requests).toHaveLength(0);
  });

  it('a retried batch asks again: a patient who opted out after a failed request is left out, under the same key and endpoint', async () => {
    const store = memoryStore();
    const keep = store.add('weekly', 1);
    const optOut = store.add('weekly', 2);
    const mail = idempotentProvider(['500']);
    const optedOut = new Set<number>();
    const { d } = deps(store, mail, { stillWanted: optOutCheck(optedOut) });
    await expect(processDelivery({ deliveryId: keep }, d)).rejects.toBeInstanceOf(TransientSendError);
    optedOut.add(2);
    expect(await processDelivery({ deliveryId: keep }, d)).toMatchObject({ outcome: 'done', sent: 1, dropped: 1, requestSize: 1 });
    expect(store.rows.get(keep)).toMatchObject({ status: 'sent' });
    expect(store.rows.get(optOut)).toMatchObject({ status: 'dropped', lastError: 'patient opted out' });
    expect(mail.delivered).toEqual([`${keep}@example.com`]);
    // The batch's first request decides form and key: a batch request stays one, with one row left.
    expect(mail.requests.map((r) => [r.endpoint, r.status, r.to.length])).toEqual([['batch', 500, 2], ['batch', 200, 1]]);
    expect(mail.requests[1]!.key).toBe(mail.requests[0]!.key);
  });

  it('a retried batch whose earlier request was accepted (answer lost) is sent unchanged: the provider replays, nothing goes out twice', async () => {
    const store = memoryStore();
    const ids = [store.add('weekly', 1), store.add('weekly', 2), store.add('weekly', 3)];
    const mail = idempotentProvider(['lose-answer']);
    const optedOut = new Set<number>();
    const { d } = deps(store, mail, { stillWanted: optOutCheck(optedOut) });
    await expect(processDelivery({ deliveryId: ids[0]! }, d)).rejects.toBeInstanceOf(TransientSendError);
    optedOut.add(3); // too late: the provider already has it
    expect(await processDelivery({ deliveryId: ids[0]! }, d)).toMatchObject({ outcome: 'done', sent: 3, dropped: 0 });
    expect(mail.requests.map((r) => [r.status, r.to.length])).toEqual([[0, 3], [409, 2], [200, 3]]);
    expect(new Set(mail.requests.map((r) => r.key)).size).toBe(1);
    expect(mail.delivered).toHaveLength(3);
    expect(ids.map((i) => store.rows.get(i)!.status)).toEqual(['sent', 'sent', 'sent']);
    expect(ids.map((i) => store.rows.get(i)!.providerId)).toEqual(['p1', 'p2', 'p3']);
  });

  it('asks again after a 429 wait: an opt-out during the wait drops the row', async () => {
    const store = memoryStore();
    const keep = store.add('weekly', 1);
    const optOut = store.add('weekly', 2);
    const mail = idempotentProvider(['429']);
    const optedOut = new Set<number>();
    const { d } = deps(store, mail, {
      stillWanted: { weekly: async (refs) => (mail.requests.length ? optedOut.add(2) : null, optOutCheck(optedOut).weekly(refs)) },
    });
    expect(await processDelivery({ deliveryId: keep }, d)).toMatchObject({ outcome: 'done', sent: 1, dropped: 1, rateLimitWaits: 1 });
    expect(store.rows.get(optOut)).toMatchObject({ status: 'dropped' });
    expect(mail.delivered).toEqual([`${keep}@example.com`]);
  });

  it('asks right before the request, after waiting for the rate slot', async () => {
    const store = memoryStore();
    const id = store.add('weekly', 1);
    const mail = idempotentProvider();
    const optedOut = new Set<number>();
    const { d } = deps(store, mail, { stillWanted: optOutCheck(optedOut), sleep: async () => void optedOut.add(1), limiter: { reserve: async () => 400, pause: async () => {} } });
    expect(await processDelivery({ deliveryId: id }, d)).toMatchObject({ outcome: 'done', sent: 0, dropped: 1 });
    expect(mail.requests).toEqual([]);
  });

  it('a retried batch of which every row is unwanted sends nothing; the drop says an earlier request may have carried it', async () => {
    const store = memoryStore();
    const id = store.add('weekly', 1);
    const mail = idempotentProvider(['lose-answer']);
    const optedOut = new Set<number>();
    const { d } = deps(store, mail, { stillWanted: optOutCheck(optedOut) });
    await expect(processDelivery({ deliveryId: id }, d)).rejects.toBeInstanceOf(TransientSendError);
    optedOut.add(1);
    expect(await processDelivery({ deliveryId: id }, d)).toMatchObject({ outcome: 'done', sent: 0, dropped: 1, requestSize: 0 });
    expect(mail.requests).toHaveLength(1);
    expect(store.rows.get(id)!.status).toBe('dropped');
    expect(store.rows.get(id)!.lastError).toMatch(/^patient opted out; not re-sent \(an earlier request for it got no answer/);
  });

  it('a still-wanted check that throws on a retried batch keeps it claimed for the next retry', async () => {
    const store = memoryStore();
    const id = store.add('weekly', 1);
    const mail = idempotentProvider(['500']);
    let fail = false;
    const { d } = deps(store, mail, { stillWanted: { weekly: async () => { if (fail) throw new Error('db down'); return []; } } });
    await expect(processDelivery({ deliveryId: id }, d)).rejects.toBeInstanceOf(TransientSendError);
    fail = true;
    await expect(processDelivery({ deliveryId: id }, d)).rejects.toThrow('db down');
    expect(store.rows.get(id)!.status).toBe('sending');
    fail = false;
    expect(await processDelivery({ deliveryId: id }, d)).toMatchObject({ outcome: 'done', sent: 1 });
    expect(mail.requests.map((r) => r.key)).toEqual([`key.${id}`, `key.${id}`]);
  });

  it('does not resend a claim older than the provider idempotency window', async () => {
    const store = memoryStore();
    const id = store.add();
    const clock = fixedClock('2026-11-23T09:00:00Z');
    const mail = scriptedDriver([all({ ok: false, transient: true, message: 'timeout' })]);
    const { d } = deps(store, mail, { clock });
    await expect(processDelivery({ deliveryId: id }, d)).rejects.toBeInstanceOf(TransientSendError);
    clock.advance(24 * 3600_000);
    await expect(processDelivery({ deliveryId: id }, d)).rejects.toMatchObject({ code: 'claim_expired' });
    expect(store.rows.get(id)!.status).toBe('failed');
    expect(mail.requests).toHaveLength(1);
  });

  it('uses the delivery key for one row and the batch id for several', () => {
    const row = { idempotencyKey: 'k' } as ClaimedDelivery;
    expect(requestKeyFor('b', [row])).toBe('k');
    expect(requestKeyFor('b', [row, row])).toBe('fleet-batch/b');
  });
});

describe('sweepDeliveries', () => {
  it('makes sure old pending deliveries have a job and hands stale batches to their leader', async () => {
    const ensured: string[] = [];
    const recovered: string[] = [];
    const clock = fixedClock('2026-11-23T09:00:00Z');
    let pendingBefore: Date | undefined;
    const r = await sweepDeliveries({
      stalePending: async (before) => ((pendingBefore = before), ['a', 'b']),
      staleClaims: async () => [{ batchId: 'x', leaderId: 'l1', rows: 3 }],
      ensureSendJob: async (id) => (ensured.push(id), id === 'a'),
      recoverBatch: async (id) => (recovered.push(id), true),
      clock,
      log: silentLogger(),
      pendingAfterMs: 60_000,
      staleMs: 3_600_000,
    });
    expect(pendingBefore?.toISOString()).toBe('2026-11-23T08:59:00.000Z');
    expect(ensured).toEqual(['a', 'b']);
    expect(recovered).toEqual(['l1']);
    expect(r).toEqual({ pending: 2, enqueued: 1, staleBatches: 1, recovered: 1 });
  });

  it('says Redis lost its data only when a batch being sent had lost its job (not at every first sweep against a fresh Redis)', async () => {
    const sweep = async (jobsAlive: boolean) => {
      const lines: Array<{ level: number; msg: string }> = [];
      const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
      const stale: string[][] = [];
      const r = await sweepDeliveries({
        stalePending: async () => [],
        staleClaims: async (before) => (stale.push([before.toISOString()]), [{ batchId: 'x', leaderId: 'l1', rows: 2 }, { batchId: 'y', leaderId: 'l2', rows: 1 }]),
        ensureSendJob: async () => true,
        recoverBatch: async () => !jobsAlive,
        redisLostData: async () => true,
        clock: fixedClock('2026-11-23T09:00:00Z'),
        log,
        pendingAfterMs: 60_000,
        staleMs: 3_600_000,
      });
      // The marker gone: every batch being sent is looked at now, not after staleMs.
      expect(stale).toEqual([['2026-11-23T09:00:00.000Z']]);
      return { r, lost: lines.filter((l) => /Redis lost its data/.test(l.msg)) };
    };
    const fresh = await sweep(true);
    expect(fresh.r.recovered).toBe(0);
    expect(fresh.lost).toEqual([]);
    const lost = await sweep(false);
    expect(lost.r.recovered).toBe(2);
    expect(lost.lost).toEqual([expect.objectContaining({ level: 40, batches: 2, recovered: 2 })]);
  });

  it('leaves pending deliveries alone while the queue has a long backlog, but still recovers stale batches', async () => {
    const ensured: string[] = [];
    const r = await sweepDeliveries({
      stalePending: async () => ['a'],
      staleClaims: async () => [{ batchId: 'x', leaderId: 'l1', rows: 1 }],
      ensureSendJob: async (id) => (ensured.push(id), true),
      recoverBatch: async () => true,
      queueBusy: async () => true,
      clock: fixedClock('2026-11-23T09:00:00Z'),
      log: silentLogger(),
      pendingAfterMs: 60_000,
      staleMs: 3_600_000,
    });
    expect(ensured).toEqual([]);
    expect(r).toEqual({ pending: 0, enqueued: 0, staleBatches: 1, recovered: 1 });
  });
});
