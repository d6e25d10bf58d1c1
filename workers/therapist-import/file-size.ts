import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat, type FileHandle } from 'node:fs/promises';

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
export const TOO_LARGE_REASON_START = 'too large to import';
export const tooLargeReason = (e: FileTooLargeError) =>
  `${TOO_LARGE_REASON_START}: ${e.message} (a postcode file is ~0.1 MB); once it is smaller, or the limit is raised and the fleet restarted, it is imported`;

/** The size of a file before it is read: throws FileTooLargeError over `maxBytes`. */
export async function checkFileSize(abs: string, maxBytes: number): Promise<void> {
  const { size } = await stat(abs);
  if (size > maxBytes) throw new FileTooLargeError(size, maxBytes);
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
