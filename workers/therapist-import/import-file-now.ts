import path from 'node:path';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { processTherapistFile, reportOf, sha256, type FileReport } from './process-therapist-file.js';
import { FileTooLargeError, NotRegularFileError, readRegularFile } from './file-size.js';
import { therapistImportDeps } from './wiring.js';

export class TherapistFileError extends Error {
  override name = 'TherapistFileError';
}

/** An import of the file's postcode from a later scrape than the file's, as the refusal names it. */
export interface NewerScrapeImport {
  id: number;
  path: string;
  status: string;
  /** YYYYMMDD: its date folder. */
  scrapeDate: string;
}

/**
 * `fleet import therapist-file` of a file older than an import of its postcode (the watcher's
 * "newest date folder wins" rule): not imported unless forced, nothing recorded (as the CLI's other
 * refusals); the message names the newer import record and both dates.
 */
export class OlderScrapeError extends TherapistFileError {
  override name = 'OlderScrapeError';
  constructor(
    filePath: string,
    readonly fileScrapeDate: string,
    readonly newer: NewerScrapeImport,
  ) {
    super(
      `${filePath}: not imported: postcode ${path.basename(filePath, '.json')} has a newer scrape imported, import record ${newer.id} (${newer.path}, scrape of ${dashed(newer.scrapeDate)}, ${newer.status}); ` +
        `this file (scrape of ${dashed(fileScrapeDate)}) would write older data over it. Details: fleet imports show ${newer.id} --kind therapist. To import it all the same: --force`,
    );
  }
}

/** 20251008 -> 2025-10-08. */
const dashed = (d: string) => `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;

/**
 * The scrape date of a file (YYYYMMDD): its date folder, else its metadata's `scrape_date`; null
 * when it has neither (or the file is no JSON: the import reports that).
 */
function scrapeDateOf(dateFolder: string | null, buf: Buffer): string | null {
  if (dateFolder) return dateFolder;
  try {
    const meta = (JSON.parse(buf.toString('utf8')) as { metadata?: { scrape_date?: unknown } } | null)?.metadata;
    const m = typeof meta?.scrape_date === 'string' ? /^(\d{4})-(\d{2})-(\d{2})/.exec(meta.scrape_date) : null;
    return m ? `${m[1]}${m[2]}${m[3]}` : null;
  } catch {
    return null;
  }
}

/**
 * `fleet import therapist-file <path>`: registers the file as a run of its own and imports it
 * in this process through the same processor and store as the worker. A content hash that
 * was imported before is not imported again: its stored report is returned.
 */
export async function importTherapistFileNow(
  ctx: FleetContext,
  filePath: string,
  opts: { force?: boolean } = {},
): Promise<FileReport & { forcedOver?: NewerScrapeImport }> {
  const dropDir = path.resolve(ctx.config.therapistImport.dropDir);
  const abs = path.resolve(filePath);
  let buf: Buffer;
  try {
    buf = await readRegularFile(abs, ctx.config.therapistImport.maxFileBytes);
  } catch (err) {
    if (err instanceof NotRegularFileError) throw new TherapistFileError(`${filePath}: not a file (${err.kind})`);
    if (err instanceof FileTooLargeError) {
      const mb = Math.ceil(err.sizeBytes / 1024 / 1024);
      throw new TherapistFileError(
        `${filePath}: not read: ${err.message} (an import needs ~10 MB of memory per MB of file; on a machine with ${mb * 10 + 200} MB to spare, SCRAPER_FILE_MAX_MB=${mb} imports it)`,
      );
    }
    throw new TherapistFileError(`${filePath}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const hash = sha256(buf);
  const before = await repo.findLiveByHash(ctx.database.db, hash);
  if (before && before.status !== 'queued' && before.status !== 'importing') return { ...reportOf(before), alreadyDone: true };

  const rel = path.relative(dropDir, abs);
  const stored = rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel.split(path.sep).join('/') : abs;
  const m = /^(\d{5})\.json$/.exec(path.basename(abs));
  const dm = /(?:^|\/)(\d{8})\/\d{5}\.json$/.exec(stored);
  // The watcher imports only the newest date folder of a postcode; by hand, an older scrape than
  // one imported would write its older values over the newer ones (staff data among them).
  const scrapeDate = m ? scrapeDateOf(dm?.[1] ?? null, buf) : null;
  const tomorrow = new Date(ctx.clock.now().getTime() + 86_400_000).toISOString().slice(0, 10).replace(/-/g, '');
  const newerRow = m && scrapeDate ? await repo.newerImportOfPostcode(ctx.database.db, m[1]!, scrapeDate, tomorrow) : null;
  const newer = newerRow ? { id: newerRow.id, path: newerRow.path, status: newerRow.status, scrapeDate: newerRow.dateFolder } : null;
  if (newer && !opts.force) throw new OlderScrapeError(filePath, scrapeDate!, newer);
  let fileId: number;
  if (before) {
    fileId = before.id;
  } else {
    const runId = await repo.openRun(ctx.database.db, 'cli', 'sealed');
    const { file } = await repo.registerFile(ctx.database.db, {
      runId,
      path: stored,
      postcode: m?.[1] ?? null,
      dateFolder: dm?.[1] ?? null,
      urgent: stored.startsWith('urgent/'),
      contentHash: hash,
      sizeBytes: buf.length,
    });
    fileId = file.id;
  }
  const deps = therapistImportDeps(ctx);
  // The summary is queued in the database with the run's close; only handing it to the email
  // queue needs Redis. Redis away is no reason to report a committed import as failed: the email
  // sweep sends a pending summary.
  const sendEmail = (deliveryId: string) =>
    deps.sendEmail(deliveryId).catch((err: unknown) => ctx.log.warn({ err, deliveryId }, 'therapist import: staff summary not handed to the email queue now (Redis?); the email sweep sends it'));
  const report = await processTherapistFile({ fileId }, { ...deps, sendEmail }, { isFinalAttempt: true });
  if (newer) ctx.log.warn({ fileId, newerFileId: newer.id }, 'therapist file imported by hand over a newer scrape of its postcode (--force)');
  return newer ? { ...report, forcedOver: newer } : report;
}
