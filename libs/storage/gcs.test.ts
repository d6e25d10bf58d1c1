import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Storage } from '@google-cloud/storage';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startGcsStandIn, type GcsStandIn } from '../testing/gcs-stand-in.js';
import { closedPort } from '../testing/ports.js';
import { tcpProxy } from '../testing/tcp-proxy.js';
import { ChecksumMismatchError, GcsBucket, ObjectNotFoundError, StorageError, md5Base64 } from './index.js';

/**
 * The GCS driver with the real @google-cloud/storage client against the stand-in:
 * what the client sends, faults, timeouts, checksums, resumable uploads.
 */
const B = 'curavani-production-data-transfer';
const NAME = 'registrations/Müller_Jürgen_2025-07-05_0b1ab67b.json';
let si: GcsStandIn;

beforeAll(async () => {
  si = await startGcsStandIn();
});
afterAll(async () => {
  await si?.close();
});
afterEach(() => {
  expect(si.pendingFaults()).toBe(0); // every injected fault was really hit
  si.clearFaults();
  si.resetRequests();
});

const bucket = (o: Partial<ConstructorParameters<typeof GcsBucket>[0]> = {}) =>
  new GcsBucket({ bucket: B, apiEndpoint: si.url, projectId: 'test', maxRetries: 0, timeoutMs: 1_500, ...o });

async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

function noPersonalData(err: Error) {
  const text = `${err.message} ${String((err as { stack?: string }).stack)}`;
  expect(text).not.toContain('Müller');
  expect(text).not.toContain('M%C3%BCller');
  expect(text).not.toContain('registrations');
}

describe('requests the real client sends (as the stand-in documents them)', () => {
  it('list, metadata, download, delete, multipart upload, rewrite', async () => {
    const storage = new Storage({ apiEndpoint: si.url, projectId: 'test', retryOptions: { autoRetry: false } });
    const file = storage.bucket(B).file(NAME);
    await file.save('{"a":1}', { resumable: false });
    const [files] = await storage.bucket(B).getFiles({ prefix: 'registrations/', maxResults: 1, autoPaginate: false });
    const [md] = await file.getMetadata();
    await storage.bucket(B).file(NAME, { generation: md.generation }).download();
    await file.copy(storage.bucket(B).file('archive/copy.json'));
    await file.delete({ ifGenerationMatch: md.generation });

    expect(files.map((f) => f.name)).toEqual([NAME]);
    const seen = si.requests.map((r) => `${r.kind} ${r.method} ${r.path}`);
    const enc = 'registrations%2FM%C3%BCller_J%C3%BCrgen_2025-07-05_0b1ab67b.json';
    expect(seen).toEqual([
      `upload POST /upload/storage/v1/b/${B}/o`,
      `list GET /storage/v1/b/${B}/o`,
      `metadata GET /storage/v1/b/${B}/o/${enc}`,
      `download GET /storage/v1/b/${B}/o/${enc}`,
      `rewrite POST /storage/v1/b/${B}/o/${enc}/rewriteTo/b/${B}/o/archive%2Fcopy.json`,
      `delete DELETE /storage/v1/b/${B}/o/${enc}`,
    ]);
    expect(si.requests[0]!.query).toMatchObject({ uploadType: 'multipart' });
    expect(si.requests[1]!.query).toMatchObject({ prefix: 'registrations/', maxResults: '1' });
    expect(si.requests[3]!.query).toMatchObject({ alt: 'media', generation: String(md.generation) });
    expect(si.requests[5]!.query).toMatchObject({ ifGenerationMatch: String(md.generation) });
    expect(si.requests.every((r) => r.headers.authorization === undefined)).toBe(true); // no credentials
    expect(si.getObject(B, 'archive/copy.json')?.data.toString()).toBe('{"a":1}');
  });

  it('pageToken is passed back verbatim', async () => {
    for (let i = 0; i < 5; i++) si.putObject(B, `pt/${i}.json`, '{}');
    const b = bucket();
    const p1 = await b.list('pt/', { pageSize: 2 });
    const p2 = await b.list('pt/', { pageSize: 2, pageToken: p1.nextPageToken });
    expect(si.requests[1]!.query).toMatchObject({ prefix: 'pt/', maxResults: '2', pageToken: p1.nextPageToken });
    expect([...p1.items, ...p2.items].map((o) => o.name)).toEqual(['pt/0.json', 'pt/1.json', 'pt/2.json', 'pt/3.json']);
  });

  it('a resumable upload of a larger file (start, then PUT to the Location)', async () => {
    const data = randomBytes(12 * 1024 * 1024 + 7);
    const up = await bucket({ timeoutMs: 30_000 }).upload('big/scan.bin', data, { contentType: 'application/octet-stream' });
    expect(si.requests.map((r) => r.kind)).toEqual(['resumable-start', 'resumable-put']);
    expect(si.requests[1]!.query.upload_id).toBeTruthy();
    expect(up.size).toBe(data.length);
    expect(up.md5Hash).toBe(md5Base64(data));
    const back = await bucket({ timeoutMs: 30_000 }).download('big/scan.bin', up.generation);
    expect(back.equals(data)).toBe(true);
  });

  it('a chunked resumable upload (308 + Range between chunks)', async () => {
    const storage = new Storage({ apiEndpoint: si.url, projectId: 'test', retryOptions: { autoRetry: false } });
    const data = randomBytes(600 * 1024);
    await storage.bucket(B).file('big/chunked.bin').save(data, { resumable: true, chunkSize: 256 * 1024 });
    const puts = si.requests.filter((r) => r.kind === 'resumable-put');
    expect(puts.length).toBe(3);
    expect(puts.map((r) => r.status)).toEqual([308, 308, 200]);
    expect(si.getObject(B, 'big/chunked.bin')?.data.equals(data)).toBe(true);
  });
});

