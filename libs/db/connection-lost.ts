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

/** Whether `err`, or what it wraps (drizzle's query error carries postgres.js's as `cause`), has a code in `codes`. */
export function hasErrorCode(err: unknown, codes: ReadonlySet<string> | string): boolean {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (typeof codes === 'string' ? code === codes : codes.has(code))) return true;
  }
  return false;
}

/** Whether `err` says PostgreSQL could not be reached (see UNREACHABLE). */
export function couldNotReachPostgres(err: unknown): boolean {
  return hasErrorCode(err, UNREACHABLE);
}
