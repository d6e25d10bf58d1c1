import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local stand-in for the Resend API, speaking what the `resend` SDK sends and expects:
 * `POST /emails` (one message) and `POST /emails/batch` (up to 100, `x-batch-validation:
 * strict|permissive`), Bearer authentication, `Idempotency-Key` (same key + same body within
 * 24 h replays the first answer without sending; same key + another body -> 409
 * invalid_idempotent_request; while the first is in flight -> 409
 * concurrent_idempotent_requests), errors as `{statusCode, name, message}`, an optional
 * request-rate limit (token bucket) answering 429 with `retry-after` and `ratelimit-*`
 * headers, injectable faults and a refusal of the account (401/403, until lifted).
 * `GET /_stand-in/stats` reports counts (benchmarks).
 */
export interface StandInMessage {
  id: string;
  /** Idempotency-Key of the request that carried it. */
  requestKey: string | null;
  endpoint: 'single' | 'batch';
  from: string;
  to: string[];
  /** The request's `reply_to` (a string or a list in the API), as a list; absent when not sent. */
  replyTo?: string[];
  subject: string;
  html?: string;
  text?: string;
  headers?: Record<string, string>;
  receivedAt: number;
}

export interface StandInRequest {
  path: string;
  status: number;
  size: number;
  idempotencyKey: string | null;
  replayed: boolean;
  /** The request was processed but its answer never reached the client (fault `lose-answer`). */
  lost?: true;
  at: number;
}

export type Fault =
  | { kind: 'status'; status: number; name?: string; retryAfterSeconds?: number }
  /** Accepts the request and never answers (until the client gives up); nothing is sent. */
  | { kind: 'hang' }
  /**
   * Processes the request as usual (its emails go out, its idempotency key keeps the answer),
   * then drops the connection instead of answering: the client sees a network error, as after a
   * timeout or a connection reset once the provider had accepted the request.
   */
  | { kind: 'lose-answer' };

/** How the stand-in refuses the account (see `ResendStandIn.refuse`). */
export interface Refusal {
  status: 401 | 403;
  name: string;
  message: string;
}

/** Resend's answers to a key it no longer takes and to a sending domain it has not verified. */
export const refusals = {
  invalidApiKey: { status: 403, name: 'invalid_api_key', message: 'API key is invalid' },
  unverifiedDomain: {
    status: 403,
    name: 'validation_error',
    message: 'You can only send testing emails to your own email address (owner@example.com). To send emails to other recipients, please verify a domain.',
  },
} satisfies Record<string, Refusal>;

export interface StandInOptions {
  port?: number;
  host?: string;
  /** Requests per second (token bucket of the same size); absent = unlimited. */
  ratePerSecond?: number;
  /** Keep bodies (tests) or only counts and recipients (benchmarks with 100,000 messages). */
  keepBodies?: boolean;
  apiKey?: string;
  /** Addresses the stand-in refuses as invalid (422 validation_error), to test rejections. */
  rejectTo?: (address: string) => boolean;
}

const MAX_BATCH = 100;
const emailRe = /^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/;

function addressOf(v: string): string {
  const m = /<([^>]+)>\s*$/.exec(v);
  return (m ? m[1]! : v).trim();
}

export class ResendStandIn {
  readonly messages: StandInMessage[] = [];
  readonly requests: StandInRequest[] = [];
  /** Recipient -> messages sent to it (duplicates = values > 1). */
  readonly perRecipient = new Map<string, number>();
  private server: Server | null = null;
  private readonly faults: Fault[] = [];
  private refusal: Refusal | null = null;
  private readonly idempotency = new Map<string, { bodyHash: string; status: number; body: string; at: number } | 'in-flight'>();
  private tokens: number;
  private lastRefill = Date.now();
  private readonly hanging = new Set<ServerResponse>();
  url = '';

