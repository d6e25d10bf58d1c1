import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Router, type Request, type RequestHandler } from 'express';
import { recordAudit } from '../../libs/db/repositories/audit.js';
import { catalog, jobNames } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { operatorOf } from './auth.js';

export const DASHBOARD_PATH = '/dashboard';

function describeQueue(queue: string): string {
  return jobNames
    .filter((n) => catalog[n].queue === queue)
    .map((n) => `${n}: ${catalog[n].description}`)
    .join('; ');
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
      ? new BullMQAdapter(queue, {
          readOnlyMode: true,
          allowRetries: false,
          description: `Dead letters of ${name.replace(/-dlq$/, '')}: jobs that will not be retried. Requeue or discard them on /ops (audited).`,
        })
      : new BullMQAdapter(queue, { allowRetries: false, description: describeQueue(name) }),
  );
  createBullBoard({
    queues: adapters,
    serverAdapter,
    options: {
      uiConfig: {
        boardTitle: 'Curavani Fleet',
        hideDocsLink: true,
        miscLinks: [{ text: 'Dead letters (requeue / discard)', url: '/ops' }],
      },
    },
  });
  const router = Router();
  router.use(auditWrites(ctx));
  router.use(refuseRetries());
  router.use(serverAdapter.getRouter() as Router);
  return router;
}
