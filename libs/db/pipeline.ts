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
 * Waits for every query of a pipeline sent on a reserved postgres.js connection, as
 * `Promise.allSettled` does, without waiting forever for the queries the connection never sent.
 *
 * postgres.js (3.4.9) holds a reserved connection's next queries back while the socket's buffer
 * is full (after a large statement: a therapist file's writes, a registration with its staff
 * email), and sends them one by one as the earlier ones finish. When the connection ends in
 * between (a PostgreSQL restart or failover), the sent queries fail with `CONNECTION_CLOSED` (or
 * PostgreSQL's 57P01), but the held-back ones (the `commit` behind the writes) are dropped and
 * never settle: the import awaiting them, and its job, waited forever (the job's lock kept
 * being renewed, so it never counted as stalled). Once one query of the pipeline failed because
 * the connection was lost, those still waiting fail with that same error.
 */
export function settlePipeline<T extends readonly unknown[] | []>(queries: T): Promise<{ -readonly [P in keyof T]: PromiseSettledResult<Awaited<T[P]>> }> {
  let lose: (err: unknown) => void = () => {};
  const lost = new Promise<never>((_, reject) => {
    lose = reject;
  });
  lost.catch(() => {});
  const guarded = queries.map((q) =>
    Promise.race([
      Promise.resolve(q).catch((err: unknown) => {
        if (isConnectionLost(err)) lose(err);
        throw err;
      }),
      lost,
    ]),
  );
  return Promise.allSettled(guarded) as Promise<{ -readonly [P in keyof T]: PromiseSettledResult<Awaited<T[P]>> }>;
}