describe('checksums', () => {
  it('bytes changed in storage (stale x-goog-hash): the client catches it, a retryable error', async () => {
    const o = si.putObject(B, NAME, '{"token":"abc"}');
    si.corruptObject(B, NAME, '{"token":"abd"}');
    const err = await caught(bucket().download(NAME, o.generation));
    expect(err).toBeInstanceOf(ChecksumMismatchError);
    expect(err).not.toBeInstanceOf(ObjectNotFoundError);
    noPersonalData(err);
  });

  it('wrong bytes with a matching x-goog-hash: the comparison with the object metadata catches it', async () => {
    const o = si.putObject(B, NAME, '{"token":"abc"}');
    si.fail({ kind: 'download', mode: 'corrupt-consistent' });
    await expect(bucket().download(NAME, o.generation)).rejects.toBeInstanceOf(ChecksumMismatchError);
    // ...and with checksums from the listing (no metadata request)
    si.fail({ kind: 'download', mode: 'corrupt-consistent' });
    si.resetRequests();
    await expect(bucket().download(NAME, o.generation, { md5Hash: o.md5Hash, crc32c: o.crc32c })).rejects.toBeInstanceOf(
      ChecksumMismatchError,
    );
    expect(si.requests.map((r) => r.kind)).toEqual(['download']);
    // ...and with only the md5 the ledger keeps
    si.fail({ kind: 'download', mode: 'corrupt-consistent' });
    si.resetRequests();
    await expect(bucket().download(NAME, o.generation, { md5Hash: o.md5Hash })).rejects.toBeInstanceOf(ChecksumMismatchError);
    expect(si.requests.map((r) => r.kind)).toEqual(['download']);
    expect((await bucket().download(NAME, o.generation, { md5Hash: o.md5Hash })).toString()).toBe('{"token":"abc"}');
    // a clean retry succeeds
    expect((await bucket().download(NAME, o.generation)).toString()).toBe('{"token":"abc"}');
  });

  it('a truncated transfer is an error, never short data', async () => {
    const o = si.putObject(B, NAME, Buffer.alloc(64 * 1024, 'a'));
    si.fail({ kind: 'download', mode: 'truncate' });
    const err = await caught(bucket().download(NAME, o.generation));
    expect(err).toBeInstanceOf(StorageError);
  });
});

