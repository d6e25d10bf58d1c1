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
