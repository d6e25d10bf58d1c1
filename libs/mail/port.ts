/** One message ready to hand to a provider. */
export interface OutgoingMail {
  /** Unique per message (the delivery's idempotency key); drivers pass it on as the provider's idempotency key. */
  idempotencyKey: string;
  from: string;
  to: string;
  /** Reply-To address (Resend's `reply_to`, the .eml's Reply-To header); absent: replies go to `from`. */
  replyTo?: string;
  subject: string;
  html: string;
  text: string;
  /** Extra headers kept as they are, e.g. List-Unsubscribe. */
  headers?: Record<string, string>;
}

export type SendResult =
  | { ok: true; providerMessageId: string }
  /**
   * `retryAfterMs` when the provider said when to come back (HTTP 429). `refused`: the provider
   * refused the fleet's account, not this message (a revoked API key, an unverified sending
   * domain): every request fails alike until an operator fixes it; always transient.
   * `message` goes to logs, job failures and the deliveries' last_error: no address, name or
   * file name in it (the same reason for each message of a request that failed as a whole).
   */
  | { ok: false; transient: boolean; status?: number; message: string; retryAfterMs?: number; refused?: true };

export interface BatchOptions {
  /**
   * Idempotency key of the whole request. The same key must always carry the same messages:
   * the provider answers a repeated request with the first answer, without sending again.
   */
  idempotencyKey: string;
}

/** Most messages one batch request may carry (Resend's limit). */
export const MAX_BATCH_SIZE = 100;

/** The mail port: a driver sends one message or a batch, and never throws for provider answers. */
export interface MailDriver {
  readonly name: string;
  send(mail: OutgoingMail): Promise<SendResult>;
  /** Up to 100 messages in one provider request; one result per message, in order. */
  sendBatch(mails: OutgoingMail[], opts: BatchOptions): Promise<SendResult[]>;
}
