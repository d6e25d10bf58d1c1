import { createHash } from 'node:crypto';
import { constants, createReadStream, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { SKIP_REASON_START } from '../../libs/db/repositories/therapist-import.js';

/**
 * A file over SCRAPER_FILE_MAX_MB is not read: importing one takes ~10 bytes of memory per byte
 * of file (a 42 MB file of 50,000 therapists peaked at 633 MB), more than a worker has, and a
 * worker that runs out of memory takes every job it holds down with it, again at each retry.
 */
export class FileTooLargeError extends Error {
  override name = 'FileTooLargeError';
  constructor(
    readonly sizeBytes: number,
    readonly maxBytes: number,
  ) {
    super(`${megabytes(sizeBytes)}, more than SCRAPER_FILE_MAX_MB=${maxBytes / 1024 / 1024} allows`);
  }
}

const megabytes = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

/** A tracked file's skip reason; the staff summary and pages know it by its start. */
export const TOO_LARGE_REASON_START = SKIP_REASON_START.tooLarge;
export const tooLargeReason = (e: FileTooLargeError) =>
  `${TOO_LARGE_REASON_START}: ${e.message} (a postcode file is ~0.1 MB); once it is smaller, or the limit is raised and the fleet restarted, it is imported`;

/** Why a tracked file of a fitting name that is no regular file is not imported (the staff summary knows it by its start, as an unreadable file). */
export const NOT_REGULAR_REASON =
  'cannot read the file (not a regular file: a named pipe, device or socket, or a link to one); a regular file dropped under this name is imported';

/** The path names a named pipe, a device or a socket (or a link to one), not a file to read. */
export class NotRegularFileError extends Error {
  override name = 'NotRegularFileError';
  constructor(readonly kind: string) {
    super(`not a regular file but ${kind}`);
  }
}

/** What a path that is no regular file names, for messages ("a folder", "a named pipe", ...). */
export function fileKindOf(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a named pipe';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'neither a file nor a folder';
}

/**
 * Reads a regular file of at most `maxBytes`. Opened without waiting and checked on the open
 * handle before reading: a named pipe no one writes to would block the read (and the job's slot)
 * for ever, a link to /dev/zero never ends, and a file replaced between a size check by path
 * and its read would escape the limit. Throws NotRegularFileError, FileTooLargeError, or the
 * file system's error (ENOENT, EACCES, ...).
 */
export async function readRegularFile(abs: string, maxBytes: number): Promise<Buffer> {
  const fh = await open(abs, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotRegularFileError(fileKindOf(st));
    if (st.size > maxBytes) throw new FileTooLargeError(st.size, maxBytes);
    const buf = await fh.readFile();
    // Grown since the check (still being written to): over the limit all the same.
    if (buf.length > maxBytes) throw new FileTooLargeError(buf.length, maxBytes);
    return buf;
  } finally {
    await fh.close();
  }
}

/** sha256 of a file (a path, or a handle open on it, read from its start) read in chunks (a file too large to hold in memory). */
export async function sha256OfFile(file: string | FileHandle): Promise<{ contentHash: string; sizeBytes: number }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  const stream = typeof file === 'string' ? createReadStream(file) : file.createReadStream({ start: 0, autoClose: false });
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
  }
  return { contentHash: hash.digest('hex'), sizeBytes };
}
