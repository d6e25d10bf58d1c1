/**
 * The fleet's error vocabulary. Throwing any other error means "transient: retry".
 * Code never matches on error message text; it looks at the class and `code`.
 */
export class PermanentError extends Error {
  override name = 'PermanentError';
  constructor(
    /** Stable machine-readable reason, e.g. `validation_failed`, `bad_signature`. */
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export function isPermanent(err: unknown): err is PermanentError {
  return err instanceof PermanentError;
}

/**
 * An error's message as it may be stored (job failures, dead letters) and logged. drizzle's
 * query error puts the statement and every parameter into its message (names, email
 * addresses, whole emails): it is described by the database's own error instead.
 */
export function errorMessage(err: unknown): string {
  if (isQueryError(err)) return queryErrorSummary(err);
  return err instanceof Error ? err.message : String(err);
}

/** drizzle's `DrizzleQueryError` (matched by shape: `Failed query: ...` and its `params`). */
export function isQueryError(err: unknown): err is Error & { cause?: unknown } {
  return err instanceof Error && 'params' in err && err.message.startsWith('Failed query: ');
}

/**
 * `database query failed: <SQLSTATE> <PostgreSQL's message>`, without the statement and its
 * parameters; a value PostgreSQL quotes ("invalid input syntax for type integer: "...") is
 * left out too.
 */
export function queryErrorSummary(err: Error & { cause?: unknown }): string {
  const cause = err.cause;
  if (!(cause instanceof Error)) return 'database query failed';
  const code = (cause as { code?: unknown }).code;
  const message = cause.message.replace(/^(invalid input (?:syntax|value) for [^:]+): .*$/s, '$1: (value not shown)');
  return `database query failed: ${typeof code === 'string' ? `${code} ` : ''}${message}`;
}

/**
 * A query error fit to store and log: the summary as message, the original stack frames (not
 * its first lines, which repeat the statement and parameters), the SQLSTATE as `code`. Any
 * other error is returned as it is.
 */
export function withoutQueryData(err: unknown): unknown {
  if (!isQueryError(err)) return err;
  const cause = err.cause as { code?: unknown; port?: unknown; hostname?: unknown } | undefined;
  const safe = new QueryFailedError(queryErrorSummary(err), cause?.code);
  // Where a connection failed (the database's port or host, no row data): what tells PostgreSQL's
  // socket errors from another service's (couldNotReachPostgres).
  if (typeof cause?.port === 'number') safe.port = cause.port;
  if (typeof cause?.hostname === 'string') safe.hostname = cause.hostname;
  const frames = (err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
  safe.stack = [`${safe.name}: ${safe.message}`, ...frames].join('\n');
  return safe;
}

/** A database query failed (what `withoutQueryData` makes of drizzle's query error). */
export class QueryFailedError extends Error {
  override name = 'QueryFailedError';
  readonly code: string | undefined;
  /** The port (or host) of a connection that could not be made, as the socket error said. */
  port?: number;
  hostname?: string;
  constructor(message: string, code: unknown) {
    super(message);
    this.code = typeof code === 'string' ? code : undefined;
  }
}

export { FolderError, withoutFileName } from './folder-error.js';
