/**
 * Storage driver figures: listing, download (checksum verified) and generation delete
 * through the real @google-cloud/storage client against the GCS stand-in, and the same
 * through the local folder driver.
 *
 *   npx tsx scripts/bench/storage.ts [--objects 2000] [--concurrency 8]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GcsBucket, LocalBucket, listAll, type BucketPort, type StoredObject } from '../../libs/storage/index.js';
import { startGcsStandIn } from '../../libs/testing/gcs-stand-in.js';

const { values } = parseArgs({
  options: { objects: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '8' } },
});
const N = Number(values.objects);
const C = Number(values.concurrency);
const BUCKET = 'curavani-production-data-transfer';
const body = (i: number) =>
  JSON.stringify({
    patient_data: { anrede: 'Frau', vorname: 'Jürgen', nachname: `Müller${i}`, symptome: ['Schlafstörungen'] },
    registration_token: i.toString(16).padStart(32, '0'),
  }).padEnd(2048, ' ');

async function pool<T>(items: T[], fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

async function timed(label: string, count: number, fn: () => Promise<void>): Promise<void> {
  const t0 = performance.now();
  await fn();
  const s = (performance.now() - t0) / 1000;
  console.log(`  ${label.padEnd(34)} ${count.toString().padStart(6)} in ${s.toFixed(2).padStart(6)} s = ${(count / s).toFixed(0).padStart(6)} /s`);
}

async function run(label: string, bucket: BucketPort) {
  console.log(`${label}: ${N} objects of 2 KiB, concurrency ${C}`);
  const names = Array.from({ length: N }, (_, i) => `registrations/Müller${i}_Jürgen_2025-07-05_${i.toString(16)}.json`);
  await timed('upload', N, () => pool(names, async (n) => void (await bucket.upload(n, body(names.indexOf(n))))));
  const listed: StoredObject[] = [];
  await timed('list (pages of 1000)', N, async () => {
    for await (const o of listAll(bucket, 'registrations/', 1000)) listed.push(o);
  });
  if (listed.length !== N) throw new Error(`listed ${listed.length}, expected ${N}`);
  await timed('download (generation, verified)', N, () =>
    pool(listed, async (o) => void (await bucket.download(o.name, o.generation, { md5Hash: o.md5Hash, crc32c: o.crc32c }))),
  );
  await timed('deleteGeneration', N, () =>
    pool(listed, async (o) => {
      if ((await bucket.deleteGeneration(o.name, o.generation)) !== 'deleted') throw new Error('not deleted');
    }),
  );
}

const standIn = await startGcsStandIn({ recordRequests: false });
const dir = mkdtempSync(join(tmpdir(), 'bench-local-bucket-'));
try {
  await run('gcs driver -> stand-in', new GcsBucket({ bucket: BUCKET, apiEndpoint: standIn.url, projectId: 'bench', maxRetries: 0 }));
  await run('local driver', new LocalBucket({ dir, bucket: BUCKET, settleMs: 0 }));
  console.log(`peak RSS ${(process.memoryUsage().rss / 1024 / 1024).toFixed(0)} MiB`);
} finally {
  await standIn.close();
  rmSync(dir, { recursive: true, force: true });
}
