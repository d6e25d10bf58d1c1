import { setTimeout as sleep } from 'node:timers/promises';
import { Counter } from 'prom-client';
import type { DeliveryRow } from '../../libs/db/repositories/deliveries.js';
import {
  beginDeliveryAttempt,
  claimDeliveries,
  deliveryAwaitsOperator,
  failedDeliveriesAwaitingOperator,
  finishDeliveries,
  listStaleClaims,
  listStalePending,
  recordDeliveryAttempt,
  releaseDeliveries,
  requeueFailedDelivery,
  requeueOutlook,
} from '../../libs/db/repositories/deliveries.js';
import { countExpiredContents, deliveryDiscardDetails, removeExpiredContents } from '../../libs/db/repositories/deliveries-retention.js';
import { createMailDriver, type MailDriver, type StillWantedChecks } from '../../libs/mail/index.js';
import { oncePerRegistry } from '../../libs/metrics/index.js';
import { utcSeconds, type DeadLetterHook } from '../../libs/ops/dead-letters.js';
import { addDeadLetter, catalog, isLiveJobState, jobIdFor, listDeadLetters, redisRateLimiter, restoreMissingDeadLetters, type Handlers, type RateLimiter } from '../../libs/queues/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import { workerComponent } from '../../libs/runtime/index.js';
import { IDEMPOTENCY_WINDOW_MS, processDelivery, type Claim, type DeliveryStore, type EmailMetrics } from './process-delivery.js';
import { sweepEmailContents, type ContentRetentionResult } from './process-retention.js';
import { sweepDeliveries } from './sweep.js';

export type { ContentRetentionResult };

export interface EmailOptions {
  /** "Still wanted?" checks by delivery kind (e.g. the weekly email's opt-out). */
  stillWanted?: StillWantedChecks;
  /** Replaces the configured driver (tests, benchmarks). */
  mail?: MailDriver;
  /** Replaces the Redis rate limiter (tests). */
  limiter?: RateLimiter;
  /** Kinds that may share a batch request; null (default) = every kind. */
  batchableKinds?: string[] | null;
}

/** Longest wait list on which carried jobs are removed (see discardCarriedJobs). */
const DISCARD_MAX_WAITING = 2_000;

/** Longest wait list on which the sweep checks pending deliveries' jobs one by one. */
const SWEEP_MAX_WAITING = 5_000;

export const emailMetrics = oncePerRegistry((registry): EmailMetrics => {
  const requests = new Counter({ name: 'fleet_email_requests_total', help: 'Provider requests by outcome', labelNames: ['outcome'], registers: [registry] });
  // Exported from the start, so the alert on refusals sees the first one as an increase.
  requests.inc({ outcome: 'refused' }, 0);
  const deliveries = new Counter({ name: 'fleet_email_deliveries_total', help: 'Deliveries finished, by status', labelNames: ['status'], registers: [registry] });
  // Likewise for FleetEmailFailures (increase over an hour): a series first seen at 1 shows no increase.
  for (const status of ['sent', 'failed', 'dropped'] as const) deliveries.inc({ status }, 0);
  return { requests: (outcome) => requests.inc({ outcome }), deliveries: (status, n) => deliveries.inc({ status }, n) };
});

function deliveryStore(ctx: FleetContext, opts: EmailOptions): DeliveryStore {
  const db = ctx.database.db;
  const toClaimed = (r: DeliveryRow) => r;
  return {
    async claim(deliveryId, now): Promise<Claim> {
      const c = await claimDeliveries(db, deliveryId, { batchSize: ctx.config.mail.batchSize, batchableKinds: opts.batchableKinds ?? null, now });
      if (c.kind === 'noop') return c;
      return { ...c, rows: c.rows.map(toClaimed) };
    },
    finish: async (batchId, outcome, now) => void (await finishDeliveries(db, batchId, outcome, now)),
    beginAttempt: (batchId, now, expiredBefore) => beginDeliveryAttempt(db, batchId, now, expiredBefore),
    recordAttempt: (batchId, reason, now, outcomeUnknown) => recordDeliveryAttempt(db, batchId, reason, now, outcomeUnknown),
    release: (batchId, now) => releaseDeliveries(db, batchId, now),
  };
}

