/**
 * Readiness of one fleet process beyond PostgreSQL and Redis: checks contributed by the
 * components it runs (e.g. Kafka for the outbox relay), and the phase of the process.
 * `GET /ready` of the HTTP app reads it.
 */
export interface ReadinessResult {
  ok: boolean;
  /** Short reason, shown in `/ready` (no personal data, no secrets). */
  detail?: string;
  /**
   * true: a failing check makes `/ready` answer 503 (the process cannot do its work).
   * false (default): `/ready` stays 200 and reports `degraded`, so an optional dependency
   * such as Kafka never takes the dashboard or the unsubscribe links out of service.
   */
  critical?: boolean;
}

export type ReadinessCheck = () => Promise<ReadinessResult>;

/** starting: components are being started; running: all started; stopping: draining for shutdown. */
export type ProcessPhase = 'starting' | 'running' | 'stopping';

export interface Readiness {
  /** Adds (or replaces) a named check. */
  add(name: string, check: ReadinessCheck): void;
  checks(): Array<{ name: string; check: ReadinessCheck }>;
  phase(): ProcessPhase;
  setPhase(phase: ProcessPhase): void;
}

export function createReadiness(initial: ProcessPhase = 'running'): Readiness {
  const checks = new Map<string, ReadinessCheck>();
  let phase = initial;
  return {
    add(name, check) {
      checks.set(name, check);
    },
    checks: () => [...checks].map(([name, check]) => ({ name, check })),
    phase: () => phase,
    setPhase(p) {
      phase = p;
    },
  };
}
