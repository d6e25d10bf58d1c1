/**
 * A Resend stand-in for chaos drills: the test stand-in (libs/testing/resend-stand-in.ts) on an
 * inner port, behind a front port the fleet talks to (RESEND_BASE_URL) whose failure mode can be
 * switched while it runs:
 *
 *   npx tsx scripts/drill/resend-drill.ts --port 4392 --rate 2
 *   curl -XPOST 127.0.0.1:4392/_drill/mode -d '{"mode":"500"}'      # every request 500
 *   curl -XPOST 127.0.0.1:4392/_drill/mode -d '{"mode":"429","retryAfter":5}'
 *   curl -XPOST 127.0.0.1:4392/_drill/mode -d '{"mode":"hang"}'     # accepted, never answered
 *   curl -XPOST 127.0.0.1:4392/_drill/mode -d '{"mode":"ok"}'
 *   curl -XPOST 127.0.0.1:4392/_drill/refuse-connections -d '{"seconds":60}'  # port closed (ECONNREFUSED)
 *   curl 127.0.0.1:4392/_drill/stats            # counts, per-mode answers, duplicates
 *   curl 127.0.0.1:4392/_drill/recipients       # recipient -> messages (JSON object)
 *
 * The control API answers on a second port too (--control-port), which stays open while the
 * front port refuses connections.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';
import { startResendStandIn } from '../../libs/testing/resend-stand-in.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '4392' },
    'control-port': { type: 'string', default: '4393' },
    rate: { type: 'string' },
  },
});
const port = Number(values.port);
const controlPort = Number(values['control-port']);
const rate = values.rate === undefined ? undefined : Number(values.rate);
const inner = await startResendStandIn({ port: 0, keepBodies: false, ...(rate ? { ratePerSecond: rate } : {}) });
const innerUrl = new URL(inner.url);

type Mode = 'ok' | '500' | '429' | 'hang';
let mode: Mode = 'ok';
let retryAfter = 5;
const answered: Record<string, number> = {};
const hanging = new Set<ServerResponse>();
const count = (k: string) => (answered[k] = (answered[k] ?? 0) + 1);

function proxy(req: IncomingMessage, res: ServerResponse) {
  const up = httpRequest(
    { host: innerUrl.hostname, port: innerUrl.port, method: req.method, path: req.url, headers: req.headers },
    (ur) => {
      count(`proxied-${ur.statusCode}`);
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    },
  );
  up.on('error', () => res.destroy());
  req.pipe(up);
}

function front(req: IncomingMessage, res: ServerResponse) {
  if ((req.url ?? '').startsWith('/_drill/')) return control(req, res);
  if (req.method !== 'POST') return proxy(req, res);
  if (mode === 'ok') return proxy(req, res);
  req.resume();
  if (mode === 'hang') {
    count('hang');
    hanging.add(res);
    res.on('close', () => hanging.delete(res));
    return;
  }
  const status = Number(mode);
  count(`mode-${status}`);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (status === 429) headers['retry-after'] = String(retryAfter);
  res.writeHead(status, headers);
  res.end(JSON.stringify({ statusCode: status, name: status === 429 ? 'rate_limit_exceeded' : 'internal_server_error', message: `drill ${status}` }));
}

function json(res: ServerResponse, body: unknown) {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

let frontServer: Server | null = null;
async function openFront() {
  frontServer = createServer(front);
  frontServer.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => frontServer!.listen(port, '127.0.0.1', resolve));
}
async function closeFront() {
  const s = frontServer;
  frontServer = null;
  if (!s) return;
  for (const r of hanging) r.destroy();
  await new Promise<void>((resolve) => {
    s.close(() => resolve());
    s.closeAllConnections();
  });
}

function control(req: IncomingMessage, res: ServerResponse) {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const path = (req.url ?? '').split('?')[0];
    const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>) : {};
    if (path === '/_drill/mode') {
      mode = body.mode as Mode;
      if (typeof body.retryAfter === 'number') retryAfter = body.retryAfter;
      if (mode !== 'hang') {
        for (const r of hanging) r.destroy();
      }
      return json(res, { mode, retryAfter, at: new Date().toISOString() });
    }
    if (path === '/_drill/refuse-connections') {
      const seconds = Number(body.seconds ?? 30);
      void closeFront().then(() => setTimeout(() => void openFront(), seconds * 1000));
      return json(res, { refusingFor: seconds, at: new Date().toISOString() });
    }
    if (path === '/_drill/stats') return json(res, { mode, answered, hanging: hanging.size, frontOpen: frontServer !== null, ...inner.stats() });
    if (path === '/_drill/recipients') return json(res, Object.fromEntries(inner.perRecipient));
    if (path === '/_drill/reset') {
      inner.perRecipient.clear();
      inner.messages.length = 0;
      inner.requests.length = 0;
      for (const k of Object.keys(answered)) delete answered[k];
      return json(res, { reset: true });
    }
    res.writeHead(404);
    res.end();
  });
}

await openFront();
const controlServer = createServer(control);
await new Promise<void>((resolve) => controlServer.listen(controlPort, '127.0.0.1', resolve));
process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}`, control: `http://127.0.0.1:${controlPort}`, inner: inner.url })}\n`);
const stop = () => void Promise.all([closeFront(), inner.stop()]).then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
