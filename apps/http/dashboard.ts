import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Router, type Express, type Request, type RequestHandler } from 'express';
import { recordAudit } from '../../libs/db/repositories/audit.js';
import { catalog, jobNames } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { operatorOf } from './auth.js';

export const DASHBOARD_PATH = '/dashboard';

/**
 * Bull Board's page runs its own scripts and styles from /dashboard/static and calls its API.
 * Nothing from elsewhere: its stylesheet link to Google Fonts is left out of the page
 * (withoutThirdPartyLinks) and would be refused here (the operator's browser tells no third
 * party when the dashboard is open; system fonts are used instead).
 */
const BOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'";

/** Bull Board's page links Google Fonts; the CSP would block the request (and the browser log it as an error). */
const THIRD_PARTY_STYLESHEET = /<link\b[^>]*\bhref="https?:\/\/[^"]*"[^>]*rel="stylesheet"[^>]*>\s*/g;

/**
 * Bull Board's page without its stylesheet links to other sites: the browser then asks no
 * third party and reports no CSP violation on every visit (the CSP above still refuses any
 * other). A page without such a link passes unchanged.
 */
function withoutThirdPartyLinks(): RequestHandler {
  return (_req, res, next) => {
    const render = res.render.bind(res);
    res.render = ((view: string, options?: object, callback?: (err: Error | null, page: string) => void) => {
      // A caller with a callback of its own sends the page itself: left as it asked.
      if (typeof options === 'function' || callback) return render(view, options as object, callback);
      render(view, options ?? {}, (err: Error | null, page: string) => {
        if (err) return next(err);
        res.send(page.replace(THIRD_PARTY_STYLESHEET, ''));
      });
    }) as typeof res.render;
    next();
  };
}

function describeQueue(queue: string): string {
  return jobNames
    .filter((n) => catalog[n].queue === queue)
    .map((n) => `${n}: ${catalog[n].description}`)
    .join('; ');
}

/**
 * A dead-letter queue in Bull Board: read-only, no "no workers" warning (nothing consumes a
 * dead-letter queue by design; operators do, on /ops), and each entry named by its reason.
 */
class DeadLetterQueueAdapter extends BullMQAdapter {
  constructor(queue: ConstructorParameters<typeof BullMQAdapter>[0], original: string) {
    super(queue, {
      readOnlyMode: true,
      allowRetries: false,
      description: `Dead letters of ${original}: jobs that will not be retried, waiting for an operator. Requeue or discard them on /ops (audited).`,
    });
    this.setFormatter('name', (job: { name?: string; data?: { reason?: unknown } }) => {
      const reason = typeof job.data?.reason === 'string' ? job.data.reason : '';
      const label = reason ? `${job.name ?? ''}: ${reason}` : (job.name ?? '');
      return label.length > 140 ? `${label.slice(0, 139)}…` : label;
    });
  }

  override async getWorkers() {
    return null;
  }
}

/** A refused Bull Board call: the toast's title ("Forbidden") and the message saying where it is done instead. */
function refusal(code: string, message: string): RequestHandler {
  return (_req, res) => {
    res.status(405).json({ error: { key: 'ERRORS.FORBIDDEN' }, message, code });
  };
}

/**
 * What Bull Board offers but the fleet refuses, each with where it is done instead. Bull
 * Board has no option to hide these buttons (except retry: `allowRetries: false`), so the
 * API calls are refused here, before its router.
 */