  constructor(private readonly opts: StandInOptions = {}) {
    this.tokens = opts.ratePerSecond ?? 0;
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve) => this.server!.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://${this.opts.host ?? '127.0.0.1'}:${port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.hanging.clear();
    await new Promise<void>((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    this.server = null;
  }

  /** The next `count` requests fail with this fault (in order after those already queued). */
  inject(fault: Fault, count = 1): void {
    for (let i = 0; i < count; i++) this.faults.push(fault);
  }

  /** Drops the faults not yet used. */
  clearFaults(): void {
    this.faults.length = 0;
  }

  /**
   * Every sending request is refused with this answer until `refuse(null)`, as Resend refuses
   * a revoked API key or an unverified sending domain (nothing is sent, keys stay free).
   */
  refuse(answer: Refusal | null): void {
    this.refusal = answer;
  }

  setRate(perSecond: number | undefined): void {
    this.opts.ratePerSecond = perSecond;
    this.tokens = perSecond ?? 0;
    this.lastRefill = Date.now();
  }

  stats() {
    const byStatus: Record<string, number> = {};
    for (const r of this.requests) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    let messages = 0;
    let duplicates = 0;
    for (const n of this.perRecipient.values()) {
      messages += n;
      if (n > 1) duplicates += n - 1;
    }
    const accepted = this.requests.filter((r) => r.status === 200 && !r.replayed);
    return {
      requests: this.requests.length,
      byStatus,
      acceptedRequests: accepted.length,
      replayed: this.requests.filter((r) => r.replayed).length,
      messages,
      recipients: this.perRecipient.size,
      duplicates,
      firstAcceptedAt: accepted[0]?.at ?? null,
      lastAcceptedAt: accepted.at(-1)?.at ?? null,
    };
  }

  private takeToken(): { ok: true } | { ok: false; waitMs: number } {
    const rate = this.opts.ratePerSecond;
    if (!rate) return { ok: true };
    const now = Date.now();
    this.tokens = Math.min(rate, this.tokens + ((now - this.lastRefill) / 1000) * rate);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, waitMs: ((1 - this.tokens) / rate) * 1000 };
  }

  private rateHeaders(): Record<string, string> {
    const rate = this.opts.ratePerSecond;
    if (!rate) return {};
    return { 'ratelimit-limit': String(rate), 'ratelimit-remaining': String(Math.max(0, Math.floor(this.tokens))), 'ratelimit-reset': '1' };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const path = (req.url ?? '/').split('?')[0]!;
    const key = (req.headers['idempotency-key'] as string | undefined) ?? null;
    let loseAnswer = false;
    const record = (status: number, size: number, replayed = false) =>
      this.requests.push({ path, status, size, idempotencyKey: key, replayed, ...(loseAnswer ? { lost: true as const } : {}), at: Date.now() });
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      if (loseAnswer) {
        res.destroy();
        return text;
      }
      res.writeHead(status, { 'content-type': 'application/json', ...this.rateHeaders(), ...headers });
      res.end(text);
      return text;
    };
    const error = (status: number, name: string, message: string, headers: Record<string, string> = {}) =>
      send(status, { statusCode: status, name, message }, headers);

