import { createHash } from 'node:crypto';
import { constants, lstatSync, realpathSync, statSync, type BigIntStats, type Dirent } from 'node:fs';
import { mkdir, open, readdir, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { Gauge } from 'prom-client';
import { leaseHolder, LOCK_KEYS, type Lease, type LeaseHolder } from '../../libs/db/lease.js';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import { oncePerRegistry } from '../../libs/metrics/index.js';
import { settlesWithin, type Component, type FleetContext } from '../../libs/runtime/index.js';
import {
  closeTherapistRun,
  enqueueFreshTherapistFiles,
  enqueueTherapistFile,
  FileTooLargeError,
  NOT_REGULAR_REASON,
  restoreTherapistDeadLetters,
  sha256OfFile,
  therapistImportMetrics,
  tooLargeReason,
} from '../../workers/therapist-import/index.js';
import { classifyDropPath, dateFolderOfDir, daysBetweenDateFolders, isValidDateFolder } from './scraper-layout.js';

/**
 * The scraper-folder watcher (a producer). It registers every complete file of the drop
 * folder in the tracking table and enqueues one `therapist-import` job per new content hash.
 *
 * - Half-written files are never read: live events come through chokidar's awaitWriteFinish
 *   (size stable for SCRAPER_STABILITY_MS); at start, files younger than that wait as well.
 * - One watcher watches at a time: the one holding a lease (a PostgreSQL advisory lock on a
 *   session of its own). Another one started meanwhile (a second replica, a rolling deploy)
 *   stands by, tries every SCRAPER_LEASE_CHECK_MS and takes over, with a catch-up, when the lease
 *   is free. Two at once would split one drop into two runs and two summaries.
 * - At start it catches up on files dropped while the fleet was down (a scan of the folder),
 *   re-enqueues files registered but not finished, and seals runs a previous watcher left open.
 * - A content already tracked (imported, failed, waiting) is never reported again, also when a
 *   newer date folder supersedes its file now: a restart with nothing new opens no run.
 * - A run is the batch of files picked up together: it opens with the first new file, collects
 *   files until SCRAPER_RUN_QUIET_MS pass without one, is then sealed, and closes (totals, one
 *   staff summary) when its last file is done.
 */
export interface ScraperWatcher extends Component {
  /** Resolves when the start-up catch-up has been registered. */
  caughtUp(): Promise<void>;
  /** Resolves when every event seen so far has been handled (tests). */
  idle(): Promise<void>;
  /** The run currently collecting files, if any. */
  currentRunId(): number | null;
  /** What the last start-up catch-up did: files taken, read and hashed, known by their stat key (not read). */
  catchUpStats(): { files: number; read: number; knownByStat: number } | null;
  /** True while this watcher watches the drop folder; false while another one does (standby). */
  active(): boolean;
}

/** 1 while this process's scraper watcher watches the drop folder, 0 while it stands by. */
const activeGauge = oncePerRegistry(
  (registry) =>
    new Gauge({
      name: 'fleet_scraper_watcher_active',
      help: '1 while this process watches the scraper drop folder (holds the watcher lease), 0 while another watcher does and this one stands by',
      registers: [registry],
    }),
);

/** Size, modification and change times and inode: any write to the file changes it. */
const statKeyOf = (s: BigIntStats) => `${s.size}:${s.mtimeNs}:${s.ctimeNs}:${s.ino}`;

/** A file as the catch-up stat'ed it. */
interface StatSeen {
  size: number;
  statKey: string;
}

const statSeen = (s: BigIntStats): StatSeen => ({ size: Number(s.size), statKey: statKeyOf(s) });

interface FoundFile {
  rel: string;
  abs: string;
}

/**
 * Every file under the drop folder, one folder at a time. A subfolder that cannot be read
 * (permissions: a `lost+found` of a mounted volume, a folder made by another user) is left out
 * and named in `unreadable` (relative paths): one recursive listing of the whole tree would fail
 * on it, and with it the catch-up and the start. Dot folders are skipped, as chokidar ignores
 * them live. The drop folder itself unreadable fails the walk.
 */
async function walk(root: string): Promise<{ files: FoundFile[]; unreadable: string[] }> {
  const files: FoundFile[] = [];
  const unreadable: string[] = [];
  const rel = (abs: string) => path.relative(root, abs).split(path.sep).join('/');
  // `above`: the real paths of the folders above (a link back up the tree is not followed round
  // and round; one to a sibling, `latest -> 20250708`, is listed like any folder).
  const visit = async (dir: string, above: readonly string[] = []): Promise<void> => {
    let entries: Dirent[];
    let real: string;
    try {
      real = await realpath(dir);
      if (leadsBackUp(real, above)) return;
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (dir === root) throw err;
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') unreadable.push(rel(dir)); // ENOENT: removed meanwhile
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.') && !e.isFile()) continue;
      const abs = path.join(dir, e.name);
      const kind = await entryKind(dir, e);
      if (kind === 'dir') await visit(abs, [...above, real]);
      else if (kind === 'file') files.push({ abs, rel: rel(abs) });
    }
  };
  await visit(root);
  return { files, unreadable };
}

/**
 * Whether a folder reached through a link (real path `real`) is one of the folders above it
 * (real paths, the drop folder first) or holds one of them: `loop -> .`, `back -> ..`, or two
 * links pointing at each other's folders. Followed, such a link leads round and round (chokidar
 * reported every file dropped beside `loop -> .` again under `loop/`, `loop/loop/`, … tens of
 * levels deep, each a misfit in the run's summary), or over a whole tree outside the drop folder.
 */
export function leadsBackUp(real: string, above: readonly string[]): boolean {
  return above.some((a) => a === real || a.startsWith(real.endsWith(path.sep) ? real : real + path.sep));
}

/**
 * A folder entry as the watcher takes it: a file, a folder, or neither. A symlink counts as what
 * it points to (a symlinked date folder as the folder, as for chokidar); a broken one is neither.
 */
async function entryKind(dir: string, e: Dirent): Promise<'file' | 'dir' | null> {
  const kindOf = (s: { isFile(): boolean; isDirectory(): boolean }) => (s.isFile() ? 'file' : s.isDirectory() ? 'dir' : null);
  return e.isSymbolicLink() ? stat(path.join(dir, e.name)).then(kindOf, () => null) : kindOf(e);
}

/** Files read, hashed, registered and enqueued together at start-up. */
const CATCH_UP_CHUNK = 50;
/** At most this many files per chunk when they are known by their stat key (not read: only looked up). */
const CATCH_UP_KNOWN_CHUNK = 1_000;
/** Files whose stat keys are looked up in one statement. */
const STAT_LOOKUP_CHUNK = 5_000;

/**
 * A file event or a run seal that failed (PostgreSQL or Redis away) is tried again after this
 * long, doubling up to RETRY_MAX_MS while it keeps failing: chokidar reports a file once.
 */
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export function scraperWatcherComponent(ctx: FleetContext): ScraperWatcher {
  const cfg = ctx.config.therapistImport;
  const root = path.resolve(cfg.dropDir);
  const db = ctx.database.db;
  const log = ctx.log.child({ component: 'scraper-watcher' });
  const metrics = therapistImportMetrics(ctx.metrics);
  let watcher: FSWatcher | null = null;
  let chain: Promise<void> = Promise.resolve();
  let runId: number | null = null;
  let quietTimer: NodeJS.Timeout | null = null;
  const timers = new Set<NodeJS.Timeout>();
  let stopped = false;
  let caughtUp: Promise<void> = Promise.resolve();
  /**
   * Skipped rows the running catch-up found by their files' stat keys (path and content): a
   * restart would otherwise record every superseded week of a kept history again, as a no-op.
   */
  let knownSkips = new Set<string>();
  const skipKey = (filePath: string, contentHash: string | null | undefined) => `${contentHash ?? ''}:${filePath}`;
  /** Counted while the catch-up runs; the last one's figures once it is done. */
  let catchUpCount = { files: 0, read: 0, knownByStat: 0 };
  let lastCatchUp: { files: number; read: number; knownByStat: number } | null = null;
  /** Files whose handling failed, and runs whose seal or close failed: tried again later. */
  const retryPaths = new Set<string>();
  const retryRuns = new Set<number>();
  let retryTimer: NodeJS.Timeout | null = null;
  let retryDelay = RETRY_MIN_MS;

  /** Events are handled one at a time, in order (one run, no races on registration). */
  const serial = (fn: () => Promise<void>): Promise<void> => {
    chain = chain.then(fn).catch((err: unknown) => log.error({ err }, 'scraper watcher: handling a file failed'));
    return chain;
  };

  async function runForNewFile(): Promise<number> {
    if (runId === null) {
      runId = await repo.openRun(db, 'watcher', 'collecting');
      log.info({ runId }, 'therapist import run opened');
    }
    if (quietTimer) clearTimeout(quietTimer);
    quietTimer = setTimeout(() => void serial(sealCurrentRun), cfg.runQuietMs);
    return runId;
  }

  /**
   * Skipped files recorded for the first time join the current run (opened if need be), so its
   * page and staff summary list them; files skipped before (same path and content, or a misfit
   * name whatever its content) are not reported again. A misfit name may be a person's name
   * ("Müller Anna.json"): it is logged by its tracking row id only. A superseded file's path is
   * a date folder and a postcode, no personal data. Files the catch-up knows to be recorded
   * (`knownSkips`) are not sent again.
   */
  async function recordSkipped(
    files: repo.SkippedFile[],
    why: 'misfit' | 'superseded' | 'unreadable' | 'too-large' | 'same-content',
    opts: { live?: boolean; contentFileId?: number } = {},
  ): Promise<void> {
    // A misfit name is reported once whatever its content (live ones carry it, the catch-up's do not).
    const misfitsKnown = why === 'misfit' ? await repo.recordedMisfitPaths(db, files.map((f) => f.path)) : new Set<string>();
    const recorded = await repo.recordSkippedFiles(db, files.filter((f) => !knownSkips.has(skipKey(f.path, f.contentHash)) && !misfitsKnown.has(f.path)));
    if (recorded.length === 0) {
      if (opts.live && files.length === 1) await seenAgainSkipped(files[0]!, why, opts.contentFileId);
      return;
    }
    const run = await runForNewFile();
    await repo.attachFilesToRun(db, recorded.map((r) => r.id), run);
    for (const r of recorded) {
      if (why === 'misfit') log.warn({ fileId: r.id, runId: run }, 'scraper file name does not fit: skipped');
      else if (why === 'unreadable') log.warn({ path: r.path, fileId: r.id, runId: run }, 'scraper file cannot be read: skipped');
      else if (why === 'too-large') log.warn({ path: r.path, fileId: r.id, runId: run }, 'scraper file larger than SCRAPER_FILE_MAX_MB: skipped');
      else if (why === 'same-content') log.info({ path: r.path, fileId: r.id, runId: run }, 'scraper file has the content of another file: skipped');
      else log.info({ path: r.path, fileId: r.id, runId: run }, 'scraper file superseded by a newer date folder: skipped');
      metrics.fileFinished('skipped', null);
    }
  }

  /**
   * A file dropped again (a live event) that a skipped row records already: it is not reported
   * again (run, summary), but logged at info naming that row, so an operator can tell the watcher
   * saw it. A misfit name may be a person's: by the row's id only. The catch-up does not log
   * these (a restart finds every kept file again).
   */
  async function seenAgainSkipped(f: repo.SkippedFile, why: 'misfit' | 'superseded' | 'unreadable' | 'too-large' | 'same-content', contentFileId?: number): Promise<void> {
    const earlier = await repo.findSkippedFile(db, f.path, why === 'misfit' ? undefined : (f.contentHash ?? null));
    const fields = { earlierFileId: earlier?.id ?? null, skipped: why, ...(contentFileId === undefined ? {} : { contentFileId }) };
    if (why === 'misfit') log.info(fields, 'scraper file seen again: skipped before, not reported again');
    else log.info({ path: f.path, ...fields }, 'scraper file seen again: skipped before, not reported again');
  }

  /** A file of a fitting name that cannot be read (permissions): reported once by path, imported once it can be read. */
  const unreadableReason = (err: unknown) =>
    `cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); once it can be read (permissions fixed, or dropped again) it is imported`;


  const supersededReason = (newer: string, postcode: string) => `superseded by the newer folder ${newer}/${postcode}.json`;

  /**
   * A file whose content another file already brought (a copy into urgent/, the same bytes under
   * two postcodes): not imported again, but reported once under its own name, so staff looking
   * for it find why. A CLI import's absolute path may name a person: it is named by its id.
   */
  const sameContentReason = (earlier: { id?: number; path: string; status?: string }) => {
    const which = path.isAbsolute(earlier.path) ? `an earlier file` : earlier.path;
    const row = earlier.id === undefined ? '' : ` (file ${earlier.id}, ${earlier.status})`;
    return `same content as ${which}${row}: a content is imported once`;
  };

  /**
   * The newest date folder on disk, newer than `after`, that holds `<postcode>.json` (complete
   * or still being written), or null.
   *
   * Why on disk at handle time (and not a settle window): a live event comes only after the file
   * has been stable for SCRAPER_STABILITY_MS, so when folders are copied in one go the newer one
   * is already there when the older file is handled, whatever order chokidar reports them in.
   * No timers, no state, and the newer file is imported on its own event. An older file that
   * arrives after the newer one was registered is caught by the database check as before.
   */
  async function newerDateFolderOnDisk(postcode: string, after: string): Promise<string | null> {
    const entries = await readdir(root, { withFileTypes: true }).catch((): Dirent[] => []);
    const newer = entries
      .filter((e) => (e.isDirectory() || e.isSymbolicLink()) && /^\d{8}$/.test(e.name) && e.name > after && isValidDateFolder(e.name) && canBeNewest(e.name))
      .map((e) => e.name)
      .sort()
      .reverse();
    for (const d of newer) {
      const s = await stat(path.join(root, d, `${postcode}.json`)).catch(() => null);
      if (s?.isFile()) return d;
    }
    return null;
  }

  /**
   * A waiting file found under another name than its row's (moved to urgent/ or another folder
   * while queued): when the old name is gone, the row follows the file, else the worker would
   * find nothing at the old name and the content would wait for the next restart.
   */
  async function followMove(
    row: repo.TherapistImportFileRow,
    at: { path: string; postcode: string | null; dateFolder: string | null; urgent: boolean },
  ): Promise<repo.TherapistImportFileRow> {
    if (row.status !== 'queued' || row.path === at.path || path.isAbsolute(row.path)) return row;
    if (await stat(path.join(root, row.path)).then(() => true, () => false)) return row;
    const moved = await repo.relocateQueuedFile(db, row.id, { path: at.path, postcode: at.postcode, dateFolder: at.dateFolder, urgent: at.urgent });
    if (!moved) return row;
    log.info({ fileId: row.id, from: row.path, to: at.path }, 'waiting scraper file moved: following it');
    return moved;
  }

  /**
   * A file whose content is tracked already: a waiting row follows a moved file and is enqueued
   * (again); a file under another name than the row's is reported once as the same content.
   */
  async function knownContent(
    existing: repo.TherapistImportFileRow,
    at: { path: string; postcode: string | null; dateFolder: string | null; urgent: boolean; contentHash: string; sizeBytes: number },
    opts: { live?: boolean } = {},
  ): Promise<void> {
    const waiting = existing.status === 'queued' || existing.status === 'importing';
    const row = waiting ? await followMove(existing, at) : existing;
    if (waiting) await enqueueTherapistFile(ctx, row);
    if (row.path !== at.path) {
      await recordSkipped([{ ...at, reason: sameContentReason(row) }], 'same-content', { ...opts, contentFileId: row.id });
    } else if (opts.live) {
      // The same file dropped again (identical bytes): nothing to import or report, but an
      // operator looking for it finds this line. Its path is a postcode (and date folder).
      log.info({ path: at.path, earlierFileId: row.id, earlierStatus: row.status }, 'scraper file seen again with the content of an earlier file: not imported again');
    }
  }

  async function sealCurrentRun(): Promise<void> {
    if (quietTimer) clearTimeout(quietTimer);
    quietTimer = null;
    if (runId === null) return;
    const id = runId;
    runId = null;
    await sealRun(id);
  }

  /** Seals a run and closes it when its files are done; a failure is tried again later. */
  async function sealRun(id: number): Promise<void> {
    try {
      await repo.sealRun(db, id);
      const delivery = await closeTherapistRun(ctx, id);
      log.info({ runId: id, summaryQueued: delivery !== null }, 'therapist import run sealed');
    } catch (err) {
      retryRuns.add(id);
      log.warn({ err, runId: id, retryInMs: retryDelay }, 'scraper watcher: sealing a run failed; trying again later');
      retryLater();
    }
  }

  /** Handles a file event; a failure is logged (without the path: it may be a name) and the file handled again later. */
  async function handleOrRetry(rel: string): Promise<void> {
    const err = await handleOrKeep(rel);
    if (err === null) return;
    log.warn({ err, waiting: retryPaths.size, retryInMs: retryDelay }, 'scraper watcher: handling a file failed; trying again later');
    retryLater();
  }

  /** Handles a file; when that fails, keeps it for the next retry and returns why. */
  async function handleOrKeep(rel: string): Promise<unknown> {
    try {
      await handle(rel);
      return null;
    } catch (err) {
      retryPaths.add(rel);
      return err;
    }
  }

  function retryLater(): void {
    if (stopped || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = null;
      void serial(retryFailed);
    }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
  }

  /**
   * PostgreSQL is back (the lease was taken again after its session was lost), or Redis is (the
   * producer connection is ready again): files and runs waiting for a retry are tried now. Their
   * delay grew while the outage lasted (up to RETRY_MAX_MS), and they waited the rest of it, up to
   * 30 s after everything else had resumed (a Redis drill: 29 s).
   */
  function retryNow(): void {
    if (stopped || !retryTimer) return;
    clearTimeout(retryTimer);
    retryTimer = null;
    void serial(retryFailed);
  }

  async function retryFailed(): Promise<void> {
    const runs = [...retryRuns];
    retryRuns.clear();
    for (const id of runs) await sealRun(id);
    const paths = [...retryPaths];
    retryPaths.clear();
    // One line per round, not per file: a Redis or PostgreSQL outage with a drop of 400 files
    // waiting logged 400 lines with a stack at every retry (every 30 s once the delay had grown).
    let failed = 0;
    let firstErr: unknown = null;
    for (const rel of paths) {
      const err = await handleOrKeep(rel);
      if (err === null) continue;
      failed++;
      firstErr ??= err;
    }
    if (failed > 0) {
      log.warn({ err: firstErr, failed, waiting: retryPaths.size, retryInMs: retryDelay }, 'scraper watcher: handling waiting files failed again; trying again later');
      retryLater();
    }
    if (retryPaths.size === 0 && retryRuns.size === 0) retryDelay = RETRY_MIN_MS;
  }

  async function handle(rel: string): Promise<void> {
    const entry = classifyDropPath(rel);
    if (entry.kind === 'ignore') return;
    if (entry.kind === 'misfit') {
      await recordSkipped([{ path: rel, reason: entry.reason, ...(await misfitContent(rel)) }], 'misfit', { live: true });
      return;
    }
    const at = { path: rel, postcode: entry.postcode, dateFolder: entry.dateFolder, urgent: entry.urgent };
    const read = await readTracked(at);
    if (!read) return;
    if ('unreadable' in read) {
      await recordSkipped([read.unreadable], 'unreadable', { live: true });
      return;
    }
    await registerRead(entry, { ...at, contentHash: read.contentHash, sizeBytes: read.sizeBytes }, read.tooLarge);
    // On its rows: the next start's catch-up finds it unchanged without reading it.
    await repo.setStatKeys(db, [{ path: rel, contentHash: read.contentHash, statKey: read.statKey }]);
  }

  /**
   * The content hash and size of a live misfit (a regular file within SCRAPER_FILE_MAX_MB; else
   * none): the file renamed to its right name and imported is found by it, so the run's summary,
   * `fleet daily` and `/imports` say it was imported since instead of asking staff to rename it.
   * The catch-up at start records misfits by name only (it does not read thousands of them).
   */
  async function misfitContent(rel: string): Promise<{ contentHash?: string; sizeBytes?: number }> {
    try {
      const fh = await open(path.join(root, rel), constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const st = await fh.stat();
        if (!st.isFile() || st.size > cfg.maxFileBytes) return {};
        return await sha256OfFile(fh);
      } finally {
        await fh.close();
      }
    } catch {
      return {}; // gone again, or not readable: recorded by its name only
    }
  }

  /** A live file read and hashed: known content, superseded, too large, or registered and enqueued. */
  async function registerRead(
    entry: { postcode: string; dateFolder: string | null; urgent: boolean },
    base: { path: string; postcode: string; dateFolder: string | null; urgent: boolean; contentHash: string; sizeBytes: number },
    tooLarge: FileTooLargeError | null,
  ): Promise<void> {

    // A content tracked before comes first: an older date folder imported before the newer one
    // arrived is not re-reported as superseded (on every restart or rewrite).
    const existing = await repo.findLiveByHash(db, base.contentHash);
    if (existing) {
      await knownContent(existing, base, { live: true });
      return;
    }

    if (entry.dateFolder && !entry.urgent) {
      const newer = [await newerDateFolderOnDisk(entry.postcode, entry.dateFolder), await repo.newestDateFolder(db, entry.postcode, latestPlausibleDate())]
        .filter((d): d is string => !!d)
        .sort()
        .pop();
      if (newer && newer > entry.dateFolder) {
        await recordSkipped([{ ...base, reason: supersededReason(newer, entry.postcode) }], 'superseded', { live: true });
        return;
      }
    }
    if (tooLarge) {
      await recordSkipped([{ ...base, reason: tooLargeReason(tooLarge) }], 'too-large', { live: true });
      return;
    }
    const run = await runForNewFile();
    const { file, created } = await repo.registerFile(db, { ...base, runId: run });
    await enqueueTherapistFile(ctx, file, { fresh: created });
    if (created) log.info({ fileId: file.id, runId: run, urgent: entry.urgent }, 'scraper file registered');
  }

  /**
   * Reads and hashes a file of a fitting name. Null when it is gone again (or, in the catch-up,
   * written to since it was found: then it is handled once it settles); `unreadable` when it
   * cannot be read (permissions); `tooLarge` when it is over SCRAPER_FILE_MAX_MB: then it is
   * hashed in chunks, never held in memory (skipped per content, imported once it may be).
   * `seen`: the file as the caller has just stat'ed it (the catch-up), else it is stat'ed here
   * (before reading: a write meanwhile leaves a key that no longer matches, so it is read again).
   * `knownHash`: its content hash as recorded under that stat key: the file is not read.
   */
  async function readTracked(
    at: { path: string; postcode: string; dateFolder: string | null; urgent: boolean },
    seen?: StatSeen,
    knownHash?: string,
  ): Promise<null | { unreadable: repo.SkippedFile } | { contentHash: string; sizeBytes: number; statKey: string; tooLarge: FileTooLargeError | null }> {
    const abs = path.join(root, at.path);
    try {
      if (knownHash && seen) {
        const tooLarge = seen.size > cfg.maxFileBytes ? new FileTooLargeError(seen.size, cfg.maxFileBytes) : null;
        return { contentHash: knownHash, sizeBytes: seen.size, statKey: seen.statKey, tooLarge };
      }
      // Opened without waiting (a FIFO no one writes to would block the read, and every event
      // after it, for ever), and read only when it is a regular file: a named pipe, a device
      // (a link to /dev/zero never ends) or a socket with a fitting name is reported, not read.
      const fh = await open(abs, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const st = await fh.stat({ bigint: true });
        if (!st.isFile()) return { unreadable: { ...at, reason: NOT_REGULAR_REASON } };
        // Written to since the catch-up found it settled (a scraper overwriting it now): read
        // now, it may be half written. It is handled once it settles, as a live drop is.
        if (seen && statKeyOf(st) !== seen.statKey) {
          whenStable(abs, at.path);
          return null;
        }
        const s: StatSeen = seen ?? statSeen(st);
        const tooLarge = s.size > cfg.maxFileBytes ? new FileTooLargeError(s.size, cfg.maxFileBytes) : null;
        if (knownHash) return { contentHash: knownHash, sizeBytes: s.size, statKey: s.statKey, tooLarge };
        if (tooLarge) return { ...(await sha256OfFile(fh)), statKey: s.statKey, tooLarge };
        const buf = await fh.readFile();
        return { contentHash: createHash('sha256').update(buf).digest('hex'), sizeBytes: buf.length, statKey: s.statKey, tooLarge: null };
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null; // removed again before we read it
      return { unreadable: { ...at, reason: unreadableReason(err) } };
    }
  }

  /** A file still being written at start: handled once its size and mtime stop changing. */
  function whenStable(abs: string, rel: string): void {
    const check = async (prev: { size: number; mtimeMs: number } | null) => {
      if (stopped) return;
      const s = await stat(abs).catch(() => null);
      if (!s) return;
      if (prev && prev.size === s.size && prev.mtimeMs === s.mtimeMs) {
        void serial(() => handleOrRetry(rel));
        return;
      }
      const t = setTimeout(() => {
        timers.delete(t);
        void check({ size: s.size, mtimeMs: s.mtimeMs });
      }, cfg.stabilityMs);
      timers.add(t);
    };
    void check(null);
  }

  /**
   * The start-up catch-up in batches (one query per step and chunk, not per file): misfits
   * and files a newer date folder supersedes are recorded as skipped, new contents are
   * registered in one run and enqueued, urgent files first. `onDisk` is every file found, also
   * those still being written (a newer date folder supersedes as soon as it is there).
   */
  async function registerBatch(rels: string[], onDisk: string[], seen: Map<string, StatSeen>): Promise<void> {
    const misfits: Array<{ path: string; reason: string }> = [];
    const candidates: Array<{ rel: string; postcode: string; dateFolder: string | null; urgent: boolean }> = [];
    for (const rel of rels) {
      const e = classifyDropPath(rel);
      if (e.kind === 'misfit') misfits.push({ path: rel, reason: e.reason });
      else if (e.kind === 'import') candidates.push({ rel, postcode: e.postcode, dateFolder: e.dateFolder, urgent: e.urgent });
    }
    // In chunks: one statement takes at most 65,534 parameters (ten a row), and a folder can
    // hold thousands of misfits (a scraper that changed its folder names, kept for weeks).
    for (let i = 0; i < misfits.length; i += CATCH_UP_KNOWN_CHUNK) await recordSkipped(misfits.slice(i, i + CATCH_UP_KNOWN_CHUNK), 'misfit');

    // Newest date folder per postcode: among the files on disk now and those registered before.
    const newest = await repo.newestDateFolders(db, [...new Set(candidates.filter((c) => c.dateFolder && !c.urgent).map((c) => c.postcode))], latestPlausibleDate());
    for (const rel of onDisk) {
      const e = classifyDropPath(rel);
      if (e.kind === 'import' && e.dateFolder && !e.urgent && canBeNewest(e.dateFolder) && (newest.get(e.postcode) ?? '') < e.dateFolder) newest.set(e.postcode, e.dateFolder);
    }
    // A file whose path and stat key were recorded with its content hash is not read again (a
    // year of kept weekly drops is 20,000 files, read at every start otherwise).
    const byStat = new Map<string, repo.KnownByStat>();
    const keyed = candidates.flatMap((c) => (seen.has(c.rel) ? [{ path: c.rel, statKey: seen.get(c.rel)!.statKey }] : []));
    for (let i = 0; i < keyed.length; i += STAT_LOOKUP_CHUNK) {
      for (const [p, k] of await repo.findByStatKeys(db, keyed.slice(i, i + STAT_LOOKUP_CHUNK))) {
        byStat.set(p, k);
        if (k.skipped) knownSkips.add(skipKey(p, k.contentHash));
      }
    }
    // In chunks, urgent files first: the workers start on the first chunk while the rest is
    // still being read and hashed (a full-country drop is hundreds of files). A chunk holds
    // CATCH_UP_CHUNK files to read, or more files known by their stat key (only looked up).
    candidates.sort((a, b) => Number(b.urgent) - Number(a.urgent));
    let chunk: typeof candidates = [];
    let toRead = 0;
    for (const c of candidates) {
      chunk.push(c);
      if (!byStat.has(c.rel)) toRead++;
      if (toRead === CATCH_UP_CHUNK || chunk.length === CATCH_UP_KNOWN_CHUNK) {
        await registerChunk(chunk, newest, seen, byStat);
        chunk = [];
        toRead = 0;
      }
    }
    if (chunk.length > 0) await registerChunk(chunk, newest, seen, byStat);
  }

  async function registerChunk(
    candidates: Array<{ rel: string; postcode: string; dateFolder: string | null; urgent: boolean }>,
    newest: Map<string, string>,
    seen: Map<string, StatSeen>,
    byStat: Map<string, repo.KnownByStat>,
  ): Promise<void> {
    const read = await Promise.all(
      candidates.map((c) => {
        const known = byStat.get(c.rel)?.contentHash;
        if (known) catchUpCount.knownByStat++;
        else catchUpCount.read++;
        return readTracked({ path: c.rel, postcode: c.postcode, dateFolder: c.dateFolder, urgent: c.urgent }, seen.get(c.rel), known);
      }),
    );
    // One file we cannot read (permissions) must not stop the catch-up of the others.
    await recordSkipped(read.flatMap((r) => (r && 'unreadable' in r ? [r.unreadable] : [])), 'unreadable');
    const hashed: Array<repo.NewTrackedFile> = [];
    const tooLarge = new Map<repo.NewTrackedFile, FileTooLargeError>();
    read.forEach((r, i) => {
      if (!r || 'unreadable' in r) return;
      const c = candidates[i]!;
      const h = { runId: null, path: c.rel, postcode: c.postcode, dateFolder: c.dateFolder, urgent: c.urgent, contentHash: r.contentHash, sizeBytes: r.sizeBytes };
      hashed.push(h);
      if (r.tooLarge) tooLarge.set(h, r.tooLarge);
    });

    // A content tracked before comes first (as in handle): a file imported before a newer date
    // folder arrived is not re-reported as superseded on every restart.
    const live = new Map((await repo.findLiveByHashes(db, hashed.map((h) => h.contentHash))).map((r) => [r.contentHash!, r]));
    const superseded: repo.SkippedFile[] = [];
    const copies: repo.SkippedFile[] = [];
    const large: repo.SkippedFile[] = [];
    const fresh = new Map<string, repo.NewTrackedFile>();
    for (const h of hashed) {
      const existing = live.get(h.contentHash);
      const newer = h.postcode ? newest.get(h.postcode) : undefined;
      const over = tooLarge.get(h);
      if (existing) {
        await knownContent(existing, h);
      } else if (h.dateFolder && !h.urgent && newer && newer > h.dateFolder) {
        superseded.push({ ...h, reason: supersededReason(newer, h.postcode!) });
      } else if (over) {
        large.push({ ...h, reason: tooLargeReason(over) });
      } else if (fresh.has(h.contentHash)) {
        copies.push({ ...h, reason: sameContentReason(fresh.get(h.contentHash)!) });
      } else {
        fresh.set(h.contentHash, h);
      }
    }
    await recordSkipped(superseded, 'superseded');
    await recordSkipped(copies, 'same-content');
    await recordSkipped(large, 'too-large');
    if (fresh.size > 0) {
      const run = await runForNewFile();
      const rows = await repo.registerFiles(db, [...fresh.values()].map((f) => ({ ...f, runId: run })));
      rows.sort((a, b) => Number(b.urgent) - Number(a.urgent) || a.id - b.id);
      // Urgent files first (and with the higher priority); one Redis round trip for the chunk.
      await enqueueFreshTherapistFiles(ctx, rows);
      log.info({ runId: run, files: rows.length }, 'scraper files registered');
    }
    // The stat keys of the files read, on their rows (now all recorded): the next start skips them.
    await repo.setStatKeys(
      db,
      read.flatMap((r, i) => (r && !('unreadable' in r) && !byStat.has(candidates[i]!.rel) ? [{ path: candidates[i]!.rel, contentHash: r.contentHash, statKey: r.statKey }] : [])),
    );
  }

  async function catchUp(): Promise<void> {
    // Runs a previous watcher left collecting are sealed; open runs whose files are done close.
    await repo.sealCollectingRuns(db);
    for (const id of await repo.openRunIds(db)) await closeTherapistRun(ctx, id);
    for (const f of await repo.unfinishedFiles(db)) await enqueueTherapistFile(ctx, f);

    const now = Date.now();
    const { files: found, unreadable } = await walk(root);
    if (unreadable.length > 0) {
      // Named only when it is a folder of the layout (urgent/, a date folder): another name may be a person's.
      const layout = unreadable.filter((d) => d === 'urgent' || dateFolderOfDir(d) !== null);
      log.warn(
        { folders: unreadable.length, layoutFolders: layout },
        'scraper drop folder: subfolders that cannot be read (permissions?) are left out of the catch-up; their files are caught up at the next start once they can be read',
      );
    }
    const ready: string[] = [];
    /** As stat'ed here: the size limit is checked, and unchanged files are known, without a second stat per file. */
    const seen = new Map<string, StatSeen>();
    const stats = await Promise.all(found.map((f) => stat(f.abs, { bigint: true }).catch(() => null)));
    found.forEach((f, i) => {
      const s = stats[i];
      if (!s) return;
      if (now - Number(s.mtimeMs) < cfg.stabilityMs) whenStable(f.abs, f.rel);
      else {
        ready.push(f.rel);
        seen.set(f.rel, statSeen(s));
      }
    });
    catchUpCount = { files: ready.length, read: 0, knownByStat: 0 };
    try {
      await registerBatch(ready, found.map((f) => f.rel), seen);
    } finally {
      knownSkips = new Set();
    }
    lastCatchUp = { ...catchUpCount };
    log.info({ files: ready.length, waiting: found.length - ready.length, read: catchUpCount.read, knownByStat: catchUpCount.knownByStat }, 'scraper folder caught up');
  }

  /**
   * Live watching covers the folder's own files, urgent/ and the date folders within
   * SCRAPER_WATCH_DAYS of the newest date folder. chokidar holds every file it watches (~10 KB
   * each; polling stats each one every interval), and the scraper's files are kept: a year of
   * weekly full drops is 20,000 files. Older date folders are history: not watched live, their
   * files read by the catch-up at start as before (superseded by newer folders, mostly).
   */
  let newestDate: string | null = null;
  /** Date folders watched live (relative paths). */
  const watchedDates = new Set<string>();
  const reportedHistory = new Set<string>();
  let scanned = false;
  const isHistory = (date: string) => cfg.watchDays > 0 && newestDate !== null && daysBetweenDateFolders(date, newestDate) > cfg.watchDays;
  /**
   * A folder dated after tomorrow (a scraper's clock or a typo: 20991231) is imported and
   * watched, but neither moves the window (it would leave every real folder unwatched) nor
   * supersedes other folders (its postcodes' real weeks would be skipped from then on).
   */
  const canBeNewest = (date: string) => date <= latestPlausibleDate();
  const warnMisdated = (folder: string) =>
    log.warn({ folder }, 'date folder dated after tomorrow (misdated?): its files are imported, but it supersedes no other folder');
  /** Tomorrow (YYYYMMDD, UTC): a date folder after it is misdated. */
  const latestPlausibleDate = () => new Date(ctx.clock.now().getTime() + 86_400_000).toISOString().slice(0, 10).replace(/-/g, '');
  const relOf = (abs: string) => path.relative(root, abs).split(path.sep).join('/');
  /** Links leading back up that were said (relative paths), once each per start. */
  const reportedLoops = new Set<string>();

  /**
   * A link to a folder that leads back up (see `leadsBackUp`): chokidar follows links to folders,
   * so the live watcher would go round and round where the start-up walk does not. Said once per
   * link. Only links are looked at (one lstat per path chokidar asks about).
   */
  function linkLeadsBackUp(p: string): boolean {
    try {
      if (!lstatSync(p).isSymbolicLink() || !statSync(p).isDirectory()) return false;
      const real = realpathSync(p);
      const above: string[] = [];
      for (let dir = path.dirname(p); ; dir = path.dirname(dir)) {
        above.push(realpathSync(dir));
        if (dir === root || dir === path.dirname(dir)) break;
      }
      if (!leadsBackUp(real, above)) return false;
    } catch {
      return false; // gone meanwhile, or broken: the file events say what it is
    }
    const rel = relOf(p);
    if (!reportedLoops.has(rel)) {
      reportedLoops.add(rel);
      // Not named (a name in the drop folder may be a person's, as for misfit files): its depth, and how to find it.
      log.warn(
        { depth: rel.split('/').length },
        'a link in the drop folder points to a folder above it (or holding it): not followed, as the start-up scan does not (find SCRAPER_DROP_DIR -type l lists the links)',
      );
    }
    return true;
  }

  function ignoredPath(p: string): boolean {
    if (p === root) return false;
    if (path.basename(p).startsWith('.')) return true;
    if (linkLeadsBackUp(p)) return true;
    const rel = relOf(p);
    const date = dateFolderOfDir(rel);
    if (!date || !isHistory(date)) return false;
    // One made while the fleet runs (a backfill): said once, caught up at the next start.
    if (scanned && !reportedHistory.has(rel)) {
      reportedHistory.add(rel);
      log.warn({ folder: rel, newest: newestDate, watchDays: cfg.watchDays }, 'date folder older than SCRAPER_WATCH_DAYS: not watched; its files are caught up at the next start (where a newer date folder has the same postcode, that one wins)');
    }
    return true;
  }

  async function scanDateFolders(): Promise<number> {
    const dates: string[] = [];
    for (const base of ['', 'urgent/']) {
      const entries = await readdir(path.join(root, base), { withFileTypes: true }).catch((): Dirent[] => []);
      for (const e of entries) if ((await entryKind(path.join(root, base), e)) === 'dir' && dateFolderOfDir(`${base}${e.name}`)) dates.push(`${base}${e.name}`);
    }
    for (const d of dates) if (!canBeNewest(dateFolderOfDir(d)!)) warnMisdated(d);
    newestDate = dates.map((d) => dateFolderOfDir(d)!).filter(canBeNewest).sort().pop() ?? null;
    let history = 0;
    for (const d of dates) {
      if (isHistory(dateFolderOfDir(d)!)) history++;
      else watchedDates.add(d);
    }
    return history;
  }

  /** A new date folder: the newest moves on, and folders it leaves behind are no longer watched. */
  function onDir(abs: string): void {
    const rel = relOf(abs);
    const date = dateFolderOfDir(rel);
    if (!date || !watcher) return;
    watchedDates.add(rel);
    if (!canBeNewest(date)) warnMisdated(rel);
    if ((newestDate !== null && date <= newestDate) || !canBeNewest(date)) return;
    newestDate = date;
    for (const d of watchedDates) {
      if (!isHistory(dateFolderOfDir(d)!)) continue;
      watchedDates.delete(d);
      void watcher.unwatch(path.join(root, d));
      log.info({ folder: d, newest: newestDate }, 'date folder older than SCRAPER_WATCH_DAYS: no longer watched live');
    }
  }

  // The lease: this watcher watches only while it holds it (see checkLease).
  const gauge = activeGauge(ctx.metrics.registry);
  let active = false;
  let lease: Lease | null = null;
  let shutDown = false;
  let leaseTimer: NodeJS.Timeout | null = null;
  /** Lease checks and the take-overs and step-downs they lead to, one at a time. */
  let leaseChain: Promise<void> = Promise.resolve();
  /** Said once per spell: PostgreSQL away while checking the lease. */
  let leaseTrouble = false;
  /** What it does while it does not watch, for GET /ready (see `ready`). */
  let notWatching: { detail: string; catchingUp?: true } = { detail: 'not started yet' };
  const STANDING_BY = 'standing by: another scraper watcher watches the drop folder';

  let holder: LeaseHolder | null = null;
  const tryLease = () => (holder ??= leaseHolder(ctx.database, LOCK_KEYS.scraperWatcher, 'scraper-watcher')).acquire();

  /**
   * The drop folder being watched (device and inode: one moved away and made again is another
   * folder), and whether chokidar saw it removed (one made again at once may get the same inode).
   */
  let watchedFolder: string | null = null;
  let folderRemoved = false;
  /**
   * The watched folder, held open: its inode cannot be handed to a folder made in its place
   * (without it, `rm -r` and `mkdir` gave the new folder the same inode number), and its link
   * count drops to 0 once it is removed.
   */
  let rootHandle: FileHandle | null = null;
  /** Another identity seen at the last check: taken for a new folder once a second check sees it too. */
  let otherFolder: string | null = null;
  const folderIdentity = async () => stat(root).then((s) => `${s.dev}:${s.ino}`, () => null);
  /**
   * Removed (chokidar said so, the held folder has no link left, or nothing is at its path), or
   * another folder at its path: a device and inode other than the watched one's, the same at two
   * checks in a row. A file system that hands out a new inode number at every look (some FUSE
   * mounts) never shows the same one twice, and so does not make the watcher start again (and
   * seal its run) at every check.
   */
  const folderReplaced = async () => {
    if (folderRemoved) return true;
    const held = await rootHandle?.stat().catch(() => null);
    if (held && held.nlink === 0) return true;
    const now = await folderIdentity();
    if (now === null) return true;
    if (now === watchedFolder) {
      otherFolder = null;
      return false;
    }
    if (now === otherFolder) return true;
    otherFolder = now;
    return false;
  };

  /** Starts watching: the date folders, chokidar, the catch-up. A failed catch-up undoes it and throws. */
  async function activate(): Promise<void> {
    stopped = false;
    await mkdir(root, { recursive: true });
    await rootHandle?.close().catch(() => {});
    rootHandle = await open(root, 'r');
    const held = await rootHandle.stat();
    watchedFolder = `${held.dev}:${held.ino}`;
    folderRemoved = false;
    otherFolder = null;
    watchedDates.clear();
    reportedHistory.clear();
    reportedLoops.clear();
    scanned = false;
    const history = await scanDateFolders();
    watcher = watch(root, {
      ignoreInitial: true,
      persistent: true,
      usePolling: cfg.usePolling,
      interval: cfg.pollIntervalMs,
      awaitWriteFinish: { stabilityThreshold: cfg.stabilityMs, pollInterval: cfg.pollIntervalMs },
      ignored: ignoredPath,
    });
    const onFile = (abs: string) => {
      const rel = relOf(abs);
      void serial(() => handleOrRetry(rel));
    };
    watcher.on('add', onFile).on('change', onFile).on('addDir', onDir);
    watcher.on('unlinkDir', (abs) => {
      if (abs === root) folderRemoved = true;
      watchedDates.delete(relOf(abs));
    });
    watcher.on('error', (err) => log.error({ err }, 'scraper watcher error'));
    await new Promise<void>((resolve) => watcher!.once('ready', () => resolve()));
    scanned = true;
    if (history > 0) log.info({ folders: history, newest: newestDate, watchDays: cfg.watchDays }, 'date folders older than SCRAPER_WATCH_DAYS are not watched live (caught up at start)');
    // A catch-up that fails (PostgreSQL or Redis away) fails the start: running on would
    // leave the files dropped while the fleet was down unregistered until the next start.
    let failure: { err: unknown } | null = null;
    caughtUp = serial(async () => {
      try {
        await catchUp();
      } catch (err) {
        failure = { err };
      }
    });
    await caughtUp;
    if (failure) {
      stopped = true;
      await watcher.close();
      watcher = null;
      throw (failure as { err: unknown }).err;
    }
    active = true;
    gauge.set(1);
    log.info({ dir: root }, 'scraper watcher started');
  }

  /** Stops watching: timers and retries dropped (the next catch-up finds their files), chokidar closed, the collecting run sealed. */
  async function deactivate(): Promise<void> {
    active = false;
    gauge.set(0);
    stopped = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = null;
    // Files still waiting for a retry are found on disk by the next start's catch-up.
    retryPaths.clear();
    retryRuns.clear();
    retryDelay = RETRY_MIN_MS;
    await watcher?.close();
    watcher = null;
    await rootHandle?.close().catch(() => {});
    rootHandle = null;
    await serial(sealCurrentRun);
  }


  /**
   * Every SCRAPER_LEASE_CHECK_MS. The active watcher checks that its session still holds the
   * lease; a lost session (PostgreSQL restarted, the connection broke) takes the lease again,
   * or, when another watcher has taken it meanwhile, stands by. PostgreSQL away: the active
   * watcher watches on (its file events wait for PostgreSQL as before), a standby waits. A
   * standby takes the lease when it is free and starts watching, with a catch-up.
   */
  async function checkLease(): Promise<void> {
    if (shutDown) return;
    if (lease && (await lease.held().catch(() => false))) {
      if (active && (await folderReplaced())) await watchAgain();
      return void (reoffering ??= reofferUnfinished().finally(() => (reoffering = null)));
    }
    await lease?.release();
    lease = null;
    let got: Lease | null;
    try {
      got = await tryLease();
    } catch (err) {
      if (!leaseTrouble) log.warn({ err, active }, 'scraper watcher cannot reach PostgreSQL to check its lease; trying again');
      leaseTrouble = true;
      if (!active) notWatching = { detail: `not watching: waiting for PostgreSQL to take the watcher lease (trying every ${cfg.leaseCheckMs} ms)` };
      return;
    }
    leaseTrouble = false;
    if (shutDown) return void (await got?.release());
    if (!got) {
      if (!active) return void (notWatching = { detail: STANDING_BY });
      log.warn('another scraper watcher took the lease while this one had lost its PostgreSQL session: standing by');
      await deactivate();
      notWatching = { detail: STANDING_BY };
      return;
    }
    lease = got;
    if (active) {
      log.info({ waiting: retryPaths.size, runsWaiting: retryRuns.size }, 'scraper watcher took its lease again after losing its PostgreSQL session');
      retryNow();
      return;
    }
    try {
      notWatching = { detail: 'taking over: catching up on the drop folder', catchingUp: true };
      await activate();
      log.info('scraper watcher took over: the drop folder was not watched by another one any more');
    } catch (err) {
      log.warn({ err }, 'scraper watcher could not take over (catch-up failed); trying again');
      notWatching = { detail: `not watching: the catch-up failed; trying again every ${cfg.leaseCheckMs} ms` };
      await lease.release();
      lease = null;
    }
  }

  /**
   * The drop folder was removed (and made again, or not) while watched: chokidar keeps watching
   * the folder that is gone and reports nothing dropped into the new one, while /ready says
   * `watching`. Watching starts again (the folder made if need be, as at start), with a catch-up
   * for the files dropped meanwhile; the run collecting so far is sealed. A failed catch-up gives
   * the lease back, and the next check takes it and tries again, as a take-over does.
   */
  async function watchAgain(): Promise<void> {
    log.warn({ dir: root }, 'scraper drop folder removed or replaced while watched: watching it again, with a catch-up');
    await deactivate();
    try {
      notWatching = { detail: 'starting: catching up on the drop folder', catchingUp: true };
      await activate();
    } catch (err) {
      log.warn({ err }, 'scraper watcher could not watch the drop folder again (catch-up failed); trying again');
      notWatching = { detail: `not watching: the catch-up failed; trying again every ${cfg.leaseCheckMs} ms` };
      await lease?.release();
      lease = null;
    }
  }

  /**
   * Every SCHEDULE_CHECK_MS, by the active watcher: files registered but not finished are offered
   * to the queue again (a no-op for those whose job is there). Redis restarted without its data
   * loses their jobs, and the rows would wait as `queued` until the next start's catch-up; and
   * the dead letters of failed files, which `restoreTherapistDeadLetters` gives back.
   */
  let lastReoffer = Date.now();
  // Off the lease checks' chain: a silent Redis must not hold up the lease (and a take-over).
  let reoffering: Promise<void> | null = null;
  async function reofferUnfinished(): Promise<void> {
    if (!active || Date.now() - lastReoffer < ctx.config.queues.scheduleCheckMs) return;
    lastReoffer = Date.now();
    try {
      for (const f of await repo.unfinishedFiles(db)) await enqueueTherapistFile(ctx, f);
      // Failed files whose dead letter Redis lost (restarted without its data) get it back.
      const restored = await restoreTherapistDeadLetters(ctx);
      if (restored) log.warn({ restored }, 'scraper watcher: dead letters of failed therapist files were missing (Redis lost its data?) and are back (fleet dlq list)');
    } catch (err) {
      log.warn({ err }, 'scraper watcher: offering unfinished files to the queue again failed; trying again later');
    }
  }

  function scheduleLeaseCheck(): void {
    if (shutDown) return;
    leaseTimer = setTimeout(() => {
      leaseTimer = null;
      leaseChain = leaseChain
        .then(checkLease)
        .catch((err: unknown) => log.warn({ err }, 'scraper watcher: checking the lease failed; trying again at the next check'))
        .finally(scheduleLeaseCheck);
    }, cfg.leaseCheckMs);
  }

  return {
    name: 'scraper-watcher',
    async start() {
      shutDown = false;
      ctx.producerRedis.off('ready', retryNow).on('ready', retryNow);
      const giveUp = async (err: unknown) => {
        notWatching = { detail: 'not started: the start failed' };
        lease = null;
        await holder?.close();
        holder = null;
        throw err;
      };
      // PostgreSQL away at start fails the start, as a failed catch-up does.
      notWatching = { detail: 'starting: taking the watcher lease (PostgreSQL)' };
      lease = await tryLease().catch(giveUp);
      if (lease) {
        notWatching = { detail: 'starting: catching up on the drop folder', catchingUp: true };
        await activate().catch(giveUp);
      } else {
        notWatching = { detail: STANDING_BY };
        gauge.set(0);
        log.warn({ checkEveryMs: cfg.leaseCheckMs }, 'another scraper watcher watches the drop folder (it holds the lease): standing by, taking over when it stops');
      }
      scheduleLeaseCheck();
    },
    async stop() {
      shutDown = true;
      ctx.producerRedis.off('ready', retryNow);
      if (leaseTimer) clearTimeout(leaseTimer);
      leaseTimer = null;
      await leaseChain;
      if (reoffering) await settlesWithin(reoffering, 5_000);
      if (active) await deactivate();
      notWatching = { detail: 'stopped' };
      lease = null;
      await holder?.close();
      holder = null;
    },
    // For GET /ready (not critical: a standby is a healthy process). Not watching: why, and
    // while starting what it waits for (a catch-up registers files in PostgreSQL and enqueues
    // them in Redis); only a lease held by another watcher is `standing by`.
    async ready() {
      if (active) return { ok: true, detail: `watching ${root}` };
      const redisAway = notWatching.catchingUp && ctx.producerRedis.status !== 'ready';
      return { ok: true, detail: `${notWatching.detail}${redisAway ? ' (waiting for Redis)' : ''}` };
    },
    caughtUp: () => caughtUp,
    idle: () => chain,
    currentRunId: () => runId,
    catchUpStats: () => lastCatchUp,
    active: () => active,
  };
}
