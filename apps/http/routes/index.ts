import { dailyRoutes } from './daily.js';
import { deadLetterRoutes } from './dead-letters.js';
import { failedImportRoutes } from './failed-imports.js';
import { therapistImportRoutes } from './therapist-imports.js';
import { unsubscribeRoutes } from './unsubscribe.js';
import type { HttpRouteModule } from './types.js';

export type { HttpRouteDeps, HttpRouteModule } from './types.js';

/**
 * Every feature's routes, mounted by createHttpApp in this order after /health, /ready,
 * /metrics and /dashboard. A feature adds one import and one entry here.
 */
export const routeModules: HttpRouteModule[] = [deadLetterRoutes, failedImportRoutes, therapistImportRoutes, dailyRoutes, unsubscribeRoutes];