    if (req.method === 'GET' && path === '/_stand-in/stats') {
      const timeline = (req.url ?? '').includes('timeline=1');
      send(200, { ...this.stats(), ...(timeline ? { acceptedAt: this.requests.filter((r) => r.status === 200 && !r.replayed).map((r) => r.at) } : {}) });
      return;
    }
    if (req.method !== 'POST' || (path !== '/emails' && path !== '/emails/batch')) {
      record(404, 0);
      error(404, 'not_found', 'The requested endpoint does not exist.');
      return;
    }
    const auth = req.headers.authorization;
    if (!auth?.startsWith('Bearer ') || (this.opts.apiKey && auth !== `Bearer ${this.opts.apiKey}`)) {
      record(401, 0);
      error(401, 'missing_api_key', 'Missing API key in the authorization header.');
      return;
    }
    if (this.refusal) {
      record(this.refusal.status, 0);
      error(this.refusal.status, this.refusal.name, this.refusal.message);
      return;
    }
    const bucket = this.takeToken();
    if (!bucket.ok) {
      record(429, 0);
      error(429, 'rate_limit_exceeded', 'Too many requests. You can only make 2 requests per second.', {
        'retry-after': String(Math.max(1, Math.ceil(bucket.waitMs / 1000))),
      });
      return;
    }
    const fault = this.faults.shift();
    if (fault?.kind === 'lose-answer') loseAnswer = true;
    if (fault?.kind === 'hang') {
      record(0, 0);
      this.hanging.add(res);
      res.on('close', () => this.hanging.delete(res));
      return;
    }
    if (fault?.kind === 'status') {
      record(fault.status, 0);
      const name = fault.name ?? (fault.status === 429 ? 'rate_limit_exceeded' : fault.status >= 500 ? 'internal_server_error' : 'validation_error');
      error(fault.status, name, `injected ${fault.status}`, fault.retryAfterSeconds !== undefined ? { 'retry-after': String(fault.retryAfterSeconds) } : {});
      return;
    }

    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      record(400, 0);
      error(400, 'validation_error', 'Invalid JSON body.');
      return;
    }
    const bodyHash = createHash('sha256').update(`${path}\n${raw}`).digest('hex');
    if (key) {
      if (key.length > 256) {
        record(400, 0);
        error(400, 'invalid_idempotency_key', 'The key must be between 1-256 chars.');
        return;
      }
      const seen = this.idempotency.get(key);
      if (seen === 'in-flight') {
        record(409, 0);
        error(409, 'concurrent_idempotent_requests', 'Same idempotency key used while original request is still in progress.');
        return;
      }
      if (seen && Date.now() - seen.at < 24 * 3600_000) {
        if (seen.bodyHash !== bodyHash) {
          record(409, 0);
          error(409, 'invalid_idempotent_request', 'Same idempotency key used with a different request payload.');
          return;
        }
        record(seen.status, 0, true);
        send(seen.status, seen.body);
        return;
      }
      this.idempotency.set(key, 'in-flight');
    }
    const answer = path === '/emails' ? this.single(body, key) : this.batch(body, key, String(req.headers['x-batch-validation'] ?? 'strict'));
    record(answer.status, answer.size);
    const text = send(answer.status, answer.body);
    if (key) {
      // Resend keeps the answer of a processed request; a rejected request frees the key.
      if (answer.status === 200) this.idempotency.set(key, { bodyHash, status: answer.status, body: text, at: Date.now() });
      else this.idempotency.delete(key);
    }
  }

  private validate(e: unknown): string | null {
    if (!e || typeof e !== 'object') return 'Each email must be an object.';
    const m = e as Record<string, unknown>;
    if (typeof m.from !== 'string' || !emailRe.test(addressOf(m.from))) return 'Invalid `from` field.';
    const to = Array.isArray(m.to) ? m.to : [m.to];
    if (!to.length || to.length > 50 || !to.every((t) => typeof t === 'string' && emailRe.test(addressOf(t)))) return 'Invalid `to` field.';
    if (m.reply_to !== undefined) {
      const replyTo = Array.isArray(m.reply_to) ? m.reply_to : [m.reply_to];
      if (!replyTo.length || replyTo.length > 50 || !replyTo.every((t) => typeof t === 'string' && emailRe.test(addressOf(t)))) return 'Invalid `reply_to` field.';
    }
    if (this.opts.rejectTo && to.some((t) => this.opts.rejectTo!(addressOf(t as string)))) return 'Invalid `to` field: the recipient is not allowed.';
    if (typeof m.subject !== 'string' || !m.subject) return 'Missing `subject` field.';
    if (typeof m.html !== 'string' && typeof m.text !== 'string') return 'Missing `html` or `text` field.';
    if (m.headers !== undefined && (typeof m.headers !== 'object' || m.headers === null)) return 'Invalid `headers` field.';
    return null;
  }

  private store(e: Record<string, unknown>, key: string | null, endpoint: 'single' | 'batch'): string {
    const id = randomUUID();
    const to = (Array.isArray(e.to) ? e.to : [e.to]).map((t) => String(t));
    for (const t of to) this.perRecipient.set(addressOf(t), (this.perRecipient.get(addressOf(t)) ?? 0) + 1);
    const msg: StandInMessage = { id, requestKey: key, endpoint, from: String(e.from), to, subject: String(e.subject), receivedAt: Date.now() };
    if (e.reply_to !== undefined) msg.replyTo = (Array.isArray(e.reply_to) ? e.reply_to : [e.reply_to]).map((t) => String(t));
    if (this.opts.keepBodies !== false) {
      if (typeof e.html === 'string') msg.html = e.html;
      if (typeof e.text === 'string') msg.text = e.text;
      if (e.headers) msg.headers = e.headers as Record<string, string>;
    }
    this.messages.push(msg);
    return id;
  }

  private single(body: unknown, key: string | null) {
    const invalid = this.validate(body);
    if (invalid) return { status: 422, size: 0, body: { statusCode: 422, name: 'validation_error', message: invalid } };
    return { status: 200, size: 1, body: { id: this.store(body as Record<string, unknown>, key, 'single') } };
  }

  private batch(body: unknown, key: string | null, mode: string) {
    if (!Array.isArray(body) || body.length === 0) return { status: 422, size: 0, body: { statusCode: 422, name: 'validation_error', message: 'The body must be a non-empty array.' } };
    if (body.length > MAX_BATCH) return { status: 422, size: 0, body: { statusCode: 422, name: 'validation_error', message: `Too many emails: at most ${MAX_BATCH} per batch.` } };
    const problems = body.map((e, index) => ({ index, message: this.validate(e) })).filter((p): p is { index: number; message: string } => p.message !== null);
    if (mode !== 'permissive' && problems.length) {
      return { status: 422, size: 0, body: { statusCode: 422, name: 'validation_error', message: `Email at index ${problems[0]!.index}: ${problems[0]!.message}` } };
    }
    const bad = new Set(problems.map((p) => p.index));
    const data = body.flatMap((e, i) => (bad.has(i) ? [] : [{ id: this.store(e as Record<string, unknown>, key, 'batch') }]));
    return { status: 200, size: data.length, body: mode === 'permissive' ? { data, errors: problems } : { data } };
  }
}

export async function startResendStandIn(opts: StandInOptions = {}): Promise<ResendStandIn> {
  const s = new ResendStandIn(opts);
  await s.start();
  return s;
}
