import { Counter } from 'prom-client';
import { countExpiredContents, removeExpiredContents } from '../../libs/db/repositories/deliveries-retention.js';
import { oncePerRegistry } from '../../libs/metrics/index.js';
import { catalog, listDeadLetters } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { sweepEmailContents, type ContentRetentionResult } from './process-retention.js';

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
