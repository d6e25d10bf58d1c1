import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config/index.js';
import { startGcsStandIn, type GcsStandIn } from '../testing/gcs-stand-in.js';
import { GcsBucket, LocalBucket, StorageError, createBucket, listAll, type BucketPort } from './index.js';

let si: GcsStandIn;
let dir: string;
beforeAll(async () => {
  si = await startGcsStandIn();
  dir = mkdtempSync(join(tmpdir(), 'fleet-create-bucket-'));
});
afterAll(async () => {
  await si?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('createBucket(config.storage)', () => {
  it('defaults to the local folder var/bucket, bucket curavani-production-data-transfer, prefix registrations/', () => {
    const cfg = loadConfig({});
    expect(cfg.storage).toMatchObject({
      driver: 'local',
      bucket: 'curavani-production-data-transfer',
      prefix: 'registrations/',
      local: { dir: 'var/bucket', settleMs: 1000 },
      gcs: { timeoutMs: 30_000, maxRetries: 3 },
    });
    const b = createBucket(cfg.storage);
    expect(b).toBeInstanceOf(LocalBucket);
    expect((b as LocalBucket).root).toBe(join(process.cwd(), 'var/bucket'));
  });

  it('STORAGE_DRIVER=gcs with GCS_API_ENDPOINT talks to that endpoint without credentials', async () => {
    const cfg = loadConfig({ STORAGE_DRIVER: 'gcs', GCS_API_ENDPOINT: si.url, GCS_BUCKET: 'my-bucket', GCS_PROJECT_ID: 'p1', GCS_MAX_RETRIES: '0' });
    const b = createBucket(cfg.storage);
    expect(b).toBeInstanceOf(GcsBucket);
    const o = await b.upload(`${cfg.storage.prefix}a.json`, '{}');
    expect(o.bucket).toBe('my-bucket');
    expect((await b.list(cfg.storage.prefix)).items.map((i) => i.name)).toEqual(['registrations/a.json']);
    expect(si.getObject('my-bucket', 'registrations/a.json')).toBeDefined();
  });

  it('the local driver works from config too', async () => {
    const cfg = loadConfig({ LOCAL_BUCKET_DIR: dir, LOCAL_BUCKET_SETTLE_MS: '0' });
    const b = createBucket(cfg.storage);
    await b.upload('registrations/x.json', '{}');
    expect((await b.list('registrations/')).items).toHaveLength(1);
  });

  it('bad values name the variable', () => {
    expect(() => loadConfig({ STORAGE_DRIVER: 's3' })).toThrow(ConfigError);
    expect(() => loadConfig({ STORAGE_DRIVER: 's3' })).toThrow(/STORAGE_DRIVER/);
    expect(() => loadConfig({ GCS_API_ENDPOINT: 'not a url' })).toThrow(/GCS_API_ENDPOINT/);
    expect(() => loadConfig({ GCS_BUCKET: 'Upper_Case!' })).toThrow(/GCS_BUCKET/);
    expect(() => loadConfig({ GCS_TIMEOUT_MS: '0' })).toThrow(/GCS_TIMEOUT_MS/);
  });
});

describe('listAll', () => {
  it('stops with an error when a listing repeats a page token (never loops forever)', async () => {
    const obj = { bucket: 'b', name: 'registrations/a.json', generation: '1', size: 1, updated: '' };
    const looping = { list: async () => ({ items: [obj], nextPageToken: 'same' }) } as unknown as BucketPort;
    const names: string[] = [];
    await expect(
      (async () => {
        for await (const o of listAll(looping, 'registrations/')) names.push(o.name);
      })(),
    ).rejects.toBeInstanceOf(StorageError);
    expect(names).toHaveLength(2);
  });
});
