import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGcsStandIn, type GcsStandIn } from './gcs-stand-in.js';

/** The stand-in's less used routes, driven by the real client (the storage tests cover the rest). */
let si: GcsStandIn;
let storage: Storage;
const B = 'stand-in-bucket';

beforeAll(async () => {
  si = await startGcsStandIn({ buckets: [B] });
  storage = new Storage({ apiEndpoint: si.url, projectId: 'test', retryOptions: { autoRetry: false } });
});
afterAll(async () => {
  await si?.close();
});

describe('GCS stand-in', () => {
  it('lists with a delimiter (prefixes) and pages by name', async () => {
    for (const n of ['d/a.json', 'd/b.json', 'd/sub/c.json', 'd/sub/d.json', 'd/z.json']) si.putObject(B, n, '{}');
    const [files, , resp] = await storage.bucket(B).getFiles({ prefix: 'd/', delimiter: '/', autoPaginate: false });
    expect(files.map((f) => f.name)).toEqual(['d/a.json', 'd/b.json', 'd/z.json']);
    expect((resp as { prefixes: string[] }).prefixes).toEqual(['d/sub/']);
    const names: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    do {
      const res = await storage.bucket(B).getFiles({ prefix: 'd/', maxResults: 2, autoPaginate: false, pageToken });
      names.push(...res[0].map((f) => f.name));
      pages++;
      pageToken = (res[1] as { pageToken?: string } | null | undefined)?.pageToken;
    } while (pageToken);
    expect(names).toEqual(['d/a.json', 'd/b.json', 'd/sub/c.json', 'd/sub/d.json', 'd/z.json']);
    expect(pages).toBe(3);
  });

  it('an unknown bucket is a 404 when buckets are declared', async () => {
    await expect(storage.bucket('no-such-bucket').getFiles({ autoPaginate: false })).rejects.toMatchObject({ code: 404 });
  });

  it('metadata patch bumps the metageneration; move renames', async () => {
    const file = storage.bucket(B).file('m/a.json');
    await file.save('{"a":1}', { resumable: false, metadata: { metadata: { source: 'site' } } });
    const [md] = await file.setMetadata({ metadata: { checked: 'yes' } });
    expect(md.metageneration).toBe('2');
    expect(md.metadata).toMatchObject({ source: 'site', checked: 'yes' });
    await file.move('m/b.json');
    expect(si.getObject(B, 'm/a.json')).toBeUndefined();
    expect(si.getObject(B, 'm/b.json')?.data.toString()).toBe('{"a":1}');
  });

  it('rejects a multipart upload whose stated md5 does not match the bytes', async () => {
    const file = storage.bucket(B).file('m/bad.json');
    await expect(file.save('{"a":1}', { resumable: false, metadata: { md5Hash: 'AAAAAAAAAAAAAAAAAAAAAA==' } })).rejects.toMatchObject({
      code: 400,
    });
    expect(si.getObject(B, 'm/bad.json')).toBeUndefined();
  });

  it('ifGenerationMatch=0 on upload: create only', async () => {
    const file = storage.bucket(B).file('m/once.json');
    await file.save('1', { resumable: false, preconditionOpts: { ifGenerationMatch: 0 } });
    await expect(file.save('2', { resumable: false, preconditionOpts: { ifGenerationMatch: 0 } })).rejects.toMatchObject({ code: 412 });
    expect(si.getObject(B, 'm/once.json')?.data.toString()).toBe('1');
  });

  it('faults are scoped by kind, object and count', async () => {
    si.putObject(B, 'f/a.json', 'a');
    si.putObject(B, 'f/b.json', 'b');
    si.fail({ kind: 'download', mode: { status: 503 }, object: 'f/b.json', times: 2 });
    const [a] = await storage.bucket(B).file('f/a.json').download();
    expect(a.toString()).toBe('a');
    await expect(storage.bucket(B).file('f/b.json').download()).rejects.toMatchObject({ code: 503 });
    await expect(storage.bucket(B).file('f/b.json').download()).rejects.toMatchObject({ code: 503 });
    const [b] = await storage.bucket(B).file('f/b.json').download();
    expect(b.toString()).toBe('b');
    expect(si.pendingFaults()).toBe(0);
  });

  it('a hang with hangMs answers 503 afterwards', async () => {
    si.fail({ kind: 'metadata', mode: 'hang', hangMs: 200 });
    const t0 = Date.now();
    await expect(storage.bucket(B).file('f/a.json').getMetadata()).rejects.toMatchObject({ code: 503 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });

  it("'slow' answers normally after delayMs", async () => {
    si.putObject(B, 's/slow.json', 'slow');
    si.fail({ kind: 'download', mode: 'slow', delayMs: 300, object: 's/slow.json' });
    const t0 = Date.now();
    const [bytes] = await storage.bucket(B).file('s/slow.json').download();
    expect(bytes.toString()).toBe('slow');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it("'stall' sends half the body, then the rest after delayMs", async () => {
    const body = 'x'.repeat(4000);
    si.putObject(B, 's/stall.json', body);
    si.fail({ kind: 'download', mode: 'stall', delayMs: 300 });
    const t0 = Date.now();
    const [bytes] = await storage.bucket(B).file('s/stall.json').download();
    expect(bytes.toString()).toBe(body);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it("'lost-answer' carries the request out and drops the connection", async () => {
    si.putObject(B, 's/lost.json', 'lost');
    si.fail({ kind: 'delete', mode: 'lost-answer' });
    await expect(storage.bucket(B).file('s/lost.json').delete()).rejects.toThrow();
    expect(si.getObject(B, 's/lost.json')).toBeUndefined();
  });

  it('generations are increasing decimal strings above 2^50, like GCS microsecond generations', () => {
    const a = si.putObject(B, 'g/a.json', '1');
    const b = si.putObject(B, 'g/a.json', '2');
    expect(BigInt(a.generation)).toBeGreaterThan(2n ** 50n);
    expect(BigInt(b.generation)).toBeGreaterThan(BigInt(a.generation));
  });
});
