import { createHash, randomBytes } from 'node:crypto';
import { constants, type BigIntStats } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readFile, rename, rmdir, unlink } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { PermanentError } from '../errors/index.js';
import { crc32cBase64, md5Base64 } from './checksums.js';
import {
  ChecksumMismatchError,
  ObjectNotFoundError,
  PreconditionFailedError,
  StorageError,
  type BucketPort,
  type DeleteOutcome,
  type ExpectedChecksums,
  type ListOptions,
  type ListPage,
  type StoredObject,
  type UploadOptions,
} from './port.js';

/**
 * A local folder that behaves as a bucket: object `registrations/a.json` is the file
 * `<dir>/registrations/a.json`, so staff can drop files in with `cp`.
 *
 * Generations. Each object has a sidecar `<dir>/.bucket/meta/<sha256(name)>.json` recording
 * its generation, checksums and the file's identity (inode, size, mtime, ctime in ns).
 * - A file without a sidecar (dropped in by hand) gets a generation when first seen.
 * - A file whose identity changed gets a new generation if its content changed (a re-upload);
 *   identical content keeps its generation (a `touch` or a copy of the same bytes is no new file).
 * - `upload()` always makes a new generation, like GCS.
 * - New generations are `max(ctime in µs, previous + 1)`: deterministic, so two processes
 *   that see the same file assign the same generation, and increasing per name (a tombstone
 *   keeps the last generation of a deleted object for an hour; a file dropped later has a larger
 *   ctime anyway).
 * - `download` and `deleteGeneration` re-hash the bytes they act on, so a change that left
 *   the file's stat untouched is still noticed.
 *
 * Names: `/`-separated, no empty, `.` or `..` segments, no segment starting with `.`
 * (hidden files and the `.bucket` folder are never objects), no NUL/CR/LF, at most 1024
 * bytes: a name can never leave the folder. Percent signs, spaces and umlauts are kept
 * as they are.
 *
 * Files changed less than `settleMs` ago (mtime or ctime) are left out of listings, so a file that is
 * still being copied in is not picked up half-written.
 */
export interface LocalBucketOptions {
  /** The folder (created when missing). */
  dir: string;
  /** Bucket name reported in StoredObject.bucket. */
  bucket: string;
  /** Leave files out of listings until unchanged for this long (default 1000 ms). */
  settleMs?: number;
  /** Current time in ms (tests). */
  now?: () => number;
}

interface Sidecar {
  name: string;
  generation: string;
  deleted?: boolean;
  size: number;
  ino: string;
  mtimeNs: string;
  ctimeNs: string;
  md5Hash: string;
  crc32c: string;
  updated: string;
}

const RESERVED = '.bucket';
/** A temporary file older than this was left by a process that died while writing it. */
const STALE_TEMP_MS = 60 * 60 * 1000;
const MAX_NAME_BYTES = 1024;

function fail(code: string, message: string, err?: unknown): StorageError {
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  // Never the path (it contains the object name): only the errno code.
  return new StorageError(code, errno ? `${message} (${errno})` : message);
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}

/** Internal: the file seen is the one a concurrent delete removed. */
class GoneError extends StorageError {
  constructor() {
    super('gone', 'object was deleted');
  }
}

function goneAs(make: () => Error) {
  return (err: unknown): never => {
    throw err instanceof GoneError ? make() : err;
  };
}

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Throws PermanentError('invalid_object_name') for a name that is not a safe relative path. */
export function checkObjectName(name: string): string[] {
  const bad = (why: string) => new PermanentError('invalid_object_name', `invalid object name: ${why}`);
  if (typeof name !== 'string' || name.length === 0) throw bad('empty');
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) throw bad(`longer than ${MAX_NAME_BYTES} bytes`);
  if (/[\0\r\n]/.test(name)) throw bad('contains NUL, CR or LF');
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(name)) throw bad('not valid Unicode');
  const segments = name.split('/');
  for (const s of segments) {
    if (s === '') throw bad('empty path segment (leading, trailing or double slash)');
    if (s === '.' || s === '..') throw bad('"." or ".." segment');
    if (s.startsWith('.')) throw bad('segment starting with "." (hidden files are not objects)');
    if (Buffer.byteLength(s, 'utf8') > 255) throw bad('path segment longer than 255 bytes');
  }
  return segments;
}

