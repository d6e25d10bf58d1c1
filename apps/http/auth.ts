import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Logger } from '../../libs/log/index.js';
import { page } from './html.js';

export interface DashboardCredentials {
  user: string;
  password: string;
}

/** How the operator pages (Bull Board, dead letters) are protected in this process. */
export type DashboardAccess =
  | { mode: 'basic'; credentials: DashboardCredentials }
  /** No credentials, but the app listens on loopback only: served to local requests. */
  | { mode: 'loopback-open' }
  /**
   * No credentials, and a non-loopback address or NODE_ENV=production: refused with a 403 page.
   * (In production the app serves the unsubscribe links of PUBLIC_BASE_URL, so it is reachable
   * from outside through a proxy, which need not say so: see dashboardAccess.)
   */
  | { mode: 'refused'; because: 'non-loopback' | 'production' };

export const REALM = 'Curavani Fleet';

/** 127.0.0.0/8, ::1, ::ffff:127.x and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(h);
  return false;
}

/** The host name of a Host header (`localhost:3000`, `[::1]:3000`, `127.0.0.1`), without the port. */
export function hostHeaderName(header: string | undefined): string {
  const h = (header ?? '').trim();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.indexOf(':');
  return colon >= 0 && colon === h.lastIndexOf(':') ? h.slice(0, colon) : h;
}

/**
 * In production the operator pages need credentials whatever HTTP_HOST says: the emails'
 * unsubscribe links (PUBLIC_BASE_URL, an https address patients reach) lead to this app, so a
 * proxy forwards the public's requests to it, and a proxy on this machine that adds no
 * X-Forwarded-For and keeps its own Host (nginx's plain `proxy_pass http://127.0.0.1:3000`)
 * makes every request look local.
 */
export function dashboardAccess(
  http: { host: string; dashboardUser?: string | undefined; dashboardPassword?: string | undefined },
  env: string = 'development',
): DashboardAccess {
  if (http.dashboardUser !== undefined && http.dashboardPassword !== undefined) {
    return { mode: 'basic', credentials: { user: http.dashboardUser, password: http.dashboardPassword } };
  }
  if (env === 'production') return { mode: 'refused', because: 'production' };
  return isLoopbackHost(http.host) ? { mode: 'loopback-open' } : { mode: 'refused', because: 'non-loopback' };
}

/** Parses `Authorization: Basic base64(user:password)`; null when absent or malformed. */
export function parseBasicAuth(header: string | undefined): DashboardCredentials | null {
  if (!header) return null;
  const match = /^\s*basic\s+([A-Za-z0-9+/=._~-]+)\s*$/i.exec(header);
  if (!match) return null;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Compares in constant time whatever the lengths (both sides are hashed to 32 bytes first). */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a, 'utf8').digest();
  const hb = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(ha, hb);
}

export function credentialsMatch(given: DashboardCredentials | null, expected: DashboardCredentials): boolean {
  if (!given) return false;
  // Both comparisons always run, so the time does not tell which of the two was wrong.
  const userOk = safeEqual(given.user, expected.user);
  const passwordOk = safeEqual(given.password, expected.password);
  return userOk && passwordOk;
}

/** The operator name for the audit table: `dashboard:<user>` or `dashboard:local`. */
export function operatorOf(res: Response): string {
  return (res.locals.operator as string | undefined) ?? 'dashboard:unknown';
}

const REFUSED_BECAUSE = {
  'non-loopback':
    'This fleet process listens on a non-loopback address and has no dashboard credentials, so it refuses to show queues, jobs and dead letters to anyone who can reach it.',
  production:
    'This fleet process runs with NODE_ENV=production and has no dashboard credentials, so it refuses to show queues, jobs and dead letters to anyone: in production the app is reachable from outside (the unsubscribe links), and a proxy in front of it can make any request look local.',
  'not-local':
    'This fleet process has no dashboard credentials, so it shows queues, jobs and dead letters only to requests made on this machine directly; this request came through a proxy or from elsewhere.',
  'foreign-host':
    'This fleet process has no dashboard credentials, so it shows queues, jobs and dead letters only to requests addressed to this machine by a loopback name (localhost, 127.0.0.1, [::1]); this request named another host, as a web page that reaches the port by DNS rebinding does.',
};

