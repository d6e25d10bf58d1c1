import { Router } from 'express';
import { within, type FleetContext, type ReadinessResult } from '../../libs/runtime/index.js';
import { postgresAnswers, redisAnswers } from './reachable.js';

export interface CheckReport {
  ok: boolean;
  critical: boolean;
  ms: number;
  detail?: string;
}

export interface ReadyReport {
  /** ready: all checks pass; degraded: only non-critical checks fail (200); not_ready: 503. */
  status: 'ready' | 'degraded' | 'not_ready';
  phase: string;
  checks: Record<string, CheckReport>;
  /** Why the process is not ready or degraded, naming what is down. */
  reason?: string;
}

async function runCheck(fn: () => Promise<ReadinessResult>, critical: boolean, timeoutMs: number): Promise<CheckReport> {
  const started = performance.now();
  try {
    const result = await within(fn(), timeoutMs);
    const report: CheckReport = { ok: result.ok, critical: result.critical ?? critical, ms: Math.round(performance.now() - started) };
    if (result.detail) report.detail = result.detail;
    return report;
  } catch (err) {
    const e = err as Error & { code?: string };
    const detail = (e.code && !e.message.includes(e.code) ? `${e.code}: ${e.message}` : e.message || String(err)).slice(0, 300);
    return { ok: false, critical, ms: Math.round(performance.now() - started), detail };
  }
}

/**
 * PostgreSQL (`select 1`) and Redis (`PING`) are critical; the checks components add
 * (ctx.readiness, e.g. Kafka) are not, unless they say `critical: true`. All run at once,
 * each within READY_TIMEOUT_MS.
 */
export async function readiness(ctx: FleetContext): Promise<ReadyReport> {
  const timeoutMs = ctx.config.http.readyTimeoutMs;
  const entries: Array<[string, Promise<CheckReport>]> = [
    ['postgres', runCheck(() => postgresAnswers(ctx, timeoutMs).then(() => ({ ok: true })), true, timeoutMs)],
    // A process that just started is still connecting: it gets half the time limit for that.
    ['redis', runCheck(() => redisAnswers(ctx, timeoutMs / 2, timeoutMs), true, timeoutMs)],
    ...ctx.readiness.checks().map(({ name, check }) => [name, runCheck(check, false, timeoutMs)] as [string, Promise<CheckReport>]),
  ];
  const checks: Record<string, CheckReport> = {};
  for (const [name, p] of entries) checks[name] = await p;

  const phase = ctx.readiness.phase();
  const down = Object.entries(checks).filter(([, c]) => !c.ok);
  const criticalDown = down.filter(([, c]) => c.critical);
  const reasons: string[] = [];
  if (phase !== 'running') reasons.push(`process is ${phase}`);
  for (const [name, c] of down) reasons.push(`${name} ${c.critical ? 'down' : 'degraded'}${c.detail ? ` (${c.detail})` : ''}`);

  const status: ReadyReport['status'] = phase !== 'running' || criticalDown.length ? 'not_ready' : down.length ? 'degraded' : 'ready';
  const report: ReadyReport = { status, phase, checks };
  if (reasons.length) report.reason = reasons.join('; ');
  return report;
}

export function healthRoutes(ctx: FleetContext): Router {
  const router = Router();
  let last: ReadyReport['status'] = 'ready';
  router.get('/health', (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.json({ status: 'ok', uptimeSeconds: Math.round(process.uptime()) });
  });
  router.get('/ready', async (_req, res) => {
    const report = await readiness(ctx);
    // Logged when the answer changes, not on every probe.
    if (report.status !== last) {
      const level = report.status === 'ready' ? 'info' : 'warn';
      ctx.log[level]({ status: report.status, reason: report.reason }, 'readiness changed');
      last = report.status;
    }
    res.setHeader('Cache-Control', 'no-store');
    res.status(report.status === 'not_ready' ? 503 : 200).json(report);
  });
  return router;
}
