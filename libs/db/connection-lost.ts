/**
 * Errors after which a connection is gone: postgres.js's own, the socket's, and PostgreSQL's
 * FATAL shutdown errors (the server closes the connection right after them).
 */
const CONNECTION_LOST = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'ECONNRESET', 'EPIPE', '57P01', '57P02', '57P03']);

/** Whether `err` says the query's connection is gone (not a statement that failed on a live one). */
export function isConnectionLost(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && CONNECTION_LOST.has(code);
}

/**
 * Errors of a query that could not reach PostgreSQL at all: no connection (refused, not found,
 * no answer while connecting) or the server going down under it (57P01 admin shutdown, 57P02
 * crash shutdown of another backend, 57P03 starting up or shutting down). Not a connection
 * closed under the query itself (CONNECTION_CLOSED, ECONNRESET): that query may be what brought
 * the server down.
 */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'CONNECT_TIMEOUT', '57P01', '57P02', '57P03']);

/** `err` and what it wraps (drizzle's query error carries postgres.js's as `cause`), up to four deep, each with its string code. */
function* codedChain(err: unknown): Generator<{ error: object; code: string }> {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') yield { error: e, code };
  }
}

/** Whether `err`, or what it wraps, has a code in `codes`. */
export function hasErrorCode(err: unknown, codes: ReadonlySet<string> | string): boolean {
  for (const { code } of codedChain(err)) if (typeof codes === 'string' ? code === codes : codes.has(code)) return true;
  return false;
}

/** Codes of the socket, which any client's connection can raise; the rest of UNREACHABLE are PostgreSQL's and postgres.js's own. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH']);

/** Where the fleet's PostgreSQL listens, to tell its socket errors from another service's. */
export interface PostgresAddress {
  host: string;
  port: number;
}

/** The host and port of a postgres:// URL; undefined when it names none (a Unix socket by `?host=`, several hosts). */
export function postgresAddressOf(url: string): PostgresAddress | undefined {
  try {
    const u = new URL(url);
    if (u.searchParams.has('host') || u.host.includes(',') || !u.hostname) return undefined;
    return { host: decodeURIComponent(u.hostname).replace(/^\[|\]$/g, ''), port: Number(u.port || 5432) };
  } catch {
    return undefined;
  }
}

/**
 * Whether `err` says PostgreSQL could not be reached (see UNREACHABLE). With `at`, a socket error
 * (refused, no route, host not found) counts only when it names that port or host: another
 * service's (a raw error of an HTTP client that reached a handler unwrapped) is not taken for
 * PostgreSQL's, which would run its job at once each time PostgreSQL answers.
 */
export function couldNotReachPostgres(err: unknown, at?: PostgresAddress): boolean {
  for (const { error, code } of codedChain(err)) {
    if (!UNREACHABLE.has(code)) continue;
    if (!at || !SOCKET_CODES.has(code)) return true;
    // Node's AggregateError (every address of a host refused) carries the attempts in `errors`.
    const attempts = [error, ...(((error as { errors?: unknown }).errors as unknown[] | undefined) ?? [])] as Array<{ port?: unknown; hostname?: unknown }>;
    if (attempts.some((a) => a?.port === at.port || a?.hostname === at.host)) return true;
  }
  return false;
}