function refusedPage(why: keyof typeof REFUSED_BECAUSE): string {
  const because = REFUSED_BECAUSE[why];
  return page(
    'Dashboard disabled',
    `<h1>Dashboard disabled: no credentials configured</h1>
<p>${because}</p>
<p>To enable the dashboard, set both variables and restart the process:</p>
<pre>DASHBOARD_USER=operator
DASHBOARD_PASSWORD=&lt;a long random secret&gt;</pre>
<p>Or, for local use only, set <code>HTTP_HOST=127.0.0.1</code> (no credentials needed, reachable from this machine only).</p>
<p><code>/health</code>, <code>/ready</code> and <code>/metrics</code> are not affected.</p>`,
  );
}

/**
 * Headers a reverse proxy adds to say whom it forwards for: X-Forwarded-For and Forwarded, and
 * also those of proxies set up without them (nginx with only `proxy_set_header X-Real-IP`, Via).
 */
const PROXY_HEADERS = ['x-forwarded-for', 'forwarded', 'x-real-ip', 'x-forwarded-host', 'x-forwarded-proto', 'via'] as const;

/**
 * Guards the operator pages: basic auth with a timing-safe compare when credentials are
 * configured; without them, local requests addressed to a loopback name only when listening
 * on loopback; else 403.
 */
export function requireDashboardAccess(access: DashboardAccess, log: Logger): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Frame-Options', 'DENY');
    // The operator pages carry no tokens in their paths. Under no-referrer a browser sends
    // `Origin: null` with the pages' own form posts and Bull Board's API calls, and over plain
    // HTTP (not localhost) no Sec-Fetch-Site either: then they could not be told apart from a
    // post by another site that chose no-referrer for itself. same-origin gives them their origin.
    res.setHeader('Referrer-Policy', 'same-origin');
    if (access.mode === 'refused') {
      res.status(403).type('html').send(refusedPage(access.because));
      return;
    }
    if (access.mode === 'loopback-open') {
      // Defence in depth: a reverse proxy on this machine would make every request look
      // local. A forwarded request, or one from elsewhere, needs credentials.
      const forwarded = PROXY_HEADERS.some((h) => req.headers[h] !== undefined);
      if (forwarded || !isLoopbackHost(req.socket.remoteAddress ?? '')) {
        res.status(403).type('html').send(refusedPage('not-local'));
        return;
      }
      // A web page on any site can point its own host name at 127.0.0.1 (DNS rebinding): the
      // browser then sends it here as a same-origin request from this machine, with its name in Host.
      if (!isLoopbackHost(hostHeaderName(req.headers.host))) {
        res.status(403).type('html').send(refusedPage('foreign-host'));
        return;
      }
      res.locals.operator = 'dashboard:local';
      next();
      return;
    }
    const given = parseBasicAuth(req.headers.authorization);
    if (!credentialsMatch(given, access.credentials)) {
      if (given) log.warn({ path: req.path }, 'dashboard: wrong credentials');
      res.setHeader('WWW-Authenticate', `Basic realm="${REALM}", charset="UTF-8"`);
      res.status(401).type('html').send(page('Authentication required', `<h1>Authentication required</h1><p>Log in with the dashboard credentials (DASHBOARD_USER / DASHBOARD_PASSWORD).</p>`));
      return;
    }
    res.locals.operator = `dashboard:${access.credentials.user}`;
    next();
  };
}

/**
 * Refuses state-changing requests sent by another site (a browser replays basic-auth
 * credentials on cross-site form posts). Browsers say where a request comes from in
 * Sec-Fetch-Site: only same-origin (or none: typed by the user) passes. Browsers send that
 * header only to https and localhost addresses; without it, the Origin must be this host.
 * `Origin: null` is refused then: it is what a page of another site gets by choosing
 * Referrer-Policy no-referrer for itself (or by posting from a sandboxed frame), and the
 * operator pages' own requests carry their origin (Referrer-Policy same-origin, set by
 * requireDashboardAccess). Clients that send neither header (curl, scripts) are not browsers
 * and pass on their credentials.
 */
export function rejectCrossSiteWrites(): RequestHandler {
  return (req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    let allowed: boolean;
    if (site !== undefined) {
      allowed = site === 'same-origin' || site === 'none';
    } else if (origin === 'null') {
      allowed = false;
    } else if (origin !== undefined) {
      try {
        allowed = new URL(origin).host === req.headers.host;
      } catch {
        allowed = false;
      }
    } else {
      allowed = true;
    }
    if (!allowed) {
      res.status(403).json({ error: 'cross_site_request', message: 'state-changing requests must come from the dashboard itself' });
      return;
    }
    next();
  };
}
