import type { DeliveryRow } from '../../libs/db/repositories/deliveries.js';
import { beginDeliveryAttempt, claimDeliveries, finishDeliveries, recordDeliveryAttempt, releaseDeliveries } from '../../libs/db/repositories/deliveries.js';
import type { MailDriver, StillWantedChecks } from '../../libs/mail/index.js';
import type { RateLimiter } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { Claim, DeliveryStore } from './process-delivery.js';

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

export function deliveryStore(ctx: FleetContext, opts: EmailOptions): DeliveryStore {
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
