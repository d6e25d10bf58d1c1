import type { ReadinessResult } from './readiness.js';

/**
 * A long-running part of a fleet process: a worker binding, a producer, the HTTP app.
 * The runtime starts components in order; on shutdown they all stop at once (the HTTP app last).
 */
export interface Component {
  name: string;
  start(): Promise<void>;
  /** Stop taking work and finish what is in hand within the time limit. */
  stop(timeoutMs: number): Promise<void>;
  /** The job names whose handlers this component runs (worker components). */
  handles?: readonly string[];
  /**
   * Readiness of what this component depends on beyond PostgreSQL and Redis (e.g. Kafka).
   * Shown by `GET /ready`; not critical unless it says `critical: true` (see readiness.ts).
   */
  ready?(): Promise<ReadinessResult>;
}
