import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { crc32cBase64, md5Base64 } from '../storage/checksums.js';

/**
 * A small in-memory Google Cloud Storage stand-in speaking the JSON API that
 * @google-cloud/storage 7.x sends when pointed at `apiEndpoint: standIn.url` (measured by
 * logging the real client's requests, see gcs-stand-in.test.ts):
 *
 * - list      GET    /storage/v1/b/{b}/o?prefix=&maxResults=&pageToken=&delimiter=
 * - metadata  GET    /storage/v1/b/{b}/o/{name}[?generation=]
 * - download  GET    /storage/v1/b/{b}/o/{name}?alt=media[&generation=]   (x-goog-hash)
 * - delete    DELETE /storage/v1/b/{b}/o/{name}[?generation=&ifGenerationMatch=]
 * - upload    POST   /upload/storage/v1/b/{b}/o?uploadType=multipart|media|resumable
 *   resumable PUT    /upload/storage/v1/b/{b}/o?uploadType=resumable&upload_id=  (Content-Range)
 * - rewrite   POST   /storage/v1/b/{b}/o/{src}/rewriteTo/b/{b2}/o/{dst}
 * - moveTo    POST   /storage/v1/b/{b}/o/{src}/moveTo/o/{dst}
 * - patch     PATCH  /storage/v1/b/{b}/o/{name} (metadata update, bumps metageneration)
 *
 * Object names are percent-encoded in paths. Faults can be injected per request kind
 * (`fail`), and hooks can change state just before a request is handled (`before`).
 * Only the current generation of an object is kept (a bucket without versioning).
 */

export type RequestKind =
  | 'list'
  | 'metadata'
  | 'download'
  | 'delete'
  | 'upload'
  | 'resumable-start'
  | 'resumable-put'
  | 'rewrite'
  | 'move'
  | 'patch'
  | 'bucket'
  | 'other';

export interface StandInObject {
  bucket: string;
  name: string;
  generation: string;
  metageneration: string;
  data: Buffer;
  contentType: string;
  md5Hash: string;
  crc32c: string;
  updated: string;
  timeCreated: string;
  metadata?: Record<string, string>;
}

export interface RecordedRequest {
  kind: RequestKind;
  method: string;
  /** Raw path as sent (percent-encoded). */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  bucket?: string;
  /** Decoded object name, when the request names one. */
  object?: string;
  status?: number;
  fault?: FaultMode;
}

/**
 * - `{ status }`: answer with this HTTP status and the JSON error GCS sends for it (its `reason`,
 *   e.g. `forbidden`, and its wording: a 403 or 404 names the object) (500, 503, 412, 429...)
 * - `'hang'`: accept the request and never answer (until `hangMs` or close): client timeouts
 * - `'reset'`: destroy the socket without an answer
 * - `'corrupt'` (download only): serve flipped bytes under the stored x-goog-hash (the client's
 *   hash validation must catch it)
 * - `'corrupt-consistent'` (download only): serve flipped bytes WITH matching x-goog-hash, so
 *   only a comparison with the object's metadata can catch it
 * - `'truncate'` (download only): announce the full length, send half, then close
 * - `'slow'`: answer normally, but only after `delayMs` (a slow or overloaded service)
 * - `'stall'` (download only): send the headers and half the bytes, then the rest after
 *   `delayMs` (without `delayMs`: never, until close): a body that stops arriving
 * - `'lost-answer'`: carry the request out (a delete deletes, an upload stores), then drop the
 *   connection instead of answering: the client cannot tell whether it happened
 */
export type FaultMode =
  | { status: number; message?: string }
  | 'hang'
  | 'reset'
  | 'corrupt'
  | 'corrupt-consistent'
  | 'truncate'
  | 'slow'
  | 'stall'
  | 'lost-answer';

