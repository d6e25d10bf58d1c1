/** One message ready to hand to a provider. */
export interface OutgoingMail {
  /** Our delivery id; drivers pass it on as the provider's idempotency key. */
  idempotencyKey: string;
  from: string;
  to: string;
  subject: string;
  html: string;
  text: string;
  headers?: Record<string, string>;
}

export type SendResult =
  | { ok: true; providerMessageId: string }
  /** `retryAfterMs` when the provider said when to come back (HTTP 429). */
  | { ok: false; transient: boolean; status?: number; message: string; retryAfterMs?: number };

/** The mail port: a driver sends one message or a batch, and never throws for provider answers. */
export interface MailDriver {
  readonly name: string;
  send(mail: OutgoingMail): Promise<SendResult>;
  /** Up to 100 messages; one result per message, in order. */
  sendBatch(mails: OutgoingMail[]): Promise<SendResult[]>;
}
