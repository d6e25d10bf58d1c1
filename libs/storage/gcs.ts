import { ApiError, Storage, type Bucket, type File, type FileMetadata } from '@google-cloud/storage';
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

export interface GcsBucketOptions {
  bucket: string;
  /** e.g. http://127.0.0.1:4443 for the stand-in; unset = Google (credentials from ADC). */
  apiEndpoint?: string;
  /**
   * Send credentials to `apiEndpoint` as well (a private Google endpoint). Off by default: the
   * client then talks to a custom endpoint without credentials, as the stand-in wants.
   */
  authWithEndpoint?: boolean;
  projectId?: string;
  /** Per HTTP request (default 30 s). */
  timeoutMs?: number;
  /** Retries inside the client for retryable errors (default 3; 0 = none, the job retries). */
  maxRetries?: number;
  /** Longest wait between the client's retries (default 10 s). */
  maxRetryDelayMs?: number;
  /** Give up retrying after this long in total (default 60 s). */
  totalTimeoutMs?: number;
  /** Uploads larger than this use a resumable session (default 5 MiB, like gsutil/the client). */
  resumableThreshold?: number;
}

/** The permission each call needs, named in a 403 so the operator knows which role is missing. */
const PERMISSION: Record<string, string> = {
  list: 'storage.objects.list',
  stat: 'storage.objects.get',
  download: 'storage.objects.get',
  delete: 'storage.objects.delete',
  upload: 'storage.objects.create',
};

/** Which object generation a call was about: the bucket and generation, never the name; the endpoint's host for a call that got no answer. */
interface Where {
  bucket: string;
  generation?: string;
  endpoint?: string;
}

function describeWhere(w: Where): string {
  return w.generation === undefined ? `bucket ${w.bucket}` : `bucket ${w.bucket}, generation ${w.generation}`;
}

/**
 * GCS's own `reason` (`forbidden`, `rateLimitExceeded`, ...): a fixed word, so it may be shown;
 * the service's message may not (`... access to bucket/registrations/Müller_...json.`).
 */
function reasonOf(err: unknown): string | undefined {
  const r = (err as { errors?: { reason?: unknown }[] }).errors?.[0]?.reason;
  return typeof r === 'string' && /^[A-Za-z]{1,40}$/.test(r) ? r : undefined;
}

/**
 * Client error -> StorageError naming the call, the bucket and the generation, without URLs or
 * object names or the service's message (they contain patient names).
 */
function toStorageError(op: string, err: unknown, where: Where): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as { code?: unknown; message?: string; type?: string; name?: string };
  const status = typeof e.code === 'number' ? e.code : undefined;
  const text = String(e.message ?? '');
  const at = describeWhere(where);
  // Where a call that got no answer went (a GCS_API_ENDPOINT set wrongly shows here).
  const atEndpoint = where.endpoint ? `${at}, endpoint ${where.endpoint}` : at;
  const credentials = credentialsProblem(text);
  if (credentials) return new StorageError(credentials.code, `gcs ${op} failed (${at}): ${credentials.says}`, status);
  if (isTimeout(err)) {
    return new StorageError('timeout', `gcs ${op} timed out (${atEndpoint})`);
  }
  if (status !== undefined) {
    const reason = reasonOf(err);
    const hint =
      status === 403
        ? `, permission denied: the credentials need ${PERMISSION[op] ?? 'access to the bucket'}`
        : status === 401
          ? ', not authenticated: credentials missing, expired or revoked'
          : status === 404 && op === 'list'
            ? ': no such bucket (check GCS_BUCKET, and GCS_API_ENDPOINT when set)'
            : '';
    return new StorageError(
      status >= 500 || status === 429 ? 'unavailable' : `http_${status}`,
      `gcs ${op} failed (${at}): HTTP ${status}${reason ? ` ${reason}` : ''}${hint}`,
      status,
    );
  }
  const code = networkCode(err) ?? 'network';
  if (code === 'CONTENT_DOWNLOAD_MISMATCH') return new StorageError('checksum_mismatch', `gcs ${op} failed (${at}): ${code}`);
  return new StorageError('network', `gcs ${op} failed (${atEndpoint}): ${code}`);
}