describe('generations and preconditions', () => {
  it('object re-uploaded between import and delete: 412 -> precondition_failed, the new generation stays', async () => {
    const o = si.putObject(B, NAME, '{"v":1}');
    const b = bucket();
    const data = await b.download(NAME, o.generation);
    expect(data.toString()).toBe('{"v":1}');
    let newer = '';
    si.before('delete', () => {
      newer = si.putObject(B, NAME, '{"v":2}').generation;
    });
    expect(await b.deleteGeneration(NAME, o.generation)).toBe('precondition_failed');
    expect(si.requests.find((r) => r.kind === 'delete')?.status).toBe(412);
    expect(si.getObject(B, NAME)?.generation).toBe(newer);
    expect(await b.deleteGeneration(NAME, newer)).toBe('deleted');
  });

  it('download of a replaced generation is ObjectNotFoundError (a permanent error)', async () => {
    const o = si.putObject(B, NAME, '{"v":1}');
    si.putObject(B, NAME, '{"v":2}');
    const err = await caught(bucket().download(NAME, o.generation));
    expect(err).toBeInstanceOf(ObjectNotFoundError);
    expect((err as ObjectNotFoundError).code).toBe('object_not_found');
  });

  it('an injected 412 or 404 on delete maps to the outcome', async () => {
    const o = si.putObject(B, NAME, '{}');
    si.fail({ kind: 'delete', mode: { status: 412 } });
    expect(await bucket().deleteGeneration(NAME, o.generation)).toBe('precondition_failed');
    si.fail({ kind: 'delete', mode: { status: 404 } });
    expect(await bucket().deleteGeneration(NAME, o.generation)).toBe('not_found');
    expect(si.getObject(B, NAME)).toBeDefined();
  });
});

describe('a delete retried after a refused connection', () => {
  it('finding the generation gone then is not_found (someone else), not gone_after_retry: a refused request never reached GCS', async () => {
    const o = si.putObject(B, NAME, '{}');
    const proxy = tcpProxy({ host: '127.0.0.1', port: Number(new URL(si.url).port) });
    await proxy.open();
    await proxy.close(); // its port is known, nothing listens on it
    try {
      const b = bucket({ apiEndpoint: `http://127.0.0.1:${proxy.port}`, maxRetries: 3, maxRetryDelayMs: 1_000 });
      const t0 = Date.now();
      const outcome = b.deleteGeneration(NAME, o.generation);
      await new Promise((r) => setTimeout(r, 300)); // the first attempt is refused at once; its retry waits 1 s
      expect(si.removeObject(B, NAME)).toBe(true); // meanwhile someone else removes it
      await proxy.open();
      expect(await outcome).toBe('not_found');
      // It was the retry that found it gone (an attempt as late as the removal would have taken no second)
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1_000);
      expect(si.count('delete')).toBe(1); // the retry, through the proxy; the refused attempt never arrived
    } finally {
      await proxy.close();
    }
  });
});

