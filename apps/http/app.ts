import express, { type ErrorRequestHandler, type Express, type Request, type RequestHandler, type Response } from 'express';
import type { DeadLetterHooks } from '../../libs/ops/dead-letters.js';
import { urlTarget } from '../../libs/config/index.js';
import { redisTarget } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { dashboardAccess, rejectCrossSiteWrites, requireDashboardAccess, type DashboardAccess } from './auth.js';
import { DASHBOARD_PATH, dashboardRouter } from './dashboard.js';
import { healthRoutes } from './health.js';
import { FAVICON_PATH, FAVICON_SVG, html, page } from './html.js';
import { metricsRoutes } from './metrics.js';
import { postgresAnswers, redisAnswers, SERVICE_WAIT_MS } from './reachable.js';
import { routeModules, type HttpRouteModule } from './routes/index.js';

/** Pages with inline styles only, forms posting to this app, never framed. */
export const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export interface HttpDeps {
  ctx: FleetContext;
  deadLetterHooks?: DeadLetterHooks;
  /** The feature routes to mount; default: the list in routes/index.ts. */
  routes?: HttpRouteModule[];
}

export interface HttpApp {
  app: Express;
  access: DashboardAccess;
}

/**
 * The fleet's HTTP app: /health, /ready, /metrics (open), Bull Board at /dashboard and the
 * operator routes (behind the dashboard's authentication), and the feature routes of
 * routes/index.ts. Opens nothing itself: everything comes from the FleetContext.
 */
export function createHttpApp(deps: HttpDeps): HttpApp {
  const { ctx } = deps;
  const access = dashboardAccess(ctx.config.http, ctx.config.env);
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use((_req, res, next) => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // Unsubscribe links carry tokens in the path: never leak them to other sites.
    res.setHeader('Referrer-Policy', 'no-referrer');
    // The app's own pages have no scripts and load nothing: if a value from a file ever
    // slipped past the escaping, the browser still runs nothing. Bull Board sets its own.
    res.setHeader('Content-Security-Policy', PAGE_CSP);
    next();
  });

  app.use(healthRoutes(ctx));
  // The pages' tab icon; a browser that asks for /favicon.ico anyway (a JSON page, an old
  // bookmark) gets no content instead of a 404 page.
  app.get(FAVICON_PATH, (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=86400');
    res.type('image/svg+xml').send(FAVICON_SVG);
  });
  app.get('/favicon.ico', (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=86400');
    res.status(204).end();
  });
  app.use(metricsRoutes(ctx));

  const operatorGuard = [requireDashboardAccess(access, ctx.log), rejectCrossSiteWrites()];
  const queuesReachable = requireQueues(ctx);
  const databaseReachable = requireDatabase(ctx);
  app.use(DASHBOARD_PATH, ...operatorGuard, queuesReachable, dashboardRouter(ctx));

  const routeDeps = { ctx, deadLetterHooks: deps.deadLetterHooks ?? {} };
  for (const mod of deps.routes ?? routeModules) {
    const mark: RequestHandler = (_req, res, next) => {
      res.locals.mount = mod.path;
      next();
    };
    const needs = [...(mod.queues ? [queuesReachable] : []), ...(mod.database ? [databaseReachable] : [])];
    if (mod.access === 'operator') app.use(mod.path, mark, ...operatorGuard, ...needs, mod.router(routeDeps));
    else app.use(mod.path, mark, mod.router(routeDeps));
  }

  app.get('/', (_req, res) => {
    res.redirect(302, DASHBOARD_PATH);
  });

  app.use((_req, res) => {
    res.status(404).type('html').send(page('Not found', html`<h1>Not found</h1>`));
  });
  const onError: ErrorRequestHandler = (err: Error & { status?: number; type?: string }, req, res, _next) => {
    // Body parser errors (bad JSON, too large) carry their status.
    const status = typeof err.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 500;
    // The route pattern, not the path: paths can carry tokens (/unsubscribe/:token).
    const mount = (res.locals.mount as string | undefined) ?? '';
    const route = `${mount}${(req.route as { path?: string } | undefined)?.path ?? ''}` || '(unmatched)';
    if (status === 500) ctx.log.error({ err, route, method: req.method }, 'http request failed');
    if (res.headersSent) return;
    const internalError = () => {
      res.status(status).json({ error: status === 500 ? 'internal_error' : 'bad_request', message: status === 500 ? 'internal error (see the fleet log)' : err.message });
    };
    // An operator page that failed because PostgreSQL went away (after its check at the start
    // of the request) says so, as the check would have: asked again rather than read from the
    // error, which comes wrapped differently from drizzle and from postgres.js.
    // (res.locals.operator: set by the dashboard's authentication, so on operator pages only.)
    if (status !== 500 || res.locals.operator === undefined) return internalError();
    void postgresAnswers(ctx, SERVICE_WAIT_MS).then(internalError, (down: unknown) => postgresUnavailable(ctx, req, res, down));
  };
  app.use(onError);
  return { app, access };
}

