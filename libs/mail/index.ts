import type { Config } from '../config/index.js';
import { createOutboxFolderDriver } from './drivers/outbox-folder.js';
import { createResendDriver } from './drivers/resend.js';
import type { MailDriver } from './port.js';

export * from './port.js';
export { createOutboxFolderDriver, composeEml, outboxFileName, readOutboxMessage } from './drivers/outbox-folder.js';
export { createResendDriver, mapResendError, retryAfterMs } from './drivers/resend.js';

/** The configured driver: `outbox` (default, .eml files in a folder) or `resend`. */
export function createMailDriver(config: Config['mail']): MailDriver {
  if (config.driver === 'resend') {
    if (!config.resendApiKey) throw new Error('RESEND_API_KEY is required when MAIL_DRIVER=resend');
    return createResendDriver({ apiKey: config.resendApiKey, baseUrl: config.resendBaseUrl, timeoutMs: config.requestTimeoutMs });
  }
  return createOutboxFolderDriver({ dir: config.outboxDir });
}
export * from './still-wanted.js';