export interface FaultSpec {
  kind: RequestKind | '*';
  mode: FaultMode;
  /** How many matching requests fail (default 1; Infinity = until cleared). */
  times?: number;
  /** Only requests for this decoded object name (or matching this predicate). */
  object?: string | ((name: string) => boolean);
  /** For 'hang': answer 503 after this many ms instead of hanging until close. */
  hangMs?: number;
  /** For 'slow' (default 1000) and 'stall' (default: until close): the pause in ms. */
  delayMs?: number;
}

export type BeforeHook = (req: RecordedRequest, standIn: GcsStandIn) => void | Promise<void>;

export interface GcsStandInOptions {
  host?: string;
  /** 0 (default) = a free port. */
  port?: number;
  /** Buckets that exist. Default: any bucket name exists (created on first use). */
  buckets?: string[];
  /** Keep every request in `requests` (default true; the benchmark turns it off). */
  recordRequests?: boolean;
  /** Called for every request (e.g. to print them when run standalone). */
  onRequest?: (req: RecordedRequest) => void;
  /** Default page size of a listing without maxResults (GCS: 1000). */
  defaultPageSize?: number;
}

interface ActiveFault extends FaultSpec {
  remaining: number;
}

interface BeforeEntry {
  kind: RequestKind | '*';
  fn: BeforeHook;
  remaining: number;
}

interface ResumableSession {
  bucket: string;
  name: string;
  contentType: string;
  metadata?: Record<string, string>;
  ifGenerationMatch?: string;
  chunks: Buffer[];
  received: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason = 'error',
  ) {
    super(message);
  }
}

export { crc32cBase64, md5Base64 };

function compareNames(a: string, b: string): number {
  // GCS orders names by their UTF-8 bytes.
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(400, 'Invalid percent-encoding in the object name', 'invalid');
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function parseMultipart(body: Buffer, contentType: string): { metadata: Record<string, unknown>; media: Buffer; mediaType: string } {
  const m = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!m) throw new HttpError(400, 'multipart upload without boundary', 'invalid');
  const boundary = Buffer.from(`--${m[1]}`);
  const parts: Buffer[] = [];
  let pos = body.indexOf(boundary);
  while (pos !== -1) {
    const start = pos + boundary.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const next = body.indexOf(boundary, start);
    if (next === -1) break;
    // part = \r\n headers \r\n\r\n content \r\n
    parts.push(body.subarray(start + 2, next - 2));
    pos = next;
  }
  if (parts.length < 2) throw new HttpError(400, 'multipart upload needs metadata and media parts', 'invalid');
  const split = (p: Buffer) => {
    const i = p.indexOf('\r\n\r\n');
    return { headers: p.subarray(0, i).toString('utf8'), content: p.subarray(i + 4) };
  };
  const meta = split(parts[0]!);
  const media = split(parts[1]!);
  const mediaType = /content-type:\s*([^\r\n]+)/i.exec(media.headers)?.[1]?.trim() ?? 'application/octet-stream';
  return { metadata: JSON.parse(meta.content.toString('utf8') || '{}') as Record<string, unknown>, media: media.content, mediaType };
}

/** The permission a request kind needs (as GCS names it in a 403). */
const PERMISSION: Partial<Record<RequestKind, string>> = {
  list: 'storage.objects.list',
  metadata: 'storage.objects.get',
  download: 'storage.objects.get',
  delete: 'storage.objects.delete',
  upload: 'storage.objects.create',
  'resumable-start': 'storage.objects.create',
  'resumable-put': 'storage.objects.create',
  patch: 'storage.objects.update',
};

/**
 * The error GCS answers with for a status: its `reason` and a message as GCS words it. A 403
 * names the bucket and object as the JSON API's older wording does (`... does not have
 * storage.objects.get access to bucket/name.`), and a 404 the object too: whatever shows the
 * service's message would show the patient's name.
 */
