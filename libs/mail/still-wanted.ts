/**
 * "Is this message still wanted?" — asked right before a delivery goes to the provider
 * (e.g. the patient opted out of weekly emails after the message was queued). Checks are
 * registered per delivery kind; a delivery a check names is marked `dropped` with the
 * reason and never sent. A check that throws makes the send retry later (nothing is sent).
 */
export interface DeliveryRef {
  id: string;
  kind: string;
  idempotencyKey: string;
  patientId: number | null;
  /** The address the message was recorded for (a check may compare it with the current one). */
  toAddress: string;
}

export interface DropDecision {
  id: string;
  /** Stored on the delivery row (no personal data), e.g. `patient opted out`. */
  reason: string;
  /** The reason as a stable code (`drop_reason`), e.g. `opted_out`: what views go by, not the sentence. */
  code?: string;
}

/** Gets every claimed delivery of one kind at once (one query for up to 100 rows); returns those to drop. */
export type StillWantedCheck = (deliveries: DeliveryRef[]) => Promise<DropDecision[]>;

/** Checks by delivery kind; kinds without a check are always sent. */
export type StillWantedChecks = Partial<Record<string, StillWantedCheck>>;