/**
 * Pages that read the queues answer 503 within SERVICE_WAIT_MS while Redis is not connected or
 * does not answer: BullMQ waits for its connection, and a command on a connection to a stopped or
 * hung Redis (still `ready`) waits for ever, so they would hang (for as long as Redis is away or
 * silent) instead of saying why.
 */
function requireQueues(ctx: FleetContext): RequestHandler {
  /** One check shared by the requests that arrive meanwhile (one listener and one PING, not one each). */
  let checking: Promise<string | null> | null = null;
  /** null: Redis answers now, or once connected within the wait (a process that just started, a reconnect). */
  const problem = (): Promise<string | null> =>
    (checking ??= redisAnswers(ctx, SERVICE_WAIT_MS, SERVICE_WAIT_MS)
      .then(
        (r) => (r.ok ? null : `connection ${ctx.producerRedis.status}`),
        (err: unknown) => (err instanceof Error ? err.message : String(err)),
      )
      .finally(() => {
        checking = null;
      }));
  return (req, res, next) => {
    void problem().then((why) => {
      if (!why) return next();
      const message = `Redis is not reachable at ${redisTarget(ctx.config.queues.redisUrl)} (REDIS_URL; ${why}): the queues cannot be read now. Nothing is lost: jobs wait in Redis and go on once it is back, and so does this page. GET /ready says what is down.`;
      serviceUnavailable(req, res, { error: 'redis_unavailable', title: 'Redis not reachable', message });
    });
  };
}

/**
 * Pages that read PostgreSQL answer 503 within SERVICE_WAIT_MS while it does not answer (refused,
 * or a pool stuck connecting to a silent server: postgres.js waits up to 30 s per connection
 * attempt), naming it, instead of a 500 after up to a minute.
 */
function requireDatabase(ctx: FleetContext): RequestHandler {
  return (req, res, next) => {
    void postgresAnswers(ctx, SERVICE_WAIT_MS).then(
      () => next(),
      (err: unknown) => postgresUnavailable(ctx, req, res, err),
    );
  };
}

function postgresUnavailable(ctx: FleetContext, req: Request, res: Response, err: unknown): void {
  const e = err as { message?: string; code?: unknown };
  const why = typeof e.code === 'string' && !String(e.message).includes(e.code) ? `${e.code}: ${e.message}` : String(e.message ?? err);
  const message = `PostgreSQL is not reachable at ${urlTarget(ctx.config.db.url, 5432, 'DATABASE_URL')} (DATABASE_URL; ${why.slice(0, 300)}): the import records and the operator actions cannot be read now. This page works again once it is back; GET /ready says what is down. Meanwhile the queues are on /dashboard, and \`fleet dlq list\` lists the dead letters: both read Redis only.`;
  serviceUnavailable(req, res, { error: 'postgres_unavailable', title: 'PostgreSQL not reachable', message });
}

/** 503 with a page saying which service is down (JSON for the JSON APIs and clients that do not take HTML). */
function serviceUnavailable(req: Request, res: Response, what: { error: string; title: string; message: string }): void {
  res.status(503).setHeader('Retry-After', '10');
  if (req.path.startsWith('/api/') || req.is('application/json') === 'application/json' || !req.accepts('html')) {
    res.json({ error: what.error, message: what.message });
    return;
  }
  res.type('html').send(page(`${what.title} · Curavani Fleet`, html`<h1>${what.title}</h1><p class="reason">${what.message}</p>`, { nav: true }));
}