function realError(status: number, rec: RecordedRequest): { reason: string; message: string } {
  const target = rec.object !== undefined ? `${rec.bucket}/${rec.object}` : (rec.bucket ?? '');
  switch (status) {
    case 400:
      return { reason: 'invalid', message: 'Invalid argument.' };
    case 401:
      return { reason: 'required', message: 'Anonymous caller does not have storage.objects.get access to the Google Cloud Storage object.' };
    case 403:
      return { reason: 'forbidden', message: `fleet@curavani.iam.gserviceaccount.com does not have ${PERMISSION[rec.kind] ?? 'storage.objects.get'} access to ${target}.` };
    case 404:
      return { reason: 'notFound', message: `No such object: ${target}` };
    case 412:
      return { reason: 'conditionNotMet', message: 'At least one of the pre-conditions you specified did not hold.' };
    case 429:
      return { reason: 'rateLimitExceeded', message: 'The object exceeded the rate limit for object mutation operations (create, update, and delete).' };
    case 503:
      return { reason: 'backendError', message: 'We encountered an internal error. Please try again.' };
    default:
      return status >= 500 ? { reason: 'backendError', message: 'We encountered an internal error. Please try again.' } : { reason: 'error', message: `HTTP ${status}` };
  }
}

export class GcsStandIn {
  readonly requests: RecordedRequest[] = [];
  private readonly objects = new Map<string, Map<string, StandInObject>>();
  private readonly sessions = new Map<string, ResumableSession>();
  private faults: ActiveFault[] = [];
  private hooks: BeforeEntry[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly hanging = new Set<ServerResponse>();
  private lastGeneration = 0n;
  private server!: Server;
  url = '';
  port = 0;

  constructor(private readonly options: GcsStandInOptions = {}) {
    for (const b of options.buckets ?? []) this.objects.set(b, new Map());
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.sendError(res, 500, (err as Error).message);
        else res.destroy();
      });
    });
    this.server.keepAliveTimeout = 5_000;
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    this.port = addr.port;
    this.url = `http://${this.options.host ?? '127.0.0.1'}:${addr.port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.hanging.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- state, for tests -------------------------------------------------------------------

  /** Writes an object as a new generation (like an upload from the registration site). */
  putObject(
    bucket: string,
    name: string,
    data: Buffer | string,
    opts: { contentType?: string; metadata?: Record<string, string> } = {},
  ): StandInObject {
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
    const now = new Date().toISOString();
    const obj: StandInObject = {
      bucket,
      name,
      generation: this.nextGeneration(),
      metageneration: '1',
      data: bytes,
      contentType: opts.contentType ?? 'application/json',
      md5Hash: md5Base64(bytes),
      crc32c: crc32cBase64(bytes),
      updated: now,
      timeCreated: now,
      metadata: opts.metadata,
    };
    this.bucketMap(bucket, true).set(name, obj);
    return obj;
  }

  getObject(bucket: string, name: string): StandInObject | undefined {
    return this.objects.get(bucket)?.get(name);
  }

  listObjects(bucket: string, prefix = ''): StandInObject[] {
    return [...(this.objects.get(bucket)?.values() ?? [])]
      .filter((o) => o.name.startsWith(prefix))
      .sort((a, b) => compareNames(a.name, b.name));
  }

  removeObject(bucket: string, name: string): boolean {
    return this.objects.get(bucket)?.delete(name) ?? false;
  }

  /** Replaces the stored bytes but keeps the recorded md5/crc32c (storage-side corruption). */
  corruptObject(bucket: string, name: string, data: Buffer | string): void {
    const obj = this.getObject(bucket, name);
    if (!obj) throw new Error('corruptObject: no such object');
    obj.data = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
  }

  // ---- faults and hooks ---------------------------------------------------------------------

  /** The next `times` (default 1) requests of `kind` fail as `mode`. */
  fail(spec: FaultSpec): void {
    this.faults.push({ ...spec, remaining: spec.times ?? 1 });
  }

  /** Runs `fn` just before the next `times` (default 1) requests of `kind` are handled. */
  before(kind: RequestKind | '*', fn: BeforeHook, times = 1): void {
    this.hooks.push({ kind, fn, remaining: times });
  }

  clearFaults(): void {
    this.faults = [];
    this.hooks = [];
  }

  /** Faults not yet used up (a test can assert that all were consumed). */
  pendingFaults(): number {
    return this.faults.reduce((n, f) => n + (Number.isFinite(f.remaining) ? f.remaining : 1), 0);
  }

  count(kind: RequestKind): number {
    return this.requests.filter((r) => r.kind === kind).length;
  }

  resetRequests(): void {
    this.requests.length = 0;
  }

  // ---- internals ----------------------------------------------------------------------------

  private nextGeneration(): string {
    // Like GCS: microseconds since the epoch, strictly increasing.
    const now = BigInt(Date.now()) * 1000n;
    this.lastGeneration = now > this.lastGeneration ? now : this.lastGeneration + 1n;
    return this.lastGeneration.toString();
  }

  private bucketMap(bucket: string, create = false): Map<string, StandInObject> {
    let m = this.objects.get(bucket);
    if (!m) {
      if (this.options.buckets && !create) throw new HttpError(404, `The specified bucket does not exist.`, 'notFound');
      m = new Map();
      this.objects.set(bucket, m);
    }
    return m;
  }

  private json(obj: StandInObject): Record<string, unknown> {
    const enc = encodeURIComponent(obj.name);
    return {
      kind: 'storage#object',
      id: `${obj.bucket}/${obj.name}/${obj.generation}`,
      selfLink: `${this.url}/storage/v1/b/${obj.bucket}/o/${enc}`,
      mediaLink: `${this.url}/download/storage/v1/b/${obj.bucket}/o/${enc}?generation=${obj.generation}&alt=media`,
      name: obj.name,
      bucket: obj.bucket,
      generation: obj.generation,
      metageneration: obj.metageneration,
      contentType: obj.contentType,
      storageClass: 'STANDARD',
      size: String(obj.data.length),
      md5Hash: obj.md5Hash,
      crc32c: obj.crc32c,
      etag: Buffer.from(`${obj.generation}/${obj.metageneration}`).toString('base64'),
      timeCreated: obj.timeCreated,
      updated: obj.updated,
      timeStorageClassUpdated: obj.timeCreated,
      ...(obj.metadata ? { metadata: obj.metadata } : {}),
    };
  }

  private sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  private sendError(res: ServerResponse, status: number, message: string, reason = 'error'): void {
    this.sendJson(res, status, { error: { code: status, message, errors: [{ message, domain: 'global', reason }] } });
  }

  private classify(method: string, segs: string[], query: Record<string, string>): Pick<RecordedRequest, 'kind' | 'bucket' | 'object'> {
    // segs of the raw path, still encoded
    if (segs[0] === 'upload' && segs[1] === 'storage' && segs[2] === 'v1' && segs[3] === 'b' && segs[5] === 'o') {
      const bucket = decodeSegment(segs[4]!);
      if (query.uploadType === 'resumable') {
        return { kind: method === 'POST' ? 'resumable-start' : 'resumable-put', bucket, object: query.name };
      }
      return { kind: 'upload', bucket, object: query.name };
    }
    if (segs[0] === 'storage' && segs[1] === 'v1' && segs[2] === 'b' && segs[3] !== undefined) {
      const bucket = decodeSegment(segs[3]);
      if (segs.length === 4) return { kind: 'bucket', bucket };
      if (segs[4] === 'o' && segs.length === 5) return { kind: method === 'GET' ? 'list' : 'other', bucket };
      if (segs[4] === 'o' && segs.length === 6) {
        const object = decodeSegment(segs[5]!);
        if (method === 'GET') return { kind: query.alt === 'media' ? 'download' : 'metadata', bucket, object };
        if (method === 'DELETE') return { kind: 'delete', bucket, object };
        if (method === 'PATCH' || method === 'PUT') return { kind: 'patch', bucket, object };
      }
      if (segs[4] === 'o' && segs[6] === 'rewriteTo') return { kind: 'rewrite', bucket, object: decodeSegment(segs[5]!) };
      if (segs[4] === 'o' && segs[6] === 'copyTo') return { kind: 'rewrite', bucket, object: decodeSegment(segs[5]!) };
      if (segs[4] === 'o' && segs[6] === 'moveTo') return { kind: 'move', bucket, object: decodeSegment(segs[5]!) };
    }
    return { kind: 'other' };
  }

  private takeFault(rec: RecordedRequest): ActiveFault | undefined {
    const f = this.faults.find(
      (x) =>
        x.remaining > 0 &&
        (x.kind === '*' || x.kind === rec.kind) &&
        (x.object === undefined ||
          (typeof x.object === 'string' ? x.object === rec.object : rec.object !== undefined && x.object(rec.object))),
    );
    if (!f) return undefined;
    f.remaining -= 1;
    this.faults = this.faults.filter((x) => x.remaining > 0);
    return f;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://stand-in');
    const query: Record<string, string> = {};
    for (const [k, v] of u.searchParams) query[k] = v;
    const rawPath = (req.url ?? '/').split('?')[0]!;
    const segs = rawPath.split('/').filter((s, i) => i > 0 || s !== '');
    let rec: RecordedRequest = { kind: 'other', method: req.method ?? 'GET', path: rawPath, query, headers: req.headers };
    try {
      rec = { ...rec, ...this.classify(rec.method, segs, query) };
    } catch (err) {
      if (err instanceof HttpError) return this.sendError(res, err.status, err.message, err.reason);
      throw err;
    }
    if (this.options.recordRequests !== false) this.requests.push(rec);
    this.options.onRequest?.(rec);
    res.on('finish', () => (rec.status = res.statusCode));

    for (const h of this.hooks) {
      if (h.remaining > 0 && (h.kind === '*' || h.kind === rec.kind)) {
        h.remaining -= 1;
        await h.fn(rec, this);
      }
    }
    this.hooks = this.hooks.filter((h) => h.remaining > 0);

    const fault = this.takeFault(rec);
    if (fault) {
      rec.fault = fault.mode;
      if (fault.mode === 'hang') {
        await readBody(req).catch(() => undefined);
        this.hanging.add(res);
        if (fault.hangMs !== undefined) {
          setTimeout(() => {
            this.hanging.delete(res);
            if (!res.destroyed) this.sendError(res, 503, 'stand-in: hang ended');
          }, fault.hangMs).unref();
        }
        return;
      }
      if (fault.mode === 'reset') {
        req.socket.destroy();
        return;
      }
      if (fault.mode === 'slow') {
        await new Promise((resolve) => setTimeout(resolve, fault.delayMs ?? 1000));
        if (res.destroyed || req.socket.destroyed) return;
      }
      if (fault.mode === 'lost-answer') {
        const socket = req.socket;
        res.writeHead = (() => res) as unknown as ServerResponse['writeHead'];
        res.write = (() => true) as unknown as ServerResponse['write'];
        res.end = (() => {
          socket.destroy();
          return res;
        }) as unknown as ServerResponse['end'];
      }
      if (typeof fault.mode === 'object') {
        await readBody(req).catch(() => undefined);
        const real = realError(fault.mode.status, rec);
        return this.sendError(res, fault.mode.status, fault.mode.message ?? real.message, real.reason);
      }
    }

    try {
      await this.route(rec, req, res, fault?.mode, fault?.delayMs);
    } catch (err) {
      if (err instanceof HttpError) return this.sendError(res, err.status, err.message, err.reason);
      throw err;
    }
  }

  private current(bucket: string, name: string, generation?: string): StandInObject {
    const obj = this.bucketMap(bucket).get(name);
    if (!obj || (generation !== undefined && obj.generation !== generation)) {
      throw new HttpError(404, `No such object: ${bucket}/${name}`, 'notFound');
    }
    return obj;
  }

  private checkPreconditions(obj: StandInObject | undefined, q: Record<string, string>): void {
    if (q.ifGenerationMatch !== undefined) {
      const want = q.ifGenerationMatch;
      const ok = want === '0' ? obj === undefined : obj !== undefined && obj.generation === want;
      if (!ok) throw new HttpError(412, 'At least one of the pre-conditions you specified did not hold.', 'conditionNotMet');
    }
    if (q.ifGenerationNotMatch !== undefined && obj && obj.generation === q.ifGenerationNotMatch) {
      throw new HttpError(304, 'Not modified', 'notModified');
    }
    if (q.ifMetagenerationMatch !== undefined && (!obj || obj.metageneration !== q.ifMetagenerationMatch)) {
      throw new HttpError(412, 'At least one of the pre-conditions you specified did not hold.', 'conditionNotMet');
    }
  }

  private async route(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse, fault?: FaultMode, delayMs?: number): Promise<void> {
    const q = rec.query;
    const bucket = rec.bucket ?? '';
    switch (rec.kind) {
      case 'bucket': {
        this.bucketMap(bucket);
        return this.sendJson(res, 200, { kind: 'storage#bucket', id: bucket, name: bucket, location: 'EU', storageClass: 'STANDARD' });
      }
      case 'list': {
        const prefix = q.prefix ?? '';
        const delimiter = q.delimiter;
        const max = Math.min(Math.max(Number(q.maxResults ?? this.options.defaultPageSize ?? 1000) || 1000, 1), 1000);
        const after = q.pageToken ? Buffer.from(q.pageToken, 'base64url').toString('utf8') : undefined;
        const startOffset = q.startOffset;
        const all = this.listObjects(bucket, prefix);
        this.bucketMap(bucket); // 404 for a missing bucket
        const items: StandInObject[] = [];
        const prefixes = new Set<string>();
        let last: string | undefined;
        let more = false;
        for (const o of all) {
          if (after !== undefined && compareNames(o.name, after) <= 0) continue;
          if (startOffset !== undefined && compareNames(o.name, startOffset) < 0) continue;
          if (items.length + prefixes.size >= max) {
            more = true;
            break;
          }
          if (delimiter) {
            const rest = o.name.slice(prefix.length);
            const i = rest.indexOf(delimiter);
            if (i !== -1) {
              prefixes.add(prefix + rest.slice(0, i + delimiter.length));
              last = o.name;
              continue;
            }
          }
          items.push(o);
          last = o.name;
        }
        const body: Record<string, unknown> = { kind: 'storage#objects' };
        if (items.length) body.items = items.map((o) => this.json(o));
        if (prefixes.size) body.prefixes = [...prefixes];
        if (more && last !== undefined) body.nextPageToken = Buffer.from(last, 'utf8').toString('base64url');
        return this.sendJson(res, 200, body);
      }
      case 'metadata': {
        const obj = this.current(bucket, rec.object!, q.generation);
        this.checkPreconditions(obj, q);
        return this.sendJson(res, 200, this.json(obj));
      }
      case 'download': {
        const obj = this.current(bucket, rec.object!, q.generation);
        this.checkPreconditions(obj, q);
        let data = obj.data;
        let hash = `crc32c=${obj.crc32c},md5=${obj.md5Hash}`;
        if (fault === 'corrupt' || fault === 'corrupt-consistent') {
          data = Buffer.from(obj.data);
          if (data.length === 0) data = Buffer.from('x');
          else data[0] = data[0]! ^ 0xff;
          if (fault === 'corrupt-consistent') hash = `crc32c=${crc32cBase64(data)},md5=${md5Base64(data)}`;
        }
        res.writeHead(200, {
          'content-type': obj.contentType,
          'content-length': data.length,
          'x-goog-generation': obj.generation,
          'x-goog-metageneration': obj.metageneration,
          'x-goog-hash': hash,
          'x-goog-stored-content-encoding': 'identity',
          'x-goog-stored-content-length': String(obj.data.length),
          etag: Buffer.from(`${obj.generation}/${obj.metageneration}`).toString('base64'),
          'last-modified': new Date(obj.updated).toUTCString(),
        });
        if (fault === 'truncate') {
          res.write(data.subarray(0, Math.floor(data.length / 2)));
          setTimeout(() => res.destroy(), 10);
          return;
        }
        if (fault === 'stall') {
          const half = Math.floor(data.length / 2);
          res.write(data.subarray(0, half));
          this.hanging.add(res);
          if (delayMs !== undefined) {
            setTimeout(() => {
              this.hanging.delete(res);
              if (!res.destroyed) res.end(data.subarray(half));
            }, delayMs).unref();
          }
          return;
        }
        res.end(data);
        return;
      }
      case 'delete': {
        const objects = this.bucketMap(bucket);
        const obj = objects.get(rec.object!);
        if (!obj || (q.generation !== undefined && obj.generation !== q.generation)) {
          throw new HttpError(404, `No such object: ${bucket}/${rec.object}`, 'notFound');
        }
        this.checkPreconditions(obj, q);
        objects.delete(rec.object!);
        res.writeHead(204);
        res.end();
        return;
      }
      case 'patch': {
        const obj = this.current(bucket, rec.object!);
        this.checkPreconditions(obj, q);
        const body = JSON.parse((await readBody(req)).toString('utf8') || '{}') as { metadata?: Record<string, string>; contentType?: string };
        if (body.metadata) obj.metadata = { ...obj.metadata, ...body.metadata };
        if (body.contentType) obj.contentType = body.contentType;
        obj.metageneration = String(Number(obj.metageneration) + 1);
        obj.updated = new Date().toISOString();
        return this.sendJson(res, 200, this.json(obj));
      }
      case 'upload': {
        const body = await readBody(req);
        const ct = String(req.headers['content-type'] ?? '');
        let name = q.name;
        let data = body;
        let contentType = ct || 'application/octet-stream';
        let metadata: Record<string, string> | undefined;
        if (q.uploadType === 'multipart' || ct.startsWith('multipart/')) {
          const mp = parseMultipart(body, ct);
          name = (mp.metadata.name as string | undefined) ?? name;
          data = mp.media;
          contentType = (mp.metadata.contentType as string | undefined) ?? mp.mediaType;
          metadata = mp.metadata.metadata as Record<string, string> | undefined;
          this.checkUploadHashes(mp.metadata, data);
        }
        if (!name) throw new HttpError(400, 'Required parameter: name', 'required');
        this.checkPreconditions(this.bucketMap(bucket, true).get(name), q);
        const obj = this.putObject(bucket, name, data, { contentType, metadata });
        return this.sendJson(res, 200, this.json(obj));
      }
      case 'resumable-start': {
        const body = await readBody(req);
        const meta = (body.length ? JSON.parse(body.toString('utf8')) : {}) as Record<string, unknown>;
        const name = (meta.name as string | undefined) ?? q.name;
        if (!name) throw new HttpError(400, 'Required parameter: name', 'required');
        this.checkPreconditions(this.bucketMap(bucket, true).get(name), q);
        const id = randomBytes(12).toString('hex');
        this.sessions.set(id, {
          bucket,
          name,
          contentType: (meta.contentType as string | undefined) ?? String(req.headers['x-upload-content-type'] ?? 'application/octet-stream'),
          metadata: meta.metadata as Record<string, string> | undefined,
          ifGenerationMatch: q.ifGenerationMatch,
          chunks: [],
          received: 0,
        });
        const location = `${this.url}/upload/storage/v1/b/${encodeURIComponent(bucket)}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`;
        res.writeHead(200, { location, 'content-length': 0 });
        res.end();
        return;
      }
      case 'resumable-put': {
        const s = q.upload_id ? this.sessions.get(q.upload_id) : undefined;
        if (!s) throw new HttpError(404, 'No such upload session', 'notFound');
        const body = await readBody(req);
        const range = String(req.headers['content-range'] ?? '');
        // "bytes a-b/total", "bytes a-b/*", "bytes */total" (status query or final empty chunk)
        const m = /^bytes (\*|(\d+)-(\d+|\*))\/(\*|\d+)$/.exec(range.trim());
        let total: number | undefined;
        if (m) {
          if (m[2] !== undefined && Number(m[2]) !== s.received) {
            // Retransmission of bytes we already have: keep only the new part.
            const start = Number(m[2]);
            if (start < s.received) {
              const skip = s.received - start;
              if (skip < body.length) {
                s.chunks.push(body.subarray(skip));
                s.received += body.length - skip;
              }
            } else {
              throw new HttpError(400, 'Content-Range does not continue the upload', 'invalid');
            }
          } else if (body.length) {
            s.chunks.push(body);
            s.received += body.length;
          }
          if (m[4] !== '*') total = Number(m[4]);
          // "bytes a-*/*": a streamed upload, the rest of the object in this one request
          else if (m[3] === '*') total = s.received;
        } else {
          // No Content-Range: the whole object in one request
          s.chunks.push(body);
          s.received += body.length;
          total = s.received;
        }
        if (total === undefined || s.received < total) {
          const headers: Record<string, string> = {};
          if (s.received > 0) headers.range = `bytes=0-${s.received - 1}`;
          res.writeHead(308, { ...headers, 'content-length': 0 });
          res.end();
          return;
        }
        this.sessions.delete(q.upload_id!);
        this.checkPreconditions(this.bucketMap(s.bucket, true).get(s.name), { ...(s.ifGenerationMatch ? { ifGenerationMatch: s.ifGenerationMatch } : {}) });
        const obj = this.putObject(s.bucket, s.name, Buffer.concat(s.chunks), { contentType: s.contentType, metadata: s.metadata });
        return this.sendJson(res, 200, this.json(obj));
      }
      case 'rewrite':
      case 'move': {
        const segs = rec.path.split('/').filter(Boolean);
        // [3]=b [5]=src [6]=rewriteTo [8]=b2 [10]=dst  |  [6]=moveTo [8]=dst
        const dstBucket = rec.kind === 'move' ? bucket : decodeSegment(segs[8]!);
        const dstName = decodeSegment(rec.kind === 'move' ? segs[8]! : segs[10]!);
        const src = this.current(bucket, rec.object!, q.sourceGeneration);
        if (q.ifSourceGenerationMatch !== undefined && src.generation !== q.ifSourceGenerationMatch) {
          throw new HttpError(412, 'At least one of the pre-conditions you specified did not hold.', 'conditionNotMet');
        }
        this.checkPreconditions(this.bucketMap(dstBucket, true).get(dstName), q);
        const body = await readBody(req);
        const meta = (body.length ? JSON.parse(body.toString('utf8')) : {}) as Record<string, unknown>;
        const obj = this.putObject(dstBucket, dstName, src.data, {
          contentType: (meta.contentType as string | undefined) ?? src.contentType,
          metadata: (meta.metadata as Record<string, string> | undefined) ?? src.metadata,
        });
        if (rec.kind === 'move') {
          this.bucketMap(bucket).delete(src.name);
          return this.sendJson(res, 200, this.json(obj));
        }
        return this.sendJson(res, 200, {
          kind: 'storage#rewriteResponse',
          totalBytesRewritten: String(obj.data.length),
          objectSize: String(obj.data.length),
          done: true,
          resource: this.json(obj),
        });
      }
      default:
        throw new HttpError(501, `stand-in: ${rec.method} ${rec.path} is not implemented`, 'notImplemented');
    }
  }

  private checkUploadHashes(meta: Record<string, unknown>, data: Buffer): void {
    if (typeof meta.md5Hash === 'string' && meta.md5Hash !== md5Base64(data)) {
      throw new HttpError(400, 'Provided MD5 hash does not match the data', 'invalid');
    }
    if (typeof meta.crc32c === 'string' && meta.crc32c !== crc32cBase64(data)) {
      throw new HttpError(400, 'Provided CRC32C does not match the data', 'invalid');
    }
  }
}

/** Starts a stand-in on a free port (or `options.port`). Pass `standIn.url` as `apiEndpoint`. */
export async function startGcsStandIn(options: GcsStandInOptions = {}): Promise<GcsStandIn> {
  return new GcsStandIn(options).start();
}
