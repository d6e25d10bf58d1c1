import { connect } from 'node:net';
import { Resend, type ErrorResponse } from 'resend';
import { MAX_BATCH_SIZE, type BatchOptions, type MailDriver, type OutgoingMail, type SendResult } from '../port.js';

export interface ResendDriverOptions {
  apiKey: string;
  /** API base URL; without it the SDK uses RESEND_BASE_URL or https://api.resend.com. */
  baseUrl?: string | undefined;
  /** A request that takes longer is aborted and counts as a transient failure. */
  timeoutMs?: number;
}

type SdkAnswer<T> = { data: T; error: null; headers: Record<string, string> | null } | { data: null; error: ErrorResponse; headers: Record<string, string> | null };

/** Errors Resend answers with a 4xx that are worth retrying. */
const transientNames = new Set(['concurrent_idempotent_requests', 'rate_limit_exceeded', 'daily_quota_exceeded', 'monthly_quota_exceeded']);

/** `retry-after` is seconds (or an HTTP date); the SDK hands back the response headers. */
export function retryAfterMs(headers: Record<string, string> | null, now = Date.now()): number | undefined {
  const raw = headers?.['retry-after'];
  if (!raw) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * 401 and 403 refuse the account, not the message, so they hit every email alike: a missing,
 * revoked or send-restricted API key (401 missing_api_key, restricted_api_key, validation_error
 * "API key is invalid"; 403 invalid_api_key) or a sending domain that is not verified (403
 * validation_error "You can only send testing emails to your own email address"). They are
 * transient, so the deliveries wait for the key or domain to be fixed. The reason names the
 * setting to check and leaves out Resend's text (it can name the account's own address).
 */
function refusal(status: number, name: string): SendResult & { ok: false } {
  const message =
    status === 401 || name.endsWith('_api_key')
      ? `the email provider refused the API key (${status} ${name}): check RESEND_API_KEY`
      : `the email provider refused the sender (${status} ${name}): check that the sending domain of MAIL_FROM is verified in Resend, and RESEND_API_KEY`;
  return { ok: false, transient: true, refused: true, status, message };
}

/**
 * Maps the SDK's `{error, headers}` (it returns errors instead of throwing) to a SendResult:
 * 429, 5xx, network errors and timeouts (statusCode null) are transient; 401 and 403 are
 * transient refusals of the account (see `refusal`); other 4xx (validation, a reused
 * idempotency key with another payload) are permanent.
 */
export function mapResendError(error: ErrorResponse, headers: Record<string, string> | null): SendResult & { ok: false } {
  const status = error.statusCode ?? undefined;
  if (status === 401 || status === 403) return refusal(status, error.name);
  const transient = status === undefined || status === 429 || status >= 500 || transientNames.has(error.name);
  const wait = status === 429 ? retryAfterMs(headers) : undefined;
  return {
    ok: false,
    transient,
    ...(status !== undefined ? { status } : {}),
    message: `resend ${status ?? 'network'} ${error.name}: ${error.message}`,
    ...(wait !== undefined ? { retryAfterMs: wait } : {}),
  };
}

function toApi(mail: OutgoingMail) {
  return {
    from: mail.from,
    to: mail.to,
    // The SDK sends it as `reply_to`. Only when set: a request repeated under its idempotency
    // key must carry the same body as before.
    ...(mail.replyTo ? { replyTo: mail.replyTo } : {}),
    subject: mail.subject,
    html: mail.html,
    text: mail.text,
    ...(mail.headers && Object.keys(mail.headers).length ? { headers: mail.headers } : {}),
  };
}

/** `host:port` of the provider's API (never the key): where a request that got no answer went. */
export function providerAddress(baseUrl: string | undefined): { host: string; port: number; label: string } {
  let u: URL;
  try {
    u = new URL(baseUrl || 'https://api.resend.com');
  } catch {
    u = new URL('https://api.resend.com');
  }
  const port = Number(u.port) || (u.protocol === 'http:' ? 80 : 443);
  return { host: u.hostname, port, label: `${u.hostname}:${port}` };
}

