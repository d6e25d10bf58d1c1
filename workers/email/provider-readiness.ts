import { retryingDeliveries } from '../../libs/db/repositories/deliveries.js';
import type { Component, FleetContext, ReadinessResult } from '../../libs/runtime/index.js';

/** A provider request that failed this recently, with its email still waiting for a retry, marks the provider as failing. */
export const PROVIDER_FAILING_WINDOW_MS = 15 * 60_000;
/** `/ready` may be asked every few seconds: the answer is reused this long (one small query per window). */
const CACHE_MS = 15_000;
/** Longest provider error shown in `/ready`. */
const MAX_DETAIL_CHARS = 200;

/**
 * For `GET /ready` of a process with role `email` (not critical: mail waits in the database and
 * is retried, and the process keeps its other work): `degraded` while emails wait for a retry
 * after a provider request failed within PROVIDER_FAILING_WINDOW_MS, naming how many and the
 * latest error (it names the provider's address and the cause, never a recipient or the key).
 * The email alerts (FleetEmailsFailing, FleetJobsRetrying) page; this shows it where a load
 * balancer, `fleet status` and an operator's curl look first.
 */
export function emailProviderComponent(ctx: FleetContext): Component {
  let cached: { at: number; result: ReadinessResult } | undefined;
  const check = async (): Promise<ReadinessResult> => {
    const now = ctx.clock.now().getTime();
    if (cached && now - cached.at < CACHE_MS) return cached.result;
    const r = await retryingDeliveries(ctx.database.db, { since: new Date(now - PROVIDER_FAILING_WINDOW_MS) });
    const failing = r.count > 0 && r.lastAt !== null;
    const error = (r.lastError ?? '?').slice(0, MAX_DETAIL_CHARS);
    const result: ReadinessResult = failing
      ? { ok: false, detail: `${r.count} email(s) wait for a retry after a provider request that failed in the last 15 minutes; the latest at ${r.lastAt!.toISOString()}: ${error}` }
      : { ok: true };
    cached = { at: now, result };
    return result;
  };
  return { name: 'email-provider', start: async () => {}, stop: async () => {}, ready: check };
}