describe('faults surface as errors', () => {
  it('a failing listing throws; it is never an empty bucket', async () => {
    si.putObject(B, 'faults/a.json', '{}');
    for (const mode of [{ status: 500 }, { status: 503 }, { status: 429 }, { status: 403 }, 'reset'] as const) {
      si.fail({ kind: 'list', mode });
      const err = await caught(bucket().list('faults/'));
      expect(err).toBeInstanceOf(StorageError);
      if (typeof mode === 'object') expect((err as StorageError).status).toBe(mode.status);
    }
    expect((await bucket().list('faults/')).items).toHaveLength(1);
  });

  it('a listing with a broken body throws', async () => {
    si.fail({ kind: 'list', mode: { status: 200, message: 'not a listing' } });
    // a 200 with an error-shaped body is not a listing either
    const err = await caught(bucket().list('faults/'));
    expect(err).toBeInstanceOf(Error);
  });

  it('the client retries transient 500s itself when asked to (maxRetries)', async () => {
    si.putObject(B, 'retry/a.json', '{}');
    si.fail({ kind: 'list', mode: { status: 500 }, times: 2 });
    const page = await bucket({ maxRetries: 3, maxRetryDelayMs: 1_000 }).list('retry/');
    expect(page.items.map((o) => o.name)).toEqual(['retry/a.json']);
    expect(si.count('list')).toBe(3);
  });

  it('the client retries a delete only with its ifGenerationMatch, and never an upload without a precondition', async () => {
    const o = si.putObject(B, NAME, '{}');
    const b = bucket({ maxRetries: 3, maxRetryDelayMs: 1_000 });
    si.fail({ kind: 'delete', mode: { status: 503 } });
    si.fail({ kind: 'delete', mode: 'reset' });
    expect(await b.deleteGeneration(NAME, o.generation)).toBe('deleted');
    const deletes = si.requests.filter((r) => r.kind === 'delete');
    expect(deletes.map((r) => r.query.ifGenerationMatch)).toEqual([o.generation, o.generation, o.generation]);
    si.fail({ kind: 'upload', mode: { status: 503 } });
    await expect(b.upload('uploads/once.json', '{}')).rejects.toMatchObject({ code: 'unavailable' });
    expect(si.count('upload')).toBe(1); // a second attempt could write a second generation
  });

  it('more 500s than retries: the error surfaces', async () => {
    si.fail({ kind: 'list', mode: { status: 500 }, times: 2 });
    await expect(bucket({ maxRetries: 1, maxRetryDelayMs: 1_000 }).list('retry/')).rejects.toMatchObject({ code: 'unavailable', status: 500 });
    expect(si.count('list')).toBe(2);
  });

  it('hanging requests time out (list, metadata, download, delete) with a timeout error', async () => {
    const o = si.putObject(B, NAME, '{"v":1}');
    const b = bucket({ timeoutMs: 800 });
    const ops: [string, () => Promise<unknown>][] = [
      ['list', () => b.list('registrations/')],
      ['metadata', () => b.stat(NAME)],
      ['download', () => b.download(NAME, o.generation, { md5Hash: o.md5Hash, crc32c: o.crc32c })],
      ['delete', () => b.deleteGeneration(NAME, o.generation)],
    ];
    for (const [kind, op] of ops) {
      si.fail({ kind: kind as 'list', mode: 'hang' });
      const t0 = Date.now();
      const err = await caught(op());
      expect(err, kind).toBeInstanceOf(StorageError);
      expect((err as StorageError).code, kind).toBe('timeout');
      // Names where the call went: a GCS_API_ENDPOINT set wrongly shows there.
      expect((err as StorageError).message, kind).toContain(`endpoint ${new URL(si.url).host})`);
      expect(Date.now() - t0, kind).toBeLessThan(5_000);
      noPersonalData(err);
    }
    expect(si.getObject(B, NAME)?.generation).toBe(o.generation); // the hung delete did not count
  });

  it('with the client retrying, calls that keep hanging end by the total limit (they used to wait forever)', async () => {
    const o = si.putObject(B, NAME, '{"v":1}');
    // Each request times out after 400 ms; the first retry is due after 2-3 s, by when the total limit of 2 s is used up.
    const b = bucket({ timeoutMs: 400, maxRetries: 3, totalTimeoutMs: 2_000 });
    const ops: [string, () => Promise<unknown>][] = [
      ['list', () => b.list('registrations/')],
      ['metadata', () => b.stat(NAME)],
      ['delete', () => b.deleteGeneration(NAME, o.generation)],
    ];
    for (const [kind, op] of ops) {
      si.fail({ kind: kind as 'list', mode: 'hang', times: 10 });
      const t0 = Date.now();
      const err = await caught(Promise.race([op(), new Promise((resolve) => setTimeout(() => resolve('still waiting'), 8_000))]));
      expect(err, kind).toBeInstanceOf(StorageError);
      expect((err as StorageError).code, kind).toBe('timeout');
      expect((err as StorageError).message, kind).toContain(`endpoint ${new URL(si.url).host})`);
      expect(Date.now() - t0, kind).toBeLessThan(8_000);
      noPersonalData(err);
      si.clearFaults();
    }
    expect(si.getObject(B, NAME)?.generation).toBe(o.generation);
  }, 30_000);

  it("the client itself answers when the total limit runs out as a retry is due (patches/retry-request: it never answered; the driver's deadline is only the safety net)", async () => {
    // Each request times out after 400 ms; the retry is due when the total limit (2 s) is used
    // up. retry-request 7.0.2 then dropped the call without an answer; patched, it answers with
    // the last request's timeout at ~2.4 s, before the driver's own deadline (3.4 s).
    const b = bucket({ timeoutMs: 400, maxRetries: 3, totalTimeoutMs: 2_000 });
    for (const [kind, op] of [['list', () => b.list('registrations/')], ['metadata', () => b.stat(NAME)]] as const) {
      si.fail({ kind, mode: 'hang', times: 10 });
      const err = await caught(op());
      expect(err, kind).toBeInstanceOf(StorageError);
      expect((err as StorageError).code, kind).toBe('timeout');
      expect((err as StorageError).message, kind).not.toContain('retries included');
      expect(si.count(kind), kind).toBe(2);
      si.clearFaults();
      si.resetRequests();
    }
  }, 30_000);

  it('a download whose body stops arriving times out (the idle limit), never short data', async () => {
    const o = si.putObject(B, NAME, JSON.stringify({ v: 'y'.repeat(4000) }));
    const b = bucket({ timeoutMs: 800 });
    si.fail({ kind: 'download', mode: 'stall' });
    const t0 = Date.now();
    const err = await caught(b.download(NAME, o.generation, { md5Hash: o.md5Hash, crc32c: o.crc32c }));
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).code).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(5_000);
    noPersonalData(err);
  });

  it('an endpoint that refuses the connection is a network error naming the endpoint and the code', async () => {
    const port = await closedPort();
    const err = await caught(bucket({ apiEndpoint: `http://127.0.0.1:${port}` }).list('registrations/'));
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).code).toBe('network');
    expect((err as StorageError).message).toBe(`gcs list failed (bucket ${B}, endpoint 127.0.0.1:${port}): ECONNREFUSED`);
  });

  it('hanging uploads time out: multipart, resumable session start and the resumable PUT', async () => {
    const b = bucket({ timeoutMs: 800, resumableThreshold: 1024 });
    for (const kind of ['upload', 'resumable-start', 'resumable-put'] as const) {
      si.fail({ kind, mode: 'hang' });
      const t0 = Date.now();
      const err = await caught(b.upload('uploads/x.bin', kind === 'upload' ? '{}' : randomBytes(4096)));
      expect(err, kind).toBeInstanceOf(StorageError);
      expect((err as StorageError).code, kind).toBe('timeout');
      expect(Date.now() - t0, kind).toBeLessThan(5_000);
    }
    expect(si.getObject(B, 'uploads/x.bin')).toBeUndefined();
  });

  it('errors carry no object names (they contain patient names)', async () => {
    const o = si.putObject(B, NAME, '{}');
    si.fail({ kind: 'download', mode: { status: 500 } });
    const err = await caught(bucket().download(NAME, o.generation, { md5Hash: o.md5Hash, crc32c: o.crc32c }));
    expect(err).toBeInstanceOf(StorageError);
    noPersonalData(err);
  });

  it('permission and credential errors (403, 401) name the call, bucket, generation and permission, never the object', async () => {
    const o = si.putObject(B, NAME, '{}');
    const b = bucket();
    const cases: [kind: 'list' | 'download' | 'delete' | 'metadata', status: number, op: () => Promise<unknown>, want: RegExp][] = [
      ['list', 403, () => b.list('registrations/'), new RegExp(`^gcs list failed \\(bucket ${B}\\): HTTP 403(?: forbidden)?, permission denied: the credentials need storage\\.objects\\.list$`)],
      ['download', 403, () => b.download(NAME, o.generation, { md5Hash: o.md5Hash }), new RegExp(`^gcs download failed \\(bucket ${B}, generation ${o.generation}\\): HTTP 403(?: forbidden)?, permission denied: the credentials need storage\\.objects\\.get$`)],
      ['delete', 403, () => b.deleteGeneration(NAME, o.generation), new RegExp(`^gcs delete failed \\(bucket ${B}, generation ${o.generation}\\): HTTP 403(?: forbidden)?, permission denied: the credentials need storage\\.objects\\.delete$`)],
      ['metadata', 403, () => b.stat(NAME), new RegExp(`^gcs stat failed \\(bucket ${B}\\): HTTP 403(?: forbidden)?, permission denied: the credentials need storage\\.objects\\.get$`)],
      ['delete', 401, () => b.deleteGeneration(NAME, o.generation), new RegExp(`^gcs delete failed \\(bucket ${B}, generation ${o.generation}\\): HTTP 401(?: required)?, not authenticated: credentials missing, expired or revoked$`)],
    ];
    for (const [kind, status, op, want] of cases) {
      si.fail({ kind, mode: { status } });
      const err = await caught(op());
      expect(err, kind).toBeInstanceOf(StorageError);
      expect((err as StorageError).code, kind).toBe(`http_${status}`);
      expect(err.message, kind).toMatch(want);
      noPersonalData(err);
    }
    expect(si.getObject(B, NAME)?.generation).toBe(o.generation);
  });

  it('missing or unusable credentials say so, not "network"', async () => {
    // The client with credentials, as against Google: with none found it sends the request
    // without them and, on the 401, hands on google-auth-library's error instead.
    const dir = await mkdtemp(path.join(tmpdir(), 'gcs-credentials-'));
    const saved = { ...process.env };
    try {
      delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      process.env.HOME = dir; // no gcloud well-known file
      process.env.METADATA_SERVER_DETECTION = 'none'; // not on Google Cloud: no metadata server
      const authed = () => bucket({ authWithEndpoint: true });

      si.fail({ kind: 'list', mode: { status: 401 } });
      let err = await caught(authed().list('registrations/'));
      expect(err).toBeInstanceOf(StorageError);
      expect((err as StorageError).code).toBe('no_credentials');
      expect(err.message).toBe(
        `gcs list failed (bucket ${B}): no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run with a service account attached`,
      );

      process.env.GOOGLE_APPLICATION_CREDENTIALS = path.join(dir, 'missing.json');
      err = await caught(authed().list('registrations/'));
      expect((err as StorageError).code).toBe('bad_credentials');
      expect(err.message).toBe(`gcs list failed (bucket ${B}): the credentials file named by GOOGLE_APPLICATION_CREDENTIALS does not exist or is not a file`);

      const notAKey = path.join(dir, 'key.json');
      await writeFile(notAKey, JSON.stringify({ type: 'service_account' }));
      process.env.GOOGLE_APPLICATION_CREDENTIALS = notAKey;
      const o = si.putObject(B, NAME, '{}');
      err = await caught(authed().deleteGeneration(NAME, o.generation));
      expect((err as StorageError).code).toBe('bad_credentials');
      expect(err.message).toMatch(new RegExp(`^gcs delete failed \\(bucket ${B}, generation ${o.generation}\\): the credentials file named by GOOGLE_APPLICATION_CREDENTIALS is not a usable key`));
      noPersonalData(err);
      expect(si.getObject(B, NAME)?.generation).toBe(o.generation);
    } finally {
      process.env = saved;
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stat: 404 is null, other failures throw', async () => {
    expect(await bucket().stat('registrations/none.json')).toBeNull();
    si.fail({ kind: 'metadata', mode: { status: 500 } });
    await expect(bucket().stat('registrations/none.json')).rejects.toBeInstanceOf(StorageError);
  });
});
