import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GcsBucket, LocalBucket } from '../../libs/storage/index.js';
import { startGcsStandIn, type GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { bucketReadiness } from './bucket-poller.js';

/** The `bucket` check of GET /ready (role bucket-poller), through the real client against the stand-in. */
let si: GcsStandIn;
beforeAll(async () => {
  si = await startGcsStandIn({ buckets: ['right-bucket'] });
  si.putObject('right-bucket', 'registrations/M%C3%BCller_J%C3%B6rg_20250705_0b1ab67b.json', '{}');
});
afterAll(async () => {
  await si.close();
});

const gcs = (bucket: string, apiEndpoint = si.url) => new GcsBucket({ bucket, apiEndpoint, projectId: 'test', maxRetries: 0, timeoutMs: 500 });

describe('bucket readiness', () => {
  it('a bucket that can be listed is ready; the answer is kept for cacheMs', async () => {
    const check = bucketReadiness(gcs('right-bucket'), 'registrations/', 60_000);
    const before = si.count('list');
    expect(await check()).toEqual({ ok: true, detail: 'bucket right-bucket can be listed' });
    expect(await check()).toMatchObject({ ok: true });
    expect(si.count('list') - before).toBe(1);
  });

  it('the local driver names its folder, not the GCS bucket name it keeps for its records', async () => {
    // "bucket curavani-production-data-transfer can be listed" on a development machine read as
    // production GCS being listed.
    const dir = await mkdtemp(path.join(tmpdir(), 'bucket-readiness-'));
    try {
      const r = await bucketReadiness(new LocalBucket({ dir, bucket: 'curavani-production-data-transfer' }), 'registrations/')();
      expect(r).toEqual({ ok: true, detail: `local bucket folder ${dir} (STORAGE_DRIVER=local) can be listed` });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a wrong GCS_BUCKET says there is no such bucket', async () => {
    const r = await bucketReadiness(gcs('wrong-bucket'), 'registrations/')();
    expect(r.ok).toBe(false);
    expect(r.detail).toBe('gcs list failed (bucket wrong-bucket): HTTP 404 notFound: no such bucket (check GCS_BUCKET, and GCS_API_ENDPOINT when set)');
  });

  it('missing permission names it, never an object', async () => {
    si.fail({ kind: 'list', mode: { status: 403 } });
    const r = await bucketReadiness(gcs('right-bucket'), 'registrations/')();
    expect(r).toMatchObject({ ok: false });
    expect(r.detail).toContain('storage.objects.list');
    expect(r.detail).not.toMatch(/M%C3%BCller|Müller|registrations\//);
  });

  it('an endpoint that does not answer names the endpoint', async () => {
    const r = await bucketReadiness(gcs('right-bucket', 'http://127.0.0.1:1'), 'registrations/')();
    expect(r.ok).toBe(false);
    expect(r.detail).toContain('endpoint 127.0.0.1:1');
  });
});
