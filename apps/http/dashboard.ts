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

/**
 * Retrying a failed job from Bull Board would run it again behind the back of its dead
 * letter (no audit, no domain bookkeeping, and a later requeue would run it twice): the
 * fleet's failed jobs are retried through the dead-letter page (/ops) or `fleet dlq requeue`.
 * Bull Board hides the button (`allowRetries: false`); this refuses the API call as well.
 */
function refuseRetries(): Router {
  const router = Router();
  const refuse: RequestHandler = (_req, res) => {
    res.status(405).json({
      error: { key: 'ERRORS.QUEUE_READ_ONLY' },
      message: 'Failed jobs are retried through the audited dead-letter page /ops or `fleet dlq requeue`, not from here.',
      code: 'retry_through_dead_letters',
    });
  };
  router.put('/api/queues/:queueName/retry/:queueStatus', refuse);
  router.put('/api/queues/:queueName/:jobId/retry', refuse);
  // "Duplicate" and "add job" would bypass the catalog's validation and idempotency keys
  // (and duplicating a dead-lettered job is a retry by another name).
  router.post('/api/queues/:queueName/add', (_req, res) => {
    res.status(405).json({
      error: { key: 'ERRORS.QUEUE_READ_ONLY' },
      message: 'Jobs are enqueued by the fleet (validated, with idempotency keys); failed ones are requeued on /ops or with `fleet dlq requeue`.',
      code: 'enqueue_through_fleet',
    });
  });
  // Editing a job's data skips the same validation, leaves the job id (its idempotency key,
  // e.g. patient-import.ledger.7) naming something else than the data, and would let personal
  // data into a payload.
  router.patch('/api/queues/:queueName/:jobId/update-data', (_req, res) => {
    res.status(405).json({
      error: { key: 'ERRORS.QUEUE_READ_ONLY' },
      message: 'Job data is written by the fleet (validated, ids only, matching the job id); it cannot be edited here.',
      code: 'job_data_read_only',
    });
  });
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
  router.use(refuseRetries());
  router.use(withoutThirdPartyLinks());
  const board = serverAdapter.getRouter() as Express;
  // Bull Board serves from an Express app of its own, which would name itself in every answer.
  board.disable('x-powered-by');
  router.use(board);
  return router;
}
