import { listStaleClaims, listStalePending } from '../../libs/db/repositories/deliveries.js';
import { catalog, isLiveJobState, jobIdFor } from '../../libs/queues/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import { restoreEmailDeadLetters } from './dead-letters.js';
import { sweepDeliveries } from './sweep.js';

/** Longest wait list on which the sweep checks pending deliveries' jobs one by one. */
const SWEEP_MAX_WAITING = 5_000;

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
