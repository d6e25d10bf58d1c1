import { PermanentError } from '../errors/index.js';

/**
 * The bucket port: what the patient import needs from Google Cloud Storage, with a GCS
 * driver (@google-cloud/storage) and a local-folder driver that keeps generations the same
 * way, so the same pipeline runs without a cloud account.
 *
 * Object names contain patient names: drivers never put them into error messages, and
 * callers never log them.
 */
export interface StoredObject {
  bucket: string;
  /** Object name as stored (not percent-encoded). Contains patient names: never log it. */
  name: string;
  /** GCS generation as a decimal string (it exceeds 2^53). */
  generation: string;
  size: number;
  /** Base64 MD5 of the content (GCS `md5Hash`). */
  md5Hash?: string;
  /** Base64 big-endian CRC32C of the content (GCS `crc32c`). */
  crc32c?: string;
  /** ISO time of the last change. */
  updated: string;
}

export interface ListPage {
  items: StoredObject[];
  nextPageToken?: string;
  /**
   * Local bucket, first page only: files left out because they changed less than its settle
   * time ago (still being copied in); the next listing has them.
   */
  unsettled?: number;
}

export interface ListOptions {
  pageToken?: string;
  /** Objects per page (GCS: at most 1000; default 1000). */
  pageSize?: number;
}

/** Checksums the caller already knows (e.g. from the listing); a mismatch is a retryable error. */
export interface ExpectedChecksums {
  md5Hash?: string;
  crc32c?: string;
}

export interface UploadOptions {
  contentType?: string;
  /** Only write when the current generation is this one ('0': only when the object does not exist). */
  ifGenerationMatch?: string;
}

/**
 * `gone_after_retry`: a delete request got no answer (or a 5xx) and the retry found the generation
 * gone: most likely the first request went through (GCS carried it out, the answer was lost).
 */
export type DeleteOutcome = 'deleted' | 'precondition_failed' | 'not_found' | 'gone_after_retry';

export interface BucketPort {
  readonly driver: 'gcs' | 'local';
  readonly bucket: string;
  /** One page of objects under a prefix, in name order. A failure throws: it is never an empty bucket. */
  list(prefix: string, opts?: ListOptions): Promise<ListPage>;
  /** Current metadata, or null when the object does not exist. */
  stat(name: string): Promise<StoredObject | null>;
  /**
   * The bytes of exactly this generation, checksum verified (against the transfer's
   * x-goog-hash by the client, against the object's md5/crc32c by the driver, and against
   * `expected` when given). With `expected` (e.g. the md5 from the listing) the GCS driver
   * needs one request instead of two. Throws ObjectNotFoundError when this generation no longer exists
   * (deleted or replaced), ChecksumMismatchError (retryable) on a mismatch.
   */
  download(name: string, generation: string, expected?: ExpectedChecksums): Promise<Buffer>;
  /** Deletes only this generation (ifGenerationMatch): a newer upload is never deleted. */
  deleteGeneration(name: string, generation: string): Promise<DeleteOutcome>;
  /** Writes a new generation. Throws PreconditionFailedError when `ifGenerationMatch` does not hold. */
  upload(name: string, data: Buffer | string, opts?: UploadOptions): Promise<StoredObject>;
  /** Where the object lives, for staff (`gs://bucket/name`; local: `file://` path). Personal data: never for logs. */
  uri(name: string): string;
}

/** Every storage failure the drivers throw; messages never contain object names. */
export class StorageError extends Error {
  override name = 'StorageError';
  constructor(
    /** Stable reason: `timeout`, `unavailable`, `http_<status>`, `io`, ... */
    readonly code: string,
    message: string,
    /** HTTP status for GCS errors. */
    readonly status?: number,
  ) {
    super(message);
  }
}

/** The downloaded bytes do not match the checksums: retry (a transfer or storage hiccup). */
export class ChecksumMismatchError extends StorageError {
  override name = 'ChecksumMismatchError';
  constructor(message: string) {
    super('checksum_mismatch', message);
  }
}

/** This generation of the object does not exist (any more): retrying will not help. */
export class ObjectNotFoundError extends PermanentError {
  override name = 'ObjectNotFoundError';
  constructor(message = 'object generation not found') {
    super('object_not_found', message);
  }
}

/** An upload's ifGenerationMatch did not hold. */
export class PreconditionFailedError extends PermanentError {
  override name = 'PreconditionFailedError';
  constructor(message = 'generation precondition failed') {
    super('precondition_failed', message);
  }
}

/** Walks every page under a prefix (pages are fetched lazily; a failing page throws). */
export async function* listAll(bucket: BucketPort, prefix: string, pageSize?: number): AsyncGenerator<StoredObject> {
  let pageToken: string | undefined;
  const seen = new Set<string>();
  do {
    const page = await bucket.list(prefix, { pageToken, pageSize });
    yield* page.items;
    pageToken = page.nextPageToken;
    if (pageToken !== undefined) {
      if (seen.has(pageToken)) throw new StorageError('bad_response', 'listing returned a page token twice');
      seen.add(pageToken);
    }
  } while (pageToken);
}