function identityOf(st: BigIntStats) {
  return { size: Number(st.size), ino: st.ino.toString(), mtimeNs: st.mtimeNs.toString(), ctimeNs: st.ctimeNs.toString() };
}

function sameIdentity(a: Pick<Sidecar, 'size' | 'ino' | 'mtimeNs' | 'ctimeNs'>, st: BigIntStats): boolean {
  const b = identityOf(st);
  return a.size === b.size && a.ino === b.ino && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

export class LocalBucket implements BucketPort {
  readonly driver = 'local' as const;
  readonly bucket: string;
  readonly root: string;
  private readonly settleMs: number;
  private readonly now: () => number;
  private readonly metaDir: string;
  private readonly tmpDir: string;
  private readonly trashDir: string;
  private ready: Promise<void> | undefined;
  /** When the leftovers (old temporary files and tombstones) were last removed. */
  private lastSweep = 0;

  constructor(opts: LocalBucketOptions) {
    this.bucket = opts.bucket;
    this.root = resolve(opts.dir);
    this.settleMs = opts.settleMs ?? 1000;
    this.now = opts.now ?? Date.now;
    this.metaDir = join(this.root, RESERVED, 'meta');
    this.tmpDir = join(this.root, RESERVED, 'tmp');
    this.trashDir = join(this.root, RESERVED, 'trash');
  }

  uri(name: string): string {
    return `file://${this.pathOf(name)}`;
  }

  async list(prefix: string, opts: ListOptions = {}): Promise<ListPage> {
    await this.init();
    if (this.now() - this.lastSweep >= STALE_TEMP_MS) await this.removeLeftovers();
    const pageSize = Math.min(Math.max(opts.pageSize ?? 1000, 1), 1000);
    let after: string | undefined;
    if (opts.pageToken) {
      after = Buffer.from(opts.pageToken, 'base64url').toString('utf8');
      if (Buffer.from(after, 'utf8').toString('base64url') !== opts.pageToken) {
        throw new StorageError('invalid_page_token', 'invalid page token');
      }
    }
    // Walk only the folder the prefix points into.
    const slash = prefix.lastIndexOf('/');
    const baseName = slash === -1 ? '' : prefix.slice(0, slash);
    if (baseName !== '') {
      try {
        checkObjectName(baseName);
      } catch {
        return { items: [] }; // no object can live under such a prefix
      }
    }
    const candidates: { name: string; st: BigIntStats }[] = [];
    let unsettled = 0;
    const cutoffNs = BigInt(Math.floor(this.now() - this.settleMs)) * 1_000_000n;
    await this.walk(baseName, async (name, st) => {
      if (!name.startsWith(prefix)) return;
      if (after !== undefined && compareNames(name, after) <= 0) return;
      // still being written (ctime too: `cp -p` keeps an old mtime while it writes)
      if (this.settleMs > 0 && (st.mtimeNs > cutoffNs || st.ctimeNs > cutoffNs)) {
        unsettled++;
        return;
      }
      candidates.push({ name, st });
    });
    candidates.sort((a, b) => compareNames(a.name, b.name));
    const items: StoredObject[] = [];
    let i = 0;
    for (; i < candidates.length && items.length < pageSize; i++) {
      const c = candidates[i]!;
      const obj = await this.current(c.name, c.st);
      if (obj) items.push(obj); // gone or changing: the next poll sees it
    }
    const page: ListPage = { items };
    // Counted once, on the first page (its walk sees every file; later pages only those after their cursor).
    if (unsettled && !opts.pageToken) page.unsettled = unsettled;
    if (i < candidates.length && items.length > 0) {
      page.nextPageToken = Buffer.from(items[items.length - 1]!.name, 'utf8').toString('base64url');
    }
    return page;
  }

  async stat(name: string): Promise<StoredObject | null> {
    checkObjectName(name);
    await this.init();
    for (let attempt = 0; attempt < 3; attempt++) {
      const st = await this.lstatFile(name);
      if (!st) return null;
      const obj = await this.current(name, st);
      if (obj) return obj;
    }
    throw new StorageError('busy', 'object is changing while being read');
  }

  async download(name: string, generation: string, expected?: ExpectedChecksums): Promise<Buffer> {
    checkObjectName(name);
    await this.init();
    const path = this.pathOf(name);
    const st = await this.lstatFile(name);
    if (!st) throw new ObjectNotFoundError();
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new ObjectNotFoundError();
      throw fail('io', 'reading the object failed', err);
    }
    const after = await this.lstatFile(name);
    if (!after || !sameIdentity(identityOf(st), after)) {
      throw new StorageError('busy', 'object changed while being read; retry');
    }
    const state = await this.resolveGeneration(name, after, data).catch(goneAs(() => new ObjectNotFoundError()));
    if (state.generation !== generation) throw new ObjectNotFoundError();
    const md5 = md5Base64(data);
    const crc = crc32cBase64(data);
    if (md5 !== state.md5Hash || crc !== state.crc32c) {
      throw new ChecksumMismatchError('downloaded bytes do not match the object checksums');
    }
    if ((expected?.md5Hash && expected.md5Hash !== md5) || (expected?.crc32c && expected.crc32c !== crc)) {
      throw new ChecksumMismatchError('downloaded bytes do not match the expected checksums');
    }
    return data;
  }

  async deleteGeneration(name: string, generation: string): Promise<DeleteOutcome> {
    checkObjectName(name);
    await this.init();
    const path = this.pathOf(name);
    const st = await this.lstatFile(name);
    if (!st) return 'not_found';
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return 'not_found';
      throw fail('io', 'reading the object failed', err);
    }
    const after = await this.lstatFile(name);
    if (!after) return 'not_found';
    if (!sameIdentity(identityOf(st), after)) throw new StorageError('busy', 'object changed while being read; retry');
    let state: Sidecar;
    try {
      state = await this.resolveGeneration(name, after, data);
    } catch (err) {
      if (err instanceof GoneError) return 'not_found';
      throw err;
    }
    if (state.generation !== generation) return 'precondition_failed';

    // Move the file aside atomically, then make sure it is what we checked; if a newer file
    // slipped in between, put it back (or keep it under a new name: never lose it).
    const trash = join(this.trashDir, `${randomBytes(8).toString('hex')}`);
    try {
      await rename(path, trash);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return 'not_found';
      throw fail('io', 'deleting the object failed', err);
    }
    const moved = await lstat(trash, { bigint: true });
    const movedData = await readFile(trash);
    const same =
      moved.ino.toString() === state.ino &&
      Number(moved.size) === state.size &&
      moved.mtimeNs.toString() === state.mtimeNs &&
      md5Base64(movedData) === state.md5Hash;
    if (!same) {
      try {
        await link(trash, path);
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw fail('io', 'restoring a replaced object failed', err);
        // Yet another file took the name: keep this one next to it as a new object.
        await link(trash, `${path}.restored-${randomBytes(4).toString('hex')}`);
      }
      await unlink(trash);
      return 'precondition_failed';
    }
    await this.writeSidecar({ ...state, deleted: true }, true);
    await unlink(trash);
    await this.fsyncDir(dirname(path));
    await this.pruneEmptyDirs(name);
    return 'deleted';
  }

  async upload(name: string, data: Buffer | string, opts: UploadOptions = {}): Promise<StoredObject> {
    const segments = checkObjectName(name);
    await this.init();
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
    const path = this.pathOf(name);
    if (opts.ifGenerationMatch !== undefined) {
      const cur = await this.stat(name);
      const ok = opts.ifGenerationMatch === '0' ? cur === null : cur?.generation === opts.ifGenerationMatch;
      if (!ok) throw new PreconditionFailedError();
    }
    try {
      if (segments.length > 1) await mkdir(dirname(path), { recursive: true });
    } catch (err) {
      throw fail('io', 'creating the object folder failed (a file is in the way?)', err);
    }
    const tmp = join(this.tmpDir, randomBytes(8).toString('hex'));
    try {
      const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o644);
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      const prev = await this.readSidecar(name);
      await rename(tmp, path);
      await this.fsyncDir(dirname(path));
      const st = await lstat(path, { bigint: true });
      const sidecar = this.newGeneration(name, st, bytes, prev);
      await this.writeSidecar(sidecar, true);
      return this.toObject(sidecar);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      if (err instanceof StorageError || err instanceof PermanentError) throw err;
      throw fail('io', 'writing the object failed', err);
    }
  }

  // ---- internals ----------------------------------------------------------------------------

  private init(): Promise<void> {
    this.ready ??= (async () => {
      for (const d of [this.root, this.metaDir, this.tmpDir, this.trashDir]) await mkdir(d, { recursive: true });
      await this.removeLeftovers();
    })().catch((err: unknown) => {
      this.ready = undefined;
      throw fail('io', 'creating the bucket folder failed', err);
    });
    return this.ready;
  }

  /**
   * Temporary files a process killed mid-write left behind (an upload's bytes, an object's
   * metadata with its name: personal data). None is ever part of an object, and no write takes an
   * hour, so those older than that go. (The trash folder is left alone: a file there may be a
   * newer upload a crash kept from being put back.)
   */
  private async removeStaleTemps(before: number): Promise<void> {
    for (const f of await readdir(this.tmpDir).catch(() => [] as string[])) {
      const p = join(this.tmpDir, f);
      const st = await lstat(p).catch(() => null);
      if (st?.isFile() && st.mtimeMs < before) await unlink(p).catch(() => undefined);
    }
  }

  /**
   * Tombstones (the sidecar left by a delete, with the object's name: personal data) over an hour
   * old. A tombstone tells a listing that saw the file just before the delete that it is gone, and
   * gives a file dropped again under the name a larger generation; after an hour neither needs it
   * (a file dropped later has a later ctime). Kept for ever, one stayed per registration imported
   * (found in a soak drill: 1,551 in 55 minutes). Moved aside before it is removed: a sidecar an upload
   * wrote meanwhile is put back.
   */
  private async removeOldTombstones(before: number): Promise<void> {
    const isTombstone = async (p: string) => {
      try {
        return (JSON.parse(await readFile(p, 'utf8')) as Partial<Sidecar>).deleted === true;
      } catch {
        return false;
      }
    };
    for (const f of await readdir(this.metaDir).catch(() => [] as string[])) {
      const p = join(this.metaDir, f);
      const st = await lstat(p).catch(() => null);
      if (!st?.isFile() || st.mtimeMs >= before || !(await isTombstone(p))) continue;
      const aside = join(this.tmpDir, `${randomBytes(8).toString('hex')}.meta`);
      if (!(await rename(p, aside).then(() => true, () => false))) continue;
      if (!(await isTombstone(aside))) await link(aside, p).catch(() => undefined); // a newer sidecar there wins
      await unlink(aside).catch(() => undefined);
    }
  }

  /** Old temporary files and tombstones: when the bucket is first used, then at most once an hour, on a listing. */
  private async removeLeftovers(): Promise<void> {
    this.lastSweep = this.now();
    const before = this.lastSweep - STALE_TEMP_MS;
    await this.removeStaleTemps(before);
    await this.removeOldTombstones(before);
  }

  private pathOf(name: string): string {
    const segments = checkObjectName(name);
    const p = join(this.root, ...segments);
    if (!p.startsWith(this.root + sep)) throw new PermanentError('invalid_object_name', 'invalid object name: leaves the bucket folder');
    return p;
  }

  private sidecarPath(name: string): string {
    return join(this.metaDir, `${createHash('sha256').update(name, 'utf8').digest('hex')}.json`);
  }

  /** lstat of the object's file; null when missing or not a regular file (symlinks are not objects). */
  private async lstatFile(name: string): Promise<BigIntStats | null> {
    try {
      const st = await lstat(this.pathOf(name), { bigint: true });
      return st.isFile() ? st : null;
    } catch (err) {
      if (isErrno(err, 'ENOENT', 'ENOTDIR')) return null;
      throw fail('io', 'reading the object failed', err);
    }
  }

  private async readSidecar(name: string): Promise<Sidecar | undefined> {
    try {
      const s = JSON.parse(await readFile(this.sidecarPath(name), 'utf8')) as Sidecar;
      return s.name === name && /^\d+$/.test(s.generation) ? s : undefined;
    } catch (err) {
      if (isErrno(err, 'ENOENT') || err instanceof SyntaxError) return undefined;
      throw fail('io', 'reading object metadata failed', err);
    }
  }

  /**
   * Atomic replace (temp file + rename). `durable` also fsyncs: needed for uploads and
   * tombstones; a sidecar written on discovery is a cache that is recomputed to the same
   * generation (ctime-based) if a crash loses it.
   */
  private async writeSidecar(s: Sidecar, durable = false): Promise<void> {
    const tmp = join(this.tmpDir, `${randomBytes(8).toString('hex')}.meta`);
    try {
      const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o644);
      try {
        await fh.writeFile(JSON.stringify(s));
        if (durable) await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.sidecarPath(s.name));
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw fail('io', 'writing object metadata failed', err);
    }
  }

  private newGeneration(name: string, st: BigIntStats, data: Buffer, prev: Sidecar | undefined): Sidecar {
    let gen = st.ctimeNs / 1000n;
    if (prev && BigInt(prev.generation) >= gen) gen = BigInt(prev.generation) + 1n;
    return {
      name,
      generation: gen.toString(),
      ...identityOf(st),
      md5Hash: md5Base64(data),
      crc32c: crc32cBase64(data),
      updated: new Date(Number(st.mtimeNs / 1_000_000n)).toISOString(),
    };
  }

  /**
   * The sidecar that describes the file as it is now (`st`, and `data` when the caller read
   * the bytes), assigning a new generation when the content changed.
   */
  private async resolveGeneration(name: string, st: BigIntStats, data?: Buffer): Promise<Sidecar> {
    const prev = await this.readSidecar(name);
    // The very file a concurrent delete just removed (we saw it before its rename): gone.
    if (prev?.deleted && sameIdentity(prev, st)) throw new GoneError();
    const live = prev && !prev.deleted ? prev : undefined;
    if (live && sameIdentity(live, st) && (data === undefined || md5Base64(data) === live.md5Hash)) return live;
    if (data === undefined) {
      data = await readFile(this.pathOf(name));
      const again = await lstat(this.pathOf(name), { bigint: true });
      if (!sameIdentity(identityOf(st), again) || data.length !== Number(st.size)) {
        throw new StorageError('busy', 'object changed while being read; retry');
      }
    }
    const md5 = md5Base64(data);
    if (live && live.size === data.length && live.md5Hash === md5) {
      // Same bytes, only the file's identity changed (touch, copy of the same content).
      const kept: Sidecar = { ...live, ...identityOf(st) };
      await this.writeSidecar(kept);
      return kept;
    }
    const next = this.newGeneration(name, st, data, prev);
    await this.writeSidecar(next);
    return next;
  }

  /** Metadata for a listed/stat'ed file; undefined when it vanished or is changing. */
  private async current(name: string, st: BigIntStats): Promise<StoredObject | undefined> {
    try {
      return this.toObject(await this.resolveGeneration(name, st));
    } catch (err) {
      if (isErrno(err, 'ENOENT', 'ENOTDIR') || err instanceof GoneError || (err instanceof StorageError && err.code === 'busy')) return undefined;
      throw err;
    }
  }

  private toObject(s: Sidecar): StoredObject {
    return { bucket: this.bucket, name: s.name, generation: s.generation, size: s.size, md5Hash: s.md5Hash, crc32c: s.crc32c, updated: s.updated };
  }

  private async walk(base: string, visit: (name: string, st: BigIntStats) => Promise<void>): Promise<void> {
    const dir = base === '' ? this.root : join(this.root, ...base.split('/'));
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT', 'ENOTDIR')) return; // nothing under this prefix
      throw fail('io', 'listing the bucket folder failed', err);
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue; // hidden files, editor swap files, .bucket
      const name = base === '' ? e.name : `${base}/${e.name}`;
      if (e.isDirectory()) {
        await this.walk(name, visit);
      } else if (e.isFile()) {
        try {
          checkObjectName(name);
        } catch {
          continue;
        }
        let st: BigIntStats;
        try {
          st = await lstat(join(dir, e.name), { bigint: true });
        } catch (err) {
          if (isErrno(err, 'ENOENT')) continue;
          throw fail('io', 'listing the bucket folder failed', err);
        }
        if (st.isFile()) await visit(name, st);
      }
    }
  }

  private async fsyncDir(dir: string): Promise<void> {
    const fh = await open(dir, constants.O_RDONLY).catch(() => undefined);
    if (!fh) return;
    try {
      await fh.sync();
    } catch {
      // some filesystems do not support fsync on directories
    } finally {
      await fh.close();
    }
  }

  /** Removes folders left empty by a delete, up to (not including) the first segment. */
  private async pruneEmptyDirs(name: string): Promise<void> {
    const segments = name.split('/');
    for (let n = segments.length - 1; n > 1; n--) {
      try {
        await rmdir(join(this.root, ...segments.slice(0, n)));
      } catch {
        return; // not empty (or gone): stop
      }
    }
  }
}
