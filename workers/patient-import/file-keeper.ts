import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, rename, rm, unlink } from 'node:fs/promises';
import path from 'node:path';
import { FolderError, withoutFileName } from '../../libs/errors/index.js';
import type { FileKeeper, ImportRow } from './ports.js';

export { FolderError };

/**
 * A file name safe on any file system, from an object name that may contain anything
 * (`../`, percent-encoding, umlauts, control characters): `<ledger id>-<safe base name>`.
 */
export function safeFileName(row: Pick<ImportRow, 'id' | 'objectName'>): string {
  let base = row.objectName.slice(row.objectName.lastIndexOf('/') + 1);
  try {
    base = decodeURIComponent(base);
  } catch {
    /* keep as is */
  }
  base = base
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/ß/g, 'ss')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._]+/, '')
    .slice(-120);
  return `${row.id}-${base || 'file'}`;
}

const madeDirs = new Set<string>();

async function fsyncDirNow(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

const dirSyncs = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();

/**
 * Makes the renames done so far in `dir` durable. Concurrent callers share fsyncs: a caller
 * returns only after an fsync of the directory that started after its call (one already
 * running may have started before its rename, so it waits for that one and the next, which
 * everyone arriving meanwhile shares).
 */
function fsyncDir(dir: string): Promise<void> {
  let s = dirSyncs.get(dir);
  if (!s) dirSyncs.set(dir, (s = { running: null, next: null }));
  const state = s;
  if (!state.running) {
    state.running = fsyncDirNow(dir).finally(() => {
      state.running = null;
    });
    return state.running;
  }
  state.next ??= state.running
    .catch(() => {})
    .then(() => {
      state.next = null;
      return fsyncDir(dir);
    });
  return state.next;
}

/** The name writeDurably gives a copy while it is written (`.<name>.<12 hex>.tmp`), and its pattern. */
const tempCopyName = (name: string) => `.${name}.${randomBytes(6).toString('hex')}.tmp`;
const TEMP_COPY = /^\..+\.[0-9a-f]{12}\.tmp$/;

/**
 * Writes `bytes` durably to `dir/name`: a temporary file, fsync, rename, fsync of the
 * directory. A retry writes the file again the same way: the rename replaces a copy left by
 * an earlier attempt atomically (no read of the old copy first; its name is the ledger id
 * and the object name, so it held the same generation's bytes). A file system error is
 * thrown as a `FolderError` (no file name in it).
 */
export async function writeDurably(dir: string, name: string, bytes: Buffer): Promise<string> {
  const root = path.resolve(dir);
  const target = path.resolve(root, name);
  if (path.dirname(target) !== root) throw new Error('refusing a file name outside the target folder');
  try {
    if (!madeDirs.has(root)) {
      // Listable by the fleet's user only: the copies' names hold patient names (the copies are 0600).
      await mkdir(root, { recursive: true, mode: 0o700 });
      madeDirs.add(root);
    }
    const tmp = path.join(root, tempCopyName(name));
    const fd = await open(tmp, 'wx', 0o600);
    try {
      await fd.writeFile(bytes);
      await fd.sync();
    } catch (err) {
      await fd.close().catch(() => {});
      await rm(tmp, { force: true });
      throw err;
    }
    await fd.close();
    await rename(tmp, target);
    await fsyncDir(root);
    return target;
  } catch (err) {
    throw withoutFileName(err, root);
  }
}

/** Durable local copies in one folder (BACKUP_DIR or FAILED_DIR). */
export function folderKeeper(dir: string): FileKeeper {
  return {
    save: (row, bytes) => writeDurably(dir, safeFileName(row), bytes),
    read: (savedPath) =>
      readFile(savedPath).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null;
        throw withoutFileName(err, path.dirname(path.resolve(savedPath)));
      }),
  };
}

/**
 * What removing a saved copy came to: `removed`, `missing` (already gone: recorded as removed all
 * the same), `not_in_folder` (the path is not a copy of this row in `dir`, e.g. the folder was
 * moved and the variable changed: left alone), or the error (a `FolderError`, no file name).
 */
export type RemoveOutcome = 'removed' | 'missing' | 'not_in_folder' | FolderError | Error;

/** Whether `copy.path` is a copy of row `copy.id` in `dir` (`dir/<id>-...`): the only files the retention sweep removes. */
export function isOwnCopy(dir: string, copy: { id: number; path: string }): boolean {
  const target = path.resolve(copy.path);
  return path.dirname(target) === path.resolve(dir) && path.basename(target).startsWith(`${copy.id}-`);
}

/**
 * Removes the saved copies of rows from `dir` (the retention sweep), then makes the removals
 * durable with one fsync of the folder: a copy recorded as removed must not come back after a
 * power loss. Only `dir/<ledger id>-...` files are removed, whatever the row's path says.
 */
export async function removeSaved(dir: string, copies: Array<{ id: number; path: string }>): Promise<RemoveOutcome[]> {
  const root = path.resolve(dir);
  const outcomes: RemoveOutcome[] = [];
  for (const c of copies) {
    const target = path.resolve(c.path);
    if (!isOwnCopy(dir, c)) {
      outcomes.push('not_in_folder');
      continue;
    }
    try {
      await unlink(target);
      outcomes.push('removed');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') outcomes.push('missing');
      else outcomes.push(withoutFileName(err, root) as Error);
    }
  }
  if (outcomes.includes('removed')) {
    try {
      await fsyncDir(root);
    } catch (err) {
      throw withoutFileName(err, root);
    }
  }
  return outcomes;
}


/**
 * Removes the temporary files writeDurably left in `dir` when the process died between writing a
 * copy and renaming it into place (they hold a whole registration, and no record points to them),
 * last changed before `olderThan` (a write takes milliseconds). `dryRun`: counts only. Returns
 * how many there were; an error is a `FolderError` (no file name).
 */
export async function removeStaleTemps(dir: string, olderThan: Date, opts: { dryRun?: boolean } = {}): Promise<number> {
  const root = path.resolve(dir);
  try {
    let entries;
    try {
      entries = await readdir(root, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    let n = 0;
    for (const e of entries) {
      if (!e.isFile() || !TEMP_COPY.test(e.name)) continue;
      const file = path.join(root, e.name);
      const st = await lstat(file).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err)));
      if (!st || st.mtime >= olderThan) continue;
      if (!opts.dryRun) await rm(file, { force: true });
      n++;
    }
    if (n && !opts.dryRun) await fsyncDir(root);
    return n;
  } catch (err) {
    throw withoutFileName(err, root);
  }
}
