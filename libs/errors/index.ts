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

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