function isTimeout(err: unknown): boolean {
  const e = err as { message?: string; type?: string; name?: string };
  return /timeout/i.test(String(e.message ?? '')) || e.type === 'request-timeout' || e.name === 'AbortError';
}

/** A Node or client error code (`ECONNREFUSED`, `ENOTFOUND`): a fixed word, so it may be shown. */
function networkCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && /^[A-Z0-9_]{1,40}$/.test(c) ? c : undefined;
}

/** Network errors of a request that never left for GCS (no connection, no address). */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * google-auth-library's errors about the credentials themselves (it throws plain Errors, and the
 * storage client hands the first one on in place of the 401 an anonymous request got): without
 * this they read as a network failure. Fixed words only; the credentials file's path is the
 * operator's, never a patient's, but it is not needed to act.
 */
function credentialsProblem(text: string): { code: string; says: string } | undefined {
  if (text.includes('Could not load the default credentials')) {
    return {
      code: 'no_credentials',
      says: 'no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run with a service account attached',
    };
  }
  if (/^The file at .* does not exist, or it is not a file/.test(text)) {
    return { code: 'bad_credentials', says: 'the credentials file named by GOOGLE_APPLICATION_CREDENTIALS does not exist or is not a file' };
  }
  if (text.includes('The incoming JSON object does not contain')) {
    return { code: 'bad_credentials', says: 'the credentials file named by GOOGLE_APPLICATION_CREDENTIALS is not a usable key (a service account key file has client_email and private_key)' };
  }
  return undefined;
}

/** The API endpoint's host (and port), without scheme, path or credentials: storage.googleapis.com unless GCS_API_ENDPOINT says otherwise. */
export function gcsEndpointHost(apiEndpoint: string | undefined): string {
  if (!apiEndpoint) return 'storage.googleapis.com';
  try {
    return new URL(apiEndpoint.includes('://') ? apiEndpoint : `https://${apiEndpoint}`).host;
  } catch {
    return 'GCS_API_ENDPOINT';
  }
}

function statusOf(err: unknown): number | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : err instanceof ApiError && typeof err.code === 'number' ? err.code : undefined;
}

export class GcsBucket implements BucketPort {
  readonly driver = 'gcs' as const;
  readonly bucket: string;
  private readonly storage: Storage;
  private readonly b: Bucket;
  private readonly resumableThreshold: number;
  private readonly timeoutMs: number;
  /** The host calls go to, for the messages of calls that got no answer. */
  private readonly endpoint: string;
  /** The longest one call may take, the client's retries included (see `withinDeadline`). */
  private readonly deadlineMs: number;
  private readonly retry: { maxRetries: number; maxRetryDelayMs: number; totalTimeoutMs: number };

  constructor(opts: GcsBucketOptions) {
    this.bucket = opts.bucket;
    this.resumableThreshold = opts.resumableThreshold ?? 5 * 1024 * 1024;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.endpoint = gcsEndpointHost(opts.apiEndpoint);
    const maxRetries = opts.maxRetries ?? 3;
    this.retry = { maxRetries, maxRetryDelayMs: opts.maxRetryDelayMs ?? 10_000, totalTimeoutMs: opts.totalTimeoutMs ?? 60_000 };
    this.deadlineMs = (maxRetries > 0 ? (opts.totalTimeoutMs ?? 60_000) : 0) + this.timeoutMs + 1_000;
    this.storage = new Storage({
      // A custom apiEndpoint makes the client skip google-auth-library entirely
      // (customEndpoint && !useAuthWithCustomEndpoint), so the stand-in needs no credentials.
      ...(opts.apiEndpoint ? { apiEndpoint: opts.apiEndpoint, useAuthWithCustomEndpoint: opts.authWithEndpoint ?? false } : {}),
      ...(opts.projectId ? { projectId: opts.projectId } : {}),
      timeout: this.timeoutMs,
      retryOptions: {
        autoRetry: maxRetries > 0,
        maxRetries,
        retryDelayMultiplier: 2,
        maxRetryDelay: Math.max(1, Math.round((opts.maxRetryDelayMs ?? 10_000) / 1000)),
        totalTimeout: Math.max(1, Math.round((opts.totalTimeoutMs ?? 60_000) / 1000)),
      },
    });
    this.b = this.storage.bucket(opts.bucket);
  }