/** The handler of `email-send`. */
export function emailHandlers(ctx: FleetContext, opts: EmailOptions = {}): Handlers {
  const mail = opts.mail ?? createMailDriver(ctx.config.mail);
  let limiter = opts.limiter;
  const store = deliveryStore(ctx, opts);
  const metrics = emailMetrics(ctx.metrics.registry);
  return {
    'email-send': async (payload, helpers) => {
      // A worker connection: while Redis is away the limiter waits instead of failing the job.
      limiter ??= redisRateLimiter(ctx.workerRedis(), { prefix: ctx.config.queues.prefix, name: 'mail', perSecond: ctx.config.mail.ratePerSecond });
      return processDelivery(payload, {
        store,
        mail,
        limiter,
        stillWanted: opts.stillWanted ?? {},
        metrics,
        clock: ctx.clock,
        log: helpers.log,
        sleep: (ms) => sleep(ms),
        isFinalAttempt: helpers.isFinalAttempt,
        attemptLeaseMs: ctx.config.mail.requestTimeoutMs + 10_000,
        async discardCarriedJobs(ids) {
          const queue = ctx.queues.queue(catalog['email-send'].queue);
          // Removing a waiting job scans BullMQ's wait list (LREM, O(length)): worth it while
          // the list is short; on a long one (a weekly send) the jobs run as cheap no-ops.
          if ((await queue.getWaitingCount()) > DISCARD_MAX_WAITING) return;
          // A waiting job is removed; an active or locked one refuses and runs as a no-op.
          await Promise.all(ids.map((deliveryId) => queue.remove(jobIdFor('email-send', { deliveryId })!).catch(() => 0)));
        },
        async requeue(ids) {
          // Their jobs ran or were carried off with the batch: fresh ones (as the sweep does).
          const at = ctx.clock.now().getTime();
          for (const deliveryId of ids) await ctx.queues.enqueue('email-send', { deliveryId }, { jobId: `${jobIdFor('email-send', { deliveryId })!}.retry.${at}` });
        },
        async deadLetter(deliveryId, reason, code) {
          const now = new Date().toISOString();
          await addDeadLetter(ctx.queues, {
            originalQueue: catalog['email-send'].queue,
            originalJobId: jobIdFor('email-send', { deliveryId })!,
            name: 'email-send',
            data: { deliveryId },
            reason,
            code,
            attemptsMade: helpers.attempt,
            enqueuedAt: null,
            failedAt: now,
          });
          ctx.metrics.dead.inc({ queue: catalog['email-send'].queue });
        },
      });
    },
  };
}

/** Makes sure a job will run for a pending delivery (the sweep). */
async function ensureSendJob(ctx: FleetContext, deliveryId: string): Promise<boolean> {
  const jobId = jobIdFor('email-send', { deliveryId })!;
  const state = await ctx.queues.queue(catalog['email-send'].queue).getJobState(jobId);
  if (state === 'unknown') {
    await ctx.queues.enqueue('email-send', { deliveryId });
    return true;
  }
  if (state === 'completed' || state === 'failed') {
    // Its job ran (e.g. a batch was given back before sending): a fresh job under a new id.
    await ctx.queues.enqueue('email-send', { deliveryId }, { jobId: `${jobId}.sweep.${ctx.clock.now().getTime()}` });
    return true;
  }
  return false;
}

/**
 * Failed deliveries wait for an operator through their dead letters (`fleet dlq`, /ops, the
 * dead-letter alert), and the retention sweep keeps their contents only while one waits. When
 * Redis restarted without its data those are gone while the rows still say failed: nobody would
 * see them, and their contents would be blanked. Each such delivery gets its dead letter back
 * (the recorded reason, as a dead letter of a delivery carried in a batch has it), checked under
 * the entry's lock against the row and the audit table then (an operator's requeue or discard in
 * between wins). The usual case costs one query and one listing of the email dead letters.
 */
export async function restoreEmailDeadLetters(ctx: FleetContext): Promise<number> {
  const db = ctx.database.db;
  const rows = await failedDeliveriesAwaitingOperator(db);
  const queue = catalog['email-send'].queue;
  const records = rows.map((r) => ({
    entry: {
      originalQueue: queue,
      originalJobId: jobIdFor('email-send', { deliveryId: r.id })!,
      name: 'email-send',
      data: { deliveryId: r.id },
      reason: r.lastError ?? `delivery ${r.id}: failed (reason not recorded)`,
      code: 'restored',
      attemptsMade: r.attempts,
      enqueuedAt: null,
      failedAt: r.updatedAt.toISOString(),
    },
    stillWanted: () => deliveryAwaitsOperator(db, r.id),
  }));
  return restoreMissingDeadLetters(ctx.queues, queue, records, (data) => (data as { deliveryId?: unknown } | null)?.deliveryId);
}

/** How often the sweep looks for failed deliveries whose dead letter Redis lost. */
const RESTORE_DEAD_LETTERS_EVERY_MS = 10 * 60_000;

