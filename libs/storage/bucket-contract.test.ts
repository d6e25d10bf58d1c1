import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGcsStandIn, type GcsStandIn } from '../testing/gcs-stand-in.js';
import {
  ChecksumMismatchError,
  GcsBucket,
  LocalBucket,
  ObjectNotFoundError,
  PreconditionFailedError,
  crc32cBase64,
  listAll,
  md5Base64,
  type BucketPort,
} from './index.js';

/**
 * One contract, two drivers: the GCS driver (the real @google-cloud/storage client against
 * the stand-in) and the local folder driver must behave the same for everything the
 * patient import relies on.
 */
interface Harness {
  bucket: BucketPort;
  /** Puts an object in without going through the port (a site upload / a staff `cp`). */
  seed(name: string, data: string | Buffer): void;
}

const BUCKET = 'curavani-test-bucket';
let standIn: GcsStandIn;
let localDir: string;

beforeAll(async () => {
  standIn = await startGcsStandIn();
  localDir = mkdtempSync(join(tmpdir(), 'fleet-local-bucket-'));
});

afterAll(async () => {
  await standIn?.close();
  if (localDir) rmSync(localDir, { recursive: true, force: true });
});

const drivers: [string, () => Harness][] = [
  [
    'gcs (real client, stand-in)',
    () => ({
      bucket: new GcsBucket({ bucket: BUCKET, apiEndpoint: standIn.url, projectId: 'test', maxRetries: 0, timeoutMs: 5_000 }),
      seed: (name, data) => void standIn.putObject(BUCKET, name, data),
    }),
  ],
  [
    'local folder',
    () => ({
      bucket: new LocalBucket({ dir: localDir, bucket: BUCKET, settleMs: 0 }),
      seed: (name, data) => {
        const p = join(localDir, ...name.split('/'));
        mkdirSync(dirname(p), { recursive: true });
        writeFileSync(p, data);
      },
    }),
  ],
];

let seq = 0;
const uniquePrefix = () => `c${++seq}-${Date.now().toString(36)}/`;

