import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isPermanent } from '../errors/index.js';
import { LocalBucket, ObjectNotFoundError, listAll, type StoredObject } from './index.js';

let root: string;
let dir: string;
const B = 'curavani-production-data-transfer';

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'fleet-local-'));
  dir = join(root, 'bucket');
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const bucket = (o: { settleMs?: number; now?: () => number } = {}) => new LocalBucket({ dir, bucket: B, settleMs: 0, ...o });

function drop(rel: string, content: string) {
  const p = join(dir, ...rel.split('/'));
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, content);
  return p;
}

async function all(b: LocalBucket, prefix = 'registrations/'): Promise<StoredObject[]> {
  const out: StoredObject[] = [];
  for await (const o of listAll(b, prefix)) out.push(o);
  return out;
}

describe('local bucket: files dropped in by hand', () => {
  it('a file copied in without metadata gets a generation, stable across listings and processes', async () => {
    drop('registrations/Müller_Max_2025-07-05_0b1ab67b.json', '{"a":1}');
    const [a] = await all(bucket());
    expect(a).toMatchObject({ bucket: B, name: 'registrations/Müller_Max_2025-07-05_0b1ab67b.json', size: 7 });
    expect(a!.generation).toMatch(/^\d{16}$/);
    // another instance (another process) sees the same generation
    const [b] = await all(bucket());
    expect(b!.generation).toBe(a!.generation);
    // and two instances discovering a fresh file at once agree
    drop('registrations/Schmidt_Eva_2025-07-05_1.json', '{"b":1}');
    const [x, y] = await Promise.all([all(bucket()), all(bucket())]);
    expect(x.map((o) => o.generation)).toEqual(y.map((o) => o.generation));
  });

  it('a file overwritten by hand is a new generation; the old one can no longer be deleted', async () => {
    const p = 'registrations/Müller_Max_2025-07-05_0b1ab67b.json';
    drop(p, '{"v":1}');
    const [first] = await all(bucket());
    await new Promise((r) => setTimeout(r, 5));
    drop(p, '{"v":2, "more": true}');
    const [second] = await all(bucket());
    expect(BigInt(second!.generation) > BigInt(first!.generation)).toBe(true);
    expect(await bucket().deleteGeneration(p, first!.generation)).toBe('precondition_failed');
    await expect(bucket().download(p, first!.generation)).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(existsSync(join(dir, p))).toBe(true);
    expect(await bucket().deleteGeneration(p, second!.generation)).toBe('deleted');
    expect(existsSync(join(dir, p))).toBe(false);
  });

  it('same bytes copied again (or touched) keep their generation', async () => {
    const p = 'registrations/a.json';
    drop(p, '{"v":1}');
    const [first] = await all(bucket());
    drop(p, '{"v":1}');
    utimesSync(join(dir, p), new Date(), new Date(Date.now() + 1000));
    const [again] = await all(bucket());
    expect(again!.generation).toBe(first!.generation);
  });

  it('content changed with the same size between listing and download is caught', async () => {
    const p = 'registrations/a.json';
    drop(p, '{"v":1}');
    const [first] = await all(bucket());
    drop(p, '{"v":2}'); // same size
    await expect(bucket().download(p, first!.generation)).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(await bucket().deleteGeneration(p, first!.generation)).toBe('precondition_failed');
  });

  it('a deleted and re-dropped file gets a larger generation than before', async () => {
    const p = 'registrations/a.json';
    const b = bucket();
    const up = await b.upload(p, '{"v":1}');
    expect(await b.deleteGeneration(p, up.generation)).toBe('deleted');
    drop(p, '{"v":1}');
    const [back] = await all(b);
    expect(BigInt(back!.generation) > BigInt(up.generation)).toBe(true);
  });

  it('leaves files out of listings until they have settled (a copy in progress)', async () => {
    let now = Date.now();
    const b = bucket({ settleMs: 2_000, now: () => now });
    drop('registrations/half-written.json', '{"pati');
    expect(await all(b)).toEqual([]);
    // ... and says how many it left out, so `fleet poll` right after a copy is not taken for an empty bucket.
    expect(await b.list('registrations/')).toEqual({ items: [], unsettled: 1 });
    now += 2_500;
    expect((await all(b)).map((o) => o.name)).toEqual(['registrations/half-written.json']);
    expect((await b.list('registrations/')).unsettled).toBeUndefined();
  });

  it('a copy that keeps an old mtime (cp -p) is still left out until its ctime settles', async () => {
    let now = Date.now();
    const b = bucket({ settleMs: 2_000, now: () => now });
    const p = drop('registrations/copied-with-p.json', '{"a":');
    utimesSync(p, new Date('2025-01-01'), new Date('2025-01-01'));
    expect(await all(b)).toEqual([]);
    now += 2_500;
    expect(await all(b)).toHaveLength(1);
  });

  it('three deletes of the same generation at once: one deletes, the others find nothing', async () => {
    for (let i = 0; i < 20; i++) {
      const up = await bucket().upload('registrations/a.json', `{"i":${i}}`);
      const outcomes = await Promise.all([1, 2, 3].map(() => bucket().deleteGeneration(up.name, up.generation)));
      expect(outcomes.sort()).toEqual(['deleted', 'not_found', 'not_found']);
      expect(await bucket().stat(up.name)).toBeNull();
    }
  });

  it('removes temporary files a killed process left (over an hour old), keeps newer ones and the trash', async () => {
    const tmp = join(dir, '.bucket', 'tmp');
    const trash = join(dir, '.bucket', 'trash');
    mkdirSync(tmp, { recursive: true });
    mkdirSync(trash, { recursive: true });
    const old = join(tmp, '5c5c7596140d51a2.meta');
    writeFileSync(old, JSON.stringify({ name: 'registrations/Muster_Max_20250705_0b1ab67b.json' }));
    const twoHoursAgo = (Date.now() - 2 * 3600_000) / 1000;
    utimesSync(old, twoHoursAgo, twoHoursAgo);
    const fresh = join(tmp, 'a1b2c3d4e5f60718');
    writeFileSync(fresh, 'being written');
    const trashed = join(trash, '0011223344556677');
    writeFileSync(trashed, '{}');
    utimesSync(trashed, twoHoursAgo, twoHoursAgo);
    drop('registrations/a.json', '{}');
    expect(await all(bucket())).toHaveLength(1);
    expect(existsSync(old)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(existsSync(trashed)).toBe(true);
  });

  it('removes tombstones (the sidecar of a deleted object, with its name) once an hour old, at a listing; keeps live sidecars', async () => {
    let now = Date.now();
    const b = bucket({ now: () => now });
    const meta = join(dir, '.bucket', 'meta');
    const gone = await b.upload('registrations/Muster_Max_20250705_0b1ab67b.json', '{"v":1}');
    const kept = await b.upload('registrations/Beispiel_Jonas_20250707_5f3a1c88.json', '{"v":2}');
    expect(await b.deleteGeneration(gone.name, gone.generation)).toBe('deleted');
    expect(readdirSync(meta)).toHaveLength(2);
    now += 30 * 60_000;
    expect(await all(b)).toHaveLength(1);
    expect(readdirSync(meta)).toHaveLength(2); // not an hour old yet
    now += 31 * 60_000;
    expect((await all(b)).map((o) => o.name)).toEqual([kept.name]);
    expect(readdirSync(meta)).toHaveLength(1);
    expect(readdirSync(join(dir, '.bucket', 'tmp'))).toEqual([]);
    expect((await b.stat(kept.name))?.generation).toBe(kept.generation);
    // Dropped again under the name: a larger generation all the same (its ctime is later).
    drop(gone.name, '{"v":1}');
    const back = (await all(b)).find((o) => o.name === gone.name);
    expect(BigInt(back!.generation) > BigInt(gone.generation)).toBe(true);
  });

  it('ignores hidden files, editor leftovers, symlinks and its own metadata folder', async () => {
    drop('registrations/ok.json', '{}');
    drop('registrations/.ok.json.swp', 'x');
    drop('.hidden/x.json', '{}');
    const outside = join(root, 'secret.json');
    writeFileSync(outside, '{"secret":true}');
    symlinkSync(outside, join(dir, 'registrations', 'link.json'));
    await bucket().upload('registrations/up.json', '{}');
    expect((await all(bucket(), '')).map((o) => o.name)).toEqual(['registrations/ok.json', 'registrations/up.json']);
    expect(await bucket().stat('registrations/link.json')).toBeNull();
    await expect(bucket().download('registrations/link.json', '1')).rejects.toBeInstanceOf(ObjectNotFoundError);
  });
});

describe('local bucket: names can never leave the folder', () => {
  const bad = [
    '../escape.json',
    'registrations/../../escape.json',
    '/etc/passwd',
    'registrations//double.json',
    'registrations/',
    '.bucket/meta/x.json',
    'registrations/.hidden.json',
    'registrations/./a.json',
    'a\0b.json',
    'a\nb.json',
    '',
    'x'.repeat(1025),
  ];
  for (const name of bad) {
    it(`rejects ${JSON.stringify(name.length > 30 ? name.slice(0, 20) + '...' : name)}`, async () => {
      const b = bucket();
      for (const op of [() => b.upload(name, 'x'), () => b.stat(name), () => b.download(name, '1'), () => b.deleteGeneration(name, '1')]) {
        const err = await op().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isPermanent(err)).toBe(true);
        expect((err as { code: string }).code).toBe('invalid_object_name');
        if (name.length > 0) expect((err as Error).message).not.toContain(name);
      }
      expect(readdirSync(root).filter((n) => n !== 'bucket')).toEqual([]); // nothing written outside
    });
  }

  it('keeps percent signs literally (no decoding into a path)', async () => {
    const b = bucket();
    const o = await b.upload('registrations/%2e%2e%2F%2e%2e%2Fescape.json', '{}');
    expect(existsSync(join(dir, 'registrations', '%2e%2e%2F%2e%2e%2Fescape.json'))).toBe(true);
    expect((await b.list('registrations/')).items.map((i) => i.name)).toEqual([o.name]);
    expect(readdirSync(root)).toEqual(['bucket']);
  });

  it('uri points at the file', () => {
    expect(bucket().uri('registrations/a b.json')).toBe(`file://${dir}/registrations/a b.json`);
  });
});