function refuseUnsafeActions(): Router {
  const router = Router();
  // Retrying a failed job from here would run it again behind the back of its dead letter (no
  // audit, no domain bookkeeping, and a later requeue would run it twice).
  const retry = refusal('retry_through_dead_letters', 'Failed jobs are retried through the audited dead-letter page /ops or `fleet dlq requeue`, not from here.');
  router.put('/api/queues/:queueName/retry/:queueStatus', retry);
  router.put('/api/queues/:queueName/:jobId/retry', retry);
  // "Duplicate" and "add job" would bypass the catalog's validation and idempotency keys
  // (and duplicating a dead-lettered job is a retry by another name).
  router.post(
    '/api/queues/:queueName/add',
    refusal('enqueue_through_fleet', 'Jobs are enqueued by the fleet (validated, with idempotency keys); failed ones are requeued on /ops or with `fleet dlq requeue`.'),
  );
  // Editing a job's data skips the same validation, leaves the job id (its idempotency key,
  // e.g. patient-import.ledger.7) naming something else than the data, and would let personal
  // data into a payload.
  router.patch(
    '/api/queues/:queueName/:jobId/update-data',
    refusal('job_data_read_only', 'Job data is written by the fleet (validated, ids only, matching the job id); it cannot be edited here.'),
  );
  // The schedules come from POLL_CRON, WEEKLY_CRON and RETENTION_CRON and are registered at
  // start: one removed here would stop (an hourly poll, the weekly emails, the nightly
  // retention sweep) until some process restarted, one edited here would differ from the
  // configuration until then. "Run now" stays: it adds one job and leaves the schedule alone.
  const schedule = refusal(
    'schedule_from_config',
    'Schedules come from the configuration (POLL_CRON, WEEKLY_CRON, RETENTION_CRON) and are registered at start; change the variable and restart. To hold a schedule\'s jobs for a while, pause its queue.',
  );
  router.put('/api/queues/:queueName/job-schedulers/:schedulerId/remove', schedule);
  router.patch('/api/queues/:queueName/job-schedulers/:schedulerId', schedule);
  // Emptying or obliterating a queue drops jobs whose rows (ledger, tracking, deliveries)
  // still say queued: imports and emails would wait for ever. Dead letters are discarded one
  // by one, with a reason, on /ops.
  const drop = refusal('jobs_are_not_dropped', 'The fleet does not drop waiting jobs: each stands for a registration, a file or an email. Dead letters are discarded on /ops (with a reason); failed and completed jobs can be cleaned here.');
  router.put('/api/queues/:queueName/empty', drop);
  router.put('/api/queues/:queueName/obliterate', drop);
  // A queue-wide concurrency or rate limit stored in Redis would outlive the configuration
  // (MAIL_RATE_PER_SECOND, the catalog's concurrency) without showing anywhere else.
  const limits = refusal('limits_from_config', 'Concurrency and rate limits come from the fleet\'s configuration (the job catalog, MAIL_RATE_PER_SECOND), not from here.');
  router.put('/api/queues/:queueName/concurrency', limits);
  router.put('/api/queues/:queueName/rate-limit', limits);
  return router;
}

/** Writes every state-changing Bull Board call that succeeded (pause, clean, promote, ...) to the audit table. */
function auditWrites(ctx: FleetContext): RequestHandler {
  return (req: Request, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    const path = req.path;
    res.on('finish', () => {
      if (res.statusCode >= 400) return;
      const target = `${DASHBOARD_PATH}${path}`.slice(0, 300);
      recordAudit(ctx.database.db, { actor: operatorOf(res), action: `dashboard.${req.method.toLowerCase()}`, target }).catch(
        (err: unknown) => ctx.log.error({ err, path }, 'could not audit a dashboard action'),
      );
    });
    next();
  };
}

/**
 * Bull Board over every fleet queue and every dead-letter queue. Dead-letter queues are
 * read-only: they are worked through /ops (audited requeue/discard with a reason).
 */
export function dashboardRouter(ctx: FleetContext): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  const adapters = ctx.queues.allQueues().map(({ name, queue, deadLetter }) =>
    deadLetter
      ? new DeadLetterQueueAdapter(queue, name.replace(/-dlq$/, ''))
      : new BullMQAdapter(queue, { allowRetries: false, description: describeQueue(name) }),
  );
  createBullBoard({
    queues: adapters,
    serverAdapter,
    options: {
      uiConfig: {
        boardTitle: 'Curavani Fleet',
        hideDocsLink: true,
        miscLinks: [
          { text: 'Dead letters (requeue / discard)', url: '/ops' },
          { text: 'Failed imports', url: '/imports' },
          { text: 'Therapist imports', url: '/therapist-imports' },
          { text: 'Daily health', url: '/daily' },
        ],
      },
    },
  });
  const router = Router();
  router.use((_req, res, next) => {
    res.setHeader('Content-Security-Policy', BOARD_CSP);
    next();
  });
  router.use(auditWrites(ctx));
  router.use(refuseUnsafeActions());
  router.use(withoutThirdPartyLinks());
  const board = serverAdapter.getRouter() as Express;
  // Bull Board serves from an Express app of its own, which would name itself in every answer.
  board.disable('x-powered-by');
  router.use(board);
  return router;
}
