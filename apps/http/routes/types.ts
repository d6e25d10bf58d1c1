import type { Router } from 'express';
import type { DeadLetterHooks } from '../../../libs/ops/dead-letters.js';
import type { FleetContext } from '../../../libs/runtime/index.js';

export interface HttpRouteDeps {
  ctx: FleetContext;
  /** Domain bookkeeping for operator actions on dead letters (apps/fleet/roles.ts). */
  deadLetterHooks: DeadLetterHooks;
}

/**
 * A group of routes a feature adds to the HTTP app. List it in ./index.ts.
 *
 * - `access: 'public'`: no authentication and no cookies (e.g. unsubscribe links in emails).
 *   Parse bodies yourself (`express.urlencoded`, `express.json`) inside your router.
 * - `access: 'operator'`: behind the dashboard's authentication (basic auth or loopback, see
 *   auth.ts) and the cross-site write guard; `operatorOf(res)` names the operator for audits.
 */
export interface HttpRouteModule {
  name: string;
  /** Path prefix the router is mounted at, e.g. '/unsubscribe' or '/ops'. */
  path: string;
  access: 'public' | 'operator';
  /** Reads the queues (Redis): answered with a 503 while Redis is not connected. */
  queues?: boolean;
  /** Reads PostgreSQL: answered with a 503 naming it while it does not answer (see app.ts). */
  database?: boolean;
  router(deps: HttpRouteDeps): Router;
}
