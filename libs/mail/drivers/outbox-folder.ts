import { createHash } from 'node:crypto';
import { mkdir, open, link, unlink, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import MailComposer from 'nodemailer/lib/mail-composer';
import { errorMessage, withoutFileName } from '../../errors/index.js';
import type { BatchOptions, MailDriver, OutgoingMail, SendResult } from '../port.js';

export interface OutboxFolderOptions {
  /** Folder the .eml files go to (created when missing). */
  dir: string;
  /** Date header source; injected in tests. */
  now?: () => Date;
}

/** File name of a message: readable part of the idempotency key plus a hash of the whole key. */
export function outboxFileName(idempotencyKey: string): string {
  const readable = idempotencyKey.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 100);
  const hash = createHash('sha256').update(idempotencyKey).digest('hex').slice(0, 16);
  return `${readable}-${hash}.eml`;
}

/** A Message-ID that stays the same for the same delivery. */
export function messageIdFor(mail: OutgoingMail): string {
  const domain = /@([A-Za-z0-9.-]+)>?\s*$/.exec(mail.from)?.[1] ?? 'curavani-fleet.invalid';
  const hash = createHash('sha256').update(mail.idempotencyKey).digest('hex').slice(0, 32);
  return `<${hash}@${domain}>`;
}

/** Builds the RFC 5322 message: multipart/alternative text + html, encoded headers, Reply-To when set, Date, Message-ID. */
export async function composeEml(mail: OutgoingMail, date: Date): Promise<Buffer> {
  const composer = new MailComposer({
    from: mail.from,
    to: mail.to,
    ...(mail.replyTo ? { replyTo: mail.replyTo } : {}),
    subject: mail.subject,
    text: mail.text,
    html: mail.html,
    headers: { ...(mail.headers ?? {}), 'X-Fleet-Idempotency-Key': mail.idempotencyKey },
    messageId: messageIdFor(mail),
    date,
  });
  return composer.compile().build();
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The local default driver: each message becomes one .eml file in a folder. Written
 * atomically (temporary file, fsync, hard link to the final name, fsync of the folder), and
 * the final name comes from the idempotency key: a delivery sent again finds its file and
 * is not written twice (link() never replaces an existing file).
 */
export function createOutboxFolderDriver(opts: OutboxFolderOptions): MailDriver {
  const now = opts.now ?? (() => new Date());
  let ensured = false;

  async function send(mail: OutgoingMail): Promise<SendResult> {
    const name = outboxFileName(mail.idempotencyKey);
    const final = join(opts.dir, name);
    try {
      if (!ensured) {
        await mkdir(opts.dir, { recursive: true });
        ensured = true;
      }
      const eml = await composeEml(mail, now());
      const tmp = join(opts.dir, `.${name}.${process.pid}.${Date.now()}.tmp`);
      const handle = await open(tmp, 'wx', 0o640);
      try {
        try {
          await handle.writeFile(eml);
          await handle.sync();
        } finally {
          await handle.close();
        }
        await link(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // Written before (a retry after a crash): the existing file is the message.
      } finally {
        // Also when the write failed (a full disk): a retry must not find the disk fuller.
        await unlink(tmp).catch(() => {});
      }
      await fsyncDir(opts.dir);
      return { ok: true, providerMessageId: `outbox:${name}` };
    } catch (err) {
      // A full or read-only disk may recover; the message is not lost, it is retried. The
      // reason names the folder, not the file: it is the same for every message of a batch
      // (each delivery records it), and the folder is what an operator fixes.
      return { ok: false, transient: true, message: `outbox folder: ${errorMessage(withoutFileName(err, opts.dir))}` };
    }
  }

  return {
    name: 'outbox',
    send,
    async sendBatch(mails: OutgoingMail[], _opts: BatchOptions): Promise<SendResult[]> {
      const results: SendResult[] = [];
      for (const mail of mails) results.push(await send(mail));
      return results;
    },
  };
}

/** Reads one message back (tests, CLI). */
export async function readOutboxMessage(dir: string, idempotencyKey: string): Promise<Buffer> {
  return readFile(join(dir, outboxFileName(idempotencyKey)));
}