/** How long the check of an unanswered request's cause may take. */
const CAUSE_CHECK_MS = 3_000;

/**
 * Why a request got no HTTP answer. The SDK swallows fetch's error (`Unable to fetch data. The
 * request could not be resolved.`, which reads like DNS also when the connection was refused), so
 * a quick TCP connect to the same address finds the cause: refused, not resolvable, no answer
 * while connecting, or connectable (then TLS or HTTP broke and the SDK does not say which).
 */
export function networkCause(address: { host: string; port: number; label: string }, waitMs = CAUSE_CHECK_MS): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: address.host, port: address.port });
    const done = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer from ${address.label} while connecting (within ${waitMs} ms)`), waitMs);
    socket.once('connect', () => done(`${address.label} accepts connections, but the request failed (TLS or HTTP; the SDK does not say which)`));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') done(`could not resolve ${address.host} (${err.code})`);
      else done(`could not connect to ${address.label} (${err.code ?? err.message})`);
    });
  });
}

/** The Resend driver: the official SDK, pointed at `baseUrl` (a local stand-in in tests). */
export function createResendDriver(opts: ResendDriverOptions): MailDriver {
  const resend = new Resend(opts.apiKey, opts.baseUrl ? { baseUrl: opts.baseUrl.replace(/\/+$/, '') } : undefined);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const address = providerAddress(opts.baseUrl);
  /**
   * The SDK's answer as a SendResult; a request that got no HTTP answer (statusCode null) names
   * the provider's address and the cause: this request's own time limit, or what a connect finds.
   */
  const failure = async (error: ErrorResponse, headers: Record<string, string> | null, signal: AbortSignal): Promise<SendResult & { ok: false }> => {
    const mapped = mapResendError(error, headers);
    if (error.statusCode !== null && error.statusCode !== undefined) return mapped;
    const why = signal.aborted ? `no answer from ${address.label} within ${timeoutMs} ms` : await networkCause(address);
    return { ...mapped, message: `resend network error: ${why}` };
  };

  return {
    name: 'resend',
    async send(mail) {
      const signal = AbortSignal.timeout(timeoutMs);
      const answer = (await resend.emails.send(toApi(mail), { idempotencyKey: mail.idempotencyKey, signal })) as SdkAnswer<{ id: string }>;
      if (answer.error) return failure(answer.error, answer.headers, signal);
      return { ok: true, providerMessageId: answer.data.id };
    },

    async sendBatch(mails: OutgoingMail[], batch: BatchOptions): Promise<SendResult[]> {
      if (mails.length === 0) return [];
      if (mails.length > MAX_BATCH_SIZE) throw new RangeError(`a batch carries at most ${MAX_BATCH_SIZE} messages (got ${mails.length})`);
      // Permissive validation: one invalid message does not hold back the other 99; the
      // answer lists the rejected ones by index.
      const signal = AbortSignal.timeout(timeoutMs);
      const answer = (await resend.batch.send(mails.map(toApi), {
        idempotencyKey: batch.idempotencyKey,
        batchValidation: 'permissive',
        signal,
      })) as SdkAnswer<{ data: Array<{ id: string }>; errors?: Array<{ index: number; message: string }> }>;
      if (answer.error) {
        const failed = await failure(answer.error, answer.headers, signal);
        return mails.map(() => failed);
      }
      const rejected = new Map((answer.data.errors ?? []).map((e) => [e.index, e.message]));
      const ids = answer.data.data ?? [];
      let next = 0;
      return mails.map((_, index): SendResult => {
        const reason = rejected.get(index);
        if (reason !== undefined) return { ok: false, transient: false, status: 422, message: `resend rejected: ${reason}` };
        const id = ids[next++]?.id;
        if (!id) return { ok: false, transient: true, message: 'resend batch answer has fewer ids than accepted messages' };
        return { ok: true, providerMessageId: id };
      });
    },
  };
}