describe.each(drivers)('BucketPort contract: %s', (_label, make) => {
  let h: Harness;
  beforeAll(() => {
    h = make();
  });

  it('uploads, stats, downloads and deletes one exact generation', async () => {
    const name = `${uniquePrefix()}Mustermann_Max_2025-07-05_0b1ab67b.json`;
    const body = '{"registration_token":"0b1ab67b"}';
    const up = await h.bucket.upload(name, body);
    expect(up).toMatchObject({ bucket: BUCKET, name, size: Buffer.byteLength(body) });
    expect(up.generation).toMatch(/^\d{10,}$/);
    expect(up.md5Hash).toBe(md5Base64(Buffer.from(body)));
    expect(up.crc32c).toBe(crc32cBase64(Buffer.from(body)));
    expect(Number.isNaN(Date.parse(up.updated))).toBe(false);

    expect(await h.bucket.stat(name)).toEqual(up);
    expect((await h.bucket.download(name, up.generation)).toString('utf8')).toBe(body);
    expect((await h.bucket.download(name, up.generation, { md5Hash: up.md5Hash, crc32c: up.crc32c })).toString()).toBe(body);

    expect(await h.bucket.deleteGeneration(name, up.generation)).toBe('deleted');
    expect(await h.bucket.stat(name)).toBeNull();
    expect(await h.bucket.deleteGeneration(name, up.generation)).toBe('not_found');
    await expect(h.bucket.download(name, up.generation)).rejects.toBeInstanceOf(ObjectNotFoundError);
  });

  it('gives a re-upload a new, larger generation and never deletes it with the old one', async () => {
    const name = `${uniquePrefix()}a.json`;
    const first = await h.bucket.upload(name, '{"v":1}');
    const second = await h.bucket.upload(name, '{"v":2}');
    expect(BigInt(second.generation) > BigInt(first.generation)).toBe(true);

    expect(await h.bucket.deleteGeneration(name, first.generation)).toBe('precondition_failed');
    expect((await h.bucket.stat(name))?.generation).toBe(second.generation);
    await expect(h.bucket.download(name, first.generation)).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect((await h.bucket.download(name, second.generation)).toString()).toBe('{"v":2}');

    // Even the same bytes uploaded again are a new generation (as in GCS).
    const third = await h.bucket.upload(name, '{"v":2}');
    expect(BigInt(third.generation) > BigInt(second.generation)).toBe(true);
    expect(await h.bucket.deleteGeneration(name, second.generation)).toBe('precondition_failed');
    expect(await h.bucket.deleteGeneration(name, third.generation)).toBe('deleted');
  });

  it('reports missing objects as null / not_found / ObjectNotFoundError', async () => {
    const name = `${uniquePrefix()}missing.json`;
    expect(await h.bucket.stat(name)).toBeNull();
    expect(await h.bucket.deleteGeneration(name, '1700000000000000')).toBe('not_found');
    await expect(h.bucket.download(name, '1700000000000000')).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(await h.bucket.list(`${uniquePrefix()}`)).toEqual({ items: [] });
  });

  it('keeps names with umlauts, spaces, percent signs and URL characters exact', async () => {
    const prefix = uniquePrefix();
    const names = [
      'Müller_Jürgen_2025-07-05_aa11.json',
      'M%C3%BCller_J%C3%BCrgen_2025-07-05_aa11.json', // a different object: literally percent-encoded
      'von der Höhe_Anna-Lena_2025-07-05_bb22.json',
      'Weiß_Zoë 100%_2025-07-05_cc33.json',
      'O+Brien_#1?&x=y_2025-07-05_dd44.json',
      'Müller_NFD_2025-07-05_ee55.json'.normalize('NFD'),
      'sub folder/Ørsted_Åse_2025-07-05_ff66.json',
    ].map((n) => prefix + n);
    const uploaded = new Map<string, string>();
    for (const [i, n] of names.entries()) uploaded.set(n, (await h.bucket.upload(n, `{"i":${i}}`)).generation);

    const listed = [];
    for await (const o of listAll(h.bucket, prefix, 2)) listed.push(o);
    expect(listed.map((o) => o.name).sort()).toEqual([...names].sort());
    for (const o of listed) {
      expect(o.generation).toBe(uploaded.get(o.name));
      const i = names.indexOf(o.name);
      expect((await h.bucket.download(o.name, o.generation)).toString()).toBe(`{"i":${i}}`);
      expect((await h.bucket.stat(o.name))?.name).toBe(o.name);
    }
    // The NFC twin of the NFD name is not the same object.
    expect(await h.bucket.stat(prefix + 'Müller_NFD_2025-07-05_ee55.json'.normalize('NFC'))).toBeNull();
    for (const o of listed) expect(await h.bucket.deleteGeneration(o.name, o.generation)).toBe('deleted');
    expect((await h.bucket.list(prefix)).items).toEqual([]);
  });

  it('pages through 2,500 objects in name order without gaps or repeats', async () => {
    const prefix = uniquePrefix();
    const names: string[] = [];
    for (let i = 0; i < 2500; i++) {
      const n = `${prefix}Nachname${String(i).padStart(4, '0')}_Vorname_2025-07-05_${i.toString(16)}.json`;
      names.push(n);
      h.seed(n, `{"n":${i}}`);
    }
    h.seed(`${prefix.slice(0, -1)}-other/outside.json`, '{}'); // not under the prefix

    const pages: number[] = [];
    const seen: string[] = [];
    let pageToken: string | undefined;
    do {
      const page = await h.bucket.list(prefix, { pageToken, pageSize: 1000 });
      pages.push(page.items.length);
      seen.push(...page.items.map((o) => o.name));
      for (const o of page.items) expect(o.generation).toMatch(/^\d+$/);
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(pages).toEqual([1000, 1000, 500]);
    expect(seen).toEqual([...names].sort());
    expect(new Set(seen).size).toBe(2500);

    // Generations are stable between listings (the poller relies on it).
    const again = await h.bucket.list(prefix, { pageSize: 5 });
    const first = await h.bucket.stat(again.items[0]!.name);
    expect(first?.generation).toBe(again.items[0]!.generation);
    expect(again.items).toHaveLength(5);
    expect(again.nextPageToken).toBeTruthy();
  });

  it('filters by a prefix that ends inside a name', async () => {
    const prefix = uniquePrefix();
    for (const n of ['abc.json', 'abd.json', 'b.json', 'ab/c.json']) h.seed(prefix + n, '{}');
    const got = (await h.bucket.list(prefix + 'ab')).items.map((o) => o.name.slice(prefix.length));
    expect(got.sort()).toEqual(['ab/c.json', 'abc.json', 'abd.json']);
  });

  it('honours ifGenerationMatch on upload', async () => {
    const name = `${uniquePrefix()}p.json`;
    const a = await h.bucket.upload(name, '1', { ifGenerationMatch: '0' });
    await expect(h.bucket.upload(name, '2', { ifGenerationMatch: '0' })).rejects.toBeInstanceOf(PreconditionFailedError);
    const b = await h.bucket.upload(name, '3', { ifGenerationMatch: a.generation });
    await expect(h.bucket.upload(name, '4', { ifGenerationMatch: a.generation })).rejects.toBeInstanceOf(PreconditionFailedError);
    expect((await h.bucket.download(name, b.generation)).toString()).toBe('3');
  });

  it('rejects bytes that do not match the checksums the caller expects', async () => {
    const name = `${uniquePrefix()}x.json`;
    const o = await h.bucket.upload(name, '{"x":1}');
    const other = Buffer.from('{"x":2}');
    await expect(h.bucket.download(name, o.generation, { md5Hash: md5Base64(other) })).rejects.toBeInstanceOf(ChecksumMismatchError);
    await expect(h.bucket.download(name, o.generation, { crc32c: crc32cBase64(other) })).rejects.toBeInstanceOf(ChecksumMismatchError);
  });

  it('builds a uri for staff without changing the name', () => {
    const u = h.bucket.uri('registrations/Müller Max.json');
    expect(u.endsWith('registrations/Müller Max.json')).toBe(true);
    if (h.bucket.driver === 'gcs') expect(u).toBe(`gs://${BUCKET}/registrations/Müller Max.json`);
  });
});
