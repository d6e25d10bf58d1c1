import { setTimeout as sleep } from 'node:timers/promises';
import { createMailDriver } from '../../libs/mail/index.js';
import { addDeadLetter, catalog, jobIdFor, redisRateLimiter, type Handlers } from '../../libs/queues/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import { workerComponent } from '../../libs/runtime/index.js';
import { emailMetrics } from './metrics.js';
import { processDelivery } from './process-delivery.js';
import { emailProviderComponent } from './provider-readiness.js';
import { emailSweepComponent } from './sweep-component.js';
import { deliveryStore, type EmailOptions } from './wiring.js';

/** Longest wait list on which carried jobs are removed (see discardCarriedJobs). */
const DISCARD_MAX_WAITING = 2_000;

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

/** Everything role `email` runs: the `email-send` workers and the sweep. */
export function emailComponents(ctx: FleetContext, opts: EmailOptions = {}): Component[] {
  return [workerComponent(ctx, 'email', emailHandlers(ctx, opts)), emailSweepComponent(ctx), emailProviderComponent(ctx)];
}