  /**
   * The client's retries (retry-request 7.0.2) never called back when the total limit
   * (GCS_TOTAL_TIMEOUT_MS) was used up at the moment a retry was due: the call's promise stayed
   * pending forever (measured with the stand-in: a list, metadata read or delete that timed out
   * twice left the poll, or the import between commit and delete, waiting for good).
   * patches/retry-request+7.0.2.patch makes it answer with the last request's outcome; this
   * deadline stays as the safety net should another path of the client never answer: every call
   * ends by the total limit plus one request's timeout (and 1 s); a request still on its way then
   * may yet be carried out (a delete sends `ifGenerationMatch`, so it can only remove the
   * generation it names).
   */
  private withinDeadline<T>(op: string, call: Promise<T>, generation?: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const at = describeWhere({ bucket: this.bucket, ...(generation ? { generation } : {}) });
        reject(new StorageError('timeout', `gcs ${op} got no answer within ${Math.round(this.deadlineMs / 1000)} s, retries included (${at}, endpoint ${this.endpoint})`));
      }, this.deadlineMs);
    });
    return Promise.race([call, deadline]).finally(() => clearTimeout(timer));
  }

  uri(name: string): string {
    return `gs://${this.bucket}/${name}`;
  }

  async list(prefix: string, opts: ListOptions = {}): Promise<ListPage> {
    let response: { items?: FileMetadata[]; nextPageToken?: string } | undefined;
    try {
      const [, , apiResponse] = await this.withinDeadline(
        'list',
        this.b.getFiles({
          prefix,
          maxResults: Math.min(Math.max(opts.pageSize ?? 1000, 1), 1000),
          ...(opts.pageToken ? { pageToken: opts.pageToken } : {}),
          autoPaginate: false,
        }),
      );
      response = apiResponse as typeof response;
    } catch (err) {
      throw toStorageError('list', err, { bucket: this.bucket, endpoint: this.endpoint });
    }
    if (!response || typeof response !== 'object') {
      throw new StorageError('bad_response', 'gcs list returned no response body');
    }
    if (response.items !== undefined && !Array.isArray(response.items)) {
      throw new StorageError('bad_response', 'gcs list returned items that are not an array');
    }
    const items = (response.items ?? []).map((m) => this.toObject(m));
    return response.nextPageToken ? { items, nextPageToken: response.nextPageToken } : { items };
  }

  async stat(name: string): Promise<StoredObject | null> {
    try {
      const [m] = await this.withinDeadline('stat', this.b.file(name).getMetadata());
      return this.toObject(m);
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw toStorageError('stat', err, { bucket: this.bucket, endpoint: this.endpoint });
    }
  }

  async download(name: string, generation: string, expected: ExpectedChecksums = {}): Promise<Buffer> {
    const file = this.b.file(name, { generation });
    let meta: StoredObject;
    if (expected.md5Hash || expected.crc32c) {
      // Checksums from the listing: one request (the client still checks the x-goog-hash crc32c).
      meta = { bucket: this.bucket, name, generation, size: -1, md5Hash: expected.md5Hash, crc32c: expected.crc32c, updated: '' };
    } else {
      try {
        const [m] = await this.withinDeadline('download', file.getMetadata(), generation);
        meta = this.toObject(m);
      } catch (err) {
        if (statusOf(err) === 404) throw new ObjectNotFoundError();
        throw toStorageError('download', err, { bucket: this.bucket, generation, endpoint: this.endpoint });
      }
    }
    let data: Buffer;
    try {
      data = await this.fetchBytes(file, generation);
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw err;
      if (statusOf(err) === 404) throw new ObjectNotFoundError();
      if ((err as { code?: unknown }).code === 'CONTENT_DOWNLOAD_MISMATCH') {
        throw new ChecksumMismatchError(`gcs download does not match the x-goog-hash of the response (${describeWhere({ bucket: this.bucket, generation })})`);
      }
      throw toStorageError('download', err, { bucket: this.bucket, generation, endpoint: this.endpoint });
    }
    // And against the object's own checksums (a proxy or a stand-in may send consistent but wrong hashes).
    const md5 = md5Base64(data);
    const crc = crc32cBase64(data);
    const want = { md5Hash: expected.md5Hash ?? meta.md5Hash, crc32c: expected.crc32c ?? meta.crc32c };
    if ((want.md5Hash && want.md5Hash !== md5) || (want.crc32c && want.crc32c !== crc)) {
      throw new ChecksumMismatchError(`gcs download does not match the object checksums (${describeWhere({ bucket: this.bucket, generation })})`);
    }
    if (meta.size >= 0 && data.length !== meta.size) {
      throw new ChecksumMismatchError(`gcs download has the wrong length (${describeWhere({ bucket: this.bucket, generation })})`);
    }
    return data;
  }

  /**
   * Reads the object through the client's read stream (which validates the bytes against the
   * response's x-goog-hash, crc32c). The client's own timeout covers only the wait for the
   * response headers; a body that stalls or whose connection closes early never ends the
   * stream (measured with the stand-in's 'truncate' fault), so an idle timer ends it here,
   * and the length is compared with Content-Length.
   */
  private fetchBytes(file: File, generation: string): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const stream = file.createReadStream({ validation: 'crc32c' });
      const chunks: Buffer[] = [];
      let expectedLength: number | undefined;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: unknown, data?: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== undefined) {
          stream.destroy();
          reject(err instanceof Error ? err : new Error(String(err)));
        } else resolve(data!);
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => finish(new StorageError('timeout', `gcs download timed out: no data (${describeWhere({ bucket: this.bucket, generation })}, endpoint ${this.endpoint})`)), this.timeoutMs);
      };
      arm();
      stream.on('response', (res: { headers?: Record<string, string | string[] | undefined> }) => {
        arm();
        const len = Number(res.headers?.['content-length']);
        if (Number.isFinite(len) && res.headers?.['content-encoding'] !== 'gzip') expectedLength = len;
        const gen = res.headers?.['x-goog-generation'];
        if (typeof gen === 'string' && gen !== generation) finish(new ObjectNotFoundError('gcs served another generation'));
      });
      stream.on('data', (c: Buffer) => {
        arm();
        chunks.push(c);
      });
      stream.on('error', (err) => finish(err));
      stream.on('end', () => {
        const data = Buffer.concat(chunks);
        if (expectedLength !== undefined && data.length !== expectedLength) {
          finish(new ChecksumMismatchError(`gcs download ended early (${describeWhere({ bucket: this.bucket, generation })})`));
        } else finish(undefined, data);
      });
    });
  }

  /**
   * Deletes exactly `generation` (`ifGenerationMatch`). The driver retries the delete itself
   * (GCS_MAX_RETRIES, the client's backoff, within GCS_TOTAL_TIMEOUT_MS) instead of the client,
   * because the client hides its retries: when a request got no answer (timeout, connection
   * dropped) or a 5xx, GCS may have carried it out (not so when the connection was refused or the
   * name not resolved), and a retry that then finds the generation gone is `gone_after_retry`
   * (the fleet's own delete, most likely), not `not_found` (someone else removed it), which the
   * ledger and `fleet imports show` tell apart.
   */
  async deleteGeneration(name: string, generation: string): Promise<DeleteOutcome> {
    if (!/^\d+$/.test(generation)) throw new StorageError('invalid_generation', 'generation must be a decimal string');
    const file = this.b.file(name);
    file.interceptors.push({
      // One request per call; the loop below retries. (The interceptor type wants `uri`; the client merges the result.)
      request: (reqOpts) => Object.assign(reqOpts, { maxRetries: 0 }) as unknown as ReturnType<File['interceptors'][number]['request']>,
    });
    const t0 = Date.now();
    let unanswered = false;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.withinDeadline('delete', file.delete({ ifGenerationMatch: generation }), generation);
        return 'deleted';
      } catch (err) {
        const status = statusOf(err);
        if (status === 412) return 'precondition_failed';
        if (status === 404) return unanswered ? 'gone_after_retry' : 'not_found';
        // A connection refused or a name not resolved never reached GCS: a retry finding the generation gone was someone else.
        const notSent = status === undefined && NOT_SENT.has(networkCode(err) ?? '');
        const mayHaveHappened = !notSent && (status === undefined || status >= 500);
        const retryable = mayHaveHappened || notSent || status === 408 || status === 429;
        const delay = Math.min(2 ** attempt * 1000 + Math.floor(Math.random() * 1000), this.retry.maxRetryDelayMs);
        const credentials = status === undefined && credentialsProblem(String((err as Error).message ?? ''));
        if (!retryable || credentials || attempt > this.retry.maxRetries || Date.now() - t0 + delay > this.retry.totalTimeoutMs) {
          throw toStorageError('delete', err, { bucket: this.bucket, generation, endpoint: this.endpoint });
        }
        if (mayHaveHappened) unanswered = true;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  async upload(name: string, data: Buffer | string, opts: UploadOptions = {}): Promise<StoredObject> {
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
    const file = this.b.file(name);
    // Resumable sessions go through gaxios, which the client gives no timeout ("not available
    // for resumable uploads"): a hung session start would wait forever. The file's request
    // interceptors reach those requests as customRequestOptions.
    const timeout = this.timeoutMs;
    file.interceptors.push({
      // The interceptor type says `DecorateRequestOptions` (which needs `uri`); the client merges the result.
      request: (reqOpts) => Object.assign(reqOpts, { timeout }) as unknown as ReturnType<File['interceptors'][number]['request']>,
    });
    try {
      await file.save(bytes, {
        resumable: bytes.length > this.resumableThreshold,
        contentType: opts.contentType ?? 'application/json',
        validation: 'crc32c',
        ...(opts.ifGenerationMatch !== undefined ? { preconditionOpts: { ifGenerationMatch: opts.ifGenerationMatch } } : {}),
      });
    } catch (err) {
      if (statusOf(err) === 412) throw new PreconditionFailedError();
      throw toStorageError('upload', err, { bucket: this.bucket, endpoint: this.endpoint });
    }
    const obj = this.toObject(file.metadata);
    if (obj.md5Hash && obj.md5Hash !== md5Base64(bytes)) {
      throw new ChecksumMismatchError('gcs upload stored different bytes');
    }
    return obj;
  }

  private toObject(m: FileMetadata): StoredObject {
    if (typeof m?.name !== 'string' || m.generation === undefined || m.generation === null) {
      throw new StorageError('bad_response', 'gcs returned an object without name or generation');
    }
    return {
      bucket: m.bucket ?? this.bucket,
      name: m.name,
      generation: String(m.generation),
      size: Number(m.size ?? 0),
      ...(m.md5Hash ? { md5Hash: m.md5Hash } : {}),
      ...(m.crc32c ? { crc32c: m.crc32c } : {}),
      updated: m.updated ?? '',
    };
  }
}
