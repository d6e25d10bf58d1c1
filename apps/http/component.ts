import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { settlesWithin, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createHttpApp, type HttpDeps } from './app.js';
import { DASHBOARD_PATH } from './dashboard.js';

export interface HttpComponent extends Component {
  /** The address actually bound (HTTP_PORT=0 picks a free port); null before start. */
  address(): AddressInfo | null;
}

/**
 * Serves the HTTP app on HTTP_HOST:HTTP_PORT. On stop it refuses new connections, lets
 * requests in flight finish within the time limit, then closes what is left.
 */
export function httpComponent(ctx: FleetContext, opts: Omit<HttpDeps, 'ctx'> = {}): HttpComponent {
  let server: Server | null = null;
  const { host, port } = ctx.config.http;
  return {
    name: 'http',
    address: () => (server?.address() as AddressInfo | null) ?? null,
    async start() {
      const { app, access } = createHttpApp({ ctx, ...opts });
      const s = createServer(app);
      s.keepAliveTimeout = 5_000;
      s.headersTimeout = 10_000;
      s.requestTimeout = 30_000;
      await new Promise<void>((resolve, reject) => {
        s.once('error', (err: NodeJS.ErrnoException) => {
          // Say which setting chose the address.
          if (err.code === 'EADDRINUSE') err.message = `${err.message}: another process uses this address; set HTTP_PORT (or HTTP_HOST) to a free one`;
          else if (err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') err.message = `${err.message}: check HTTP_HOST and HTTP_PORT`;
          reject(err);
        });
        s.listen(port, host, () => {
          s.off('error', reject);
          resolve();
        });
      });
      s.on('error', (err) => ctx.log.error({ err }, 'http server error'));
      server = s;
      const bound = s.address() as AddressInfo;
      const base = `http://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
      ctx.log.info({ url: base, dashboard: `${base}${DASHBOARD_PATH}`, auth: access.mode }, 'http app listening');
      if (access.mode === 'loopback-open') {
        ctx.log.warn({ host }, 'dashboard has no credentials: served without login to requests from this machine only (set DASHBOARD_USER and DASHBOARD_PASSWORD)');
      } else if (access.mode === 'refused') {
        const why = access.because === 'production' ? 'NODE_ENV=production' : 'HTTP_HOST is not a loopback address';
        ctx.log.error({ host }, `dashboard DISABLED: no DASHBOARD_USER/DASHBOARD_PASSWORD and ${why}; the operator pages (/dashboard, /ops, /imports, /therapist-imports, /daily) answer 403 until credentials are set`);
      }
    },
    async stop(timeoutMs) {
      const s = server;
      if (!s) return;
      server = null;
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      // Keep-alive connections whose request finished after close() began become idle
      // later: close them as they do, instead of waiting for their keep-alive timeout.
      s.closeIdleConnections();
      const sweep = setInterval(() => s.closeIdleConnections(), 50);
      const outcome = (await settlesWithin(closed, timeoutMs)) ? 'graceful' : 'forced';
      clearInterval(sweep);
      if (outcome === 'forced') {
        s.closeAllConnections();
        await closed;
      }
      ctx.log.info({ outcome }, 'http app stopped');
    },
  };
}