/** The periodic sweep as a component (role `email`). */
export function emailSweepComponent(ctx: FleetContext): Component {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;
  let stopped = false;
  const cfg = ctx.config.mail;
  const runOnce = () =>
    sweepDeliveries({
      stalePending: (before, limit) => listStalePending(ctx.database.db, before, limit),
      staleClaims: (before, limit) => listStaleClaims(ctx.database.db, before, limit),
      ensureSendJob: (id) => ensureSendJob(ctx, id),
      queueBusy: async () => (await ctx.queues.queue(catalog['email-send'].queue).getWaitingCount()) > SWEEP_MAX_WAITING,
      // Set by the first sweep against this Redis and never removed: gone means Redis lost its data.
      redisLostData: async () => (await (await ctx.queues.redis()).set(`${ctx.queues.prefix}:email-sweep:seen`, '1', 'NX')) === 'OK',
      async recoverBatch(leaderId, bucket) {
        // The leader's own job still waiting, delayed for its next attempt or running takes the
        // batch on: a second job would only double its provider requests while they fail and end
        // in a second dead letter of the same delivery ("a provider request in flight"). That is
        // the case at the first sweep against a Redis without the marker (a fresh one, a first
        // start) for batches claimed since, and for a job restored by other means.
        const own = jobIdFor('email-send', { deliveryId: leaderId })!;
        if (isLiveJobState(await ctx.queues.queue(catalog['email-send'].queue).getJobState(own))) return false;
        const jobId = `${own}.recover.${bucket}`;
        const r = await ctx.queues.enqueue('email-send', { deliveryId: leaderId }, { jobId });
        return r.jobId === jobId;
      },
      clock: ctx.clock,
      log: ctx.log.child({ component: 'email-sweep' }),
      pendingAfterMs: cfg.sweepPendingAfterMs,
      staleMs: cfg.sendingStaleMs,
    });
  let lastRestore = 0;
  const restore = async () => {
    // At the first pass and then every few minutes: a listing of the dead letters is not free.
    if (lastRestore && Date.now() - lastRestore < RESTORE_DEAD_LETTERS_EVERY_MS) return;
    lastRestore = Date.now();
    const restored = await restoreEmailDeadLetters(ctx);
    if (restored) ctx.log.warn({ deadLettersRestored: restored }, 'failed email deliveries had no dead letter (Redis lost its data?): dead letters restored');
  };
  const tick = () => {
    running = Promise.all([runOnce(), restore()])
      .catch((err: unknown) => ctx.log.warn({ err }, 'email sweep failed; trying again next interval'))
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, cfg.sweepIntervalMs);
      });
  };
  return {
    name: 'email-sweep',
    async start() {
      timer = setTimeout(tick, Math.min(cfg.sweepIntervalMs, 5_000));
      timer.unref();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/** Everything role `email` runs: the `email-send` workers and the sweep. */
export function emailComponents(ctx: FleetContext, opts: EmailOptions = {}): Component[] {
  return [workerComponent(ctx, 'email', emailHandlers(ctx, opts)), emailSweepComponent(ctx)];
}

const contentRetentionMetrics = oncePerRegistry(
  (registry) =>
    new Counter({
      name: 'fleet_email_contents_removed_total',
      help: 'Deliveries whose subject, body and headers the retention sweep removed (EMAIL_RETENTION_DAYS after they became final)',
      registers: [registry],
    }),
);

/** Registers fleet_email_contents_removed_total (at 0) in a process that runs the nightly retention, so /metrics has it before the first run. */
export function registerEmailRetentionMetrics(ctx: FleetContext): void {
  contentRetentionMetrics(ctx.metrics.registry);
}

/** The delivery ids named by waiting `email-send` dead letters: an operator can still requeue them. */
async function deadLetteredDeliveries(ctx: FleetContext): Promise<Set<string>> {
  const entries = await listDeadLetters(ctx.queues, { queue: catalog['email-send'].queue });
  const ids = new Set<string>();
  for (const e of entries) {
    const id = (e.data as { deliveryId?: unknown } | null)?.deliveryId;
    if (typeof id === 'string') ids.add(id);
  }
  return ids;
}

/**
 * One retention sweep of email contents (run by the nightly retention job and `fleet retention
 * run`): blanks final deliveries past EMAIL_RETENTION_DAYS, except failed ones whose dead letter
 * waits in `email-dlq`. Needs the database and Redis only. `dryRun`: only counts.
 */
export async function runEmailRetention(ctx: FleetContext, opts: { dryRun?: boolean } = {}): Promise<ContentRetentionResult> {
  const db = ctx.database.db;
  const removed = contentRetentionMetrics(ctx.metrics.registry);
  return sweepEmailContents(
    {
      store: {
        countExpired: (before, requeueable) => countExpiredContents(db, before, requeueable),
        removeBatch: (q) => removeExpiredContents(db, q),
      },
      deadLettered: () => deadLetteredDeliveries(ctx),
      days: ctx.config.mail.retentionDays,
      clock: ctx.clock,
      log: ctx.log,
      onRemoved: (n) => removed.inc(n),
    },
    opts,
  );
}

/** A requeue of a dead-lettered email whose contents the retention sweep removed: it would go out empty. */
export class DeliveryContentsRemovedError extends Error {
  override name = 'DeliveryContentsRemovedError';
}

/**
 * Operator requeue of a dead-lettered email. A delivery whose last provider request got no
 * answer goes out again with its batch under the same idempotency key while the provider keeps
 * it (the provider replays its answer if it had accepted the request); otherwise it goes back to
 * `pending` for a new batch. The notice tells the operator what happened (ids only).
 */
export const emailDeadLetterHook: DeadLetterHook = {
  async requeueAdvice(payloads, db) {
    const ids = payloads.map((p) => {
      const id = (p as { deliveryId?: unknown } | null)?.deliveryId;
      return typeof id === 'string' ? id : null;
    });
    const outlook = await requeueOutlook(db, ids.filter((id): id is string => id !== null), { now: new Date(), windowMs: IDEMPOTENCY_WINDOW_MS });
    return ids.map((id) => {
      const o = id === null ? undefined : outlook.get(id);
      if (!o) return undefined;
      if (o.kind === 'same_key') {
        return `its last provider request got no answer: requeued before ${utcSeconds(o.until)}, it goes out again under the same idempotency key, so at most once`;
      }
      if (o.kind === 'may_duplicate') {
        return `its last provider request got no answer and the provider's 24 h idempotency window is over: a requeue sends it again, and the recipient may already have it (discard it if a second email is worse)`;
      }
      return `its contents were removed on ${utcSeconds(o.at)} (EMAIL_RETENTION_DAYS): it cannot be sent again; discard it`;
    });
  },
  // The row's updated_at goes into the discard's audit row: "discarded since it last failed" is
  // then told by one clock (the fleet's), see discardedSinceFailed.
  async onDiscard(payload, db) {
    return deliveryDiscardDetails(db, (payload as { deliveryId?: unknown } | null)?.deliveryId);
  },
  async onRequeue(payload, db) {
    const id = (payload as { deliveryId?: unknown }).deliveryId;
    if (typeof id !== 'string') return;
    const r = await requeueFailedDelivery(db, id, { now: new Date(), windowMs: IDEMPOTENCY_WINDOW_MS });
    if (r.kind === 'batch') {
      const others = r.rows - 1;
      return (
        `delivery ${id}: its last provider request got no answer, so it goes out again with its batch ${r.batchId} under the same idempotency key ` +
        `(if the provider had accepted it, it replays its answer and nothing is sent twice)` +
        (others > 0 ? `; ${others} other ${others === 1 ? 'delivery of its batch goes' : 'deliveries of its batch go'} with it: requeueing their dead letters sends nothing more` : '')
      );
    }
    if (r.kind === 'pending') {
      if (!r.mayHaveGoneOut) return;
      return (
        `delivery ${id}: its last provider request got no answer and the provider's 24 h idempotency window is over, ` +
        `so it goes out as a new email: the recipient may already have received it (discard the dead letter instead if that is worse than a second email)`
      );
    }
    // Not reset: emptied by the retention sweep (its dead letter was not there when the sweep
    // ran): refused, nothing is sent. Already pending or sent again: the job finds nothing to do.
    if (r.status === 'failed' && r.contentsRemovedAt) {
      throw new DeliveryContentsRemovedError(
        `delivery ${id} cannot be sent again: its contents were removed on ${r.contentsRemovedAt.toISOString()} (EMAIL_RETENTION_DAYS); discard this dead letter`,
      );
    }
    if (r.status === 'sent') return `delivery ${id} was already sent (e.g. with its batch, requeued through another of its deliveries): nothing more to send`;
    if (r.status === 'sending') return `delivery ${id} is already being sent again (e.g. with its batch, requeued through another of its deliveries): nothing more to send`;
    if (r.status === 'pending') return `delivery ${id} already waits to be sent`;
    if (r.status === 'dropped') return `delivery ${id} was dropped since (no longer wanted): nothing to send`;
    return undefined;
  },
};
