import { GcsBucket } from './gcs.js';
import { LocalBucket } from './local.js';
import type { BucketPort } from './port.js';

export * from './port.js';
export { GcsBucket, gcsEndpointHost, type GcsBucketOptions } from './gcs.js';
export { LocalBucket, checkObjectName, type LocalBucketOptions } from './local.js';
export { md5Base64, crc32cBase64 } from './checksums.js';

/** The `storage` slice of the fleet config (libs/config: STORAGE_*, LOCAL_BUCKET_*, GCS_*). */
export interface StorageConfig {
  driver: 'local' | 'gcs';
  /** Bucket name (both drivers report it; the local driver uses it for StoredObject.bucket). */
  bucket: string;
  /** Where registrations are listed, e.g. `registrations/`. */
  prefix: string;
  local: { dir: string; settleMs: number };
  gcs: {
    apiEndpoint?: string;
    projectId?: string;
    timeoutMs: number;
    maxRetries: number;
    maxRetryDelayMs?: number;
    totalTimeoutMs?: number;
  };
}

/** The bucket driver chosen by STORAGE_DRIVER. Opens no connection until first used. */
export function createBucket(config: StorageConfig): BucketPort {
  if (config.driver === 'gcs') {
    return new GcsBucket({ bucket: config.bucket, ...config.gcs });
  }
  return new LocalBucket({ dir: config.local.dir, bucket: config.bucket, settleMs: config.local.settleMs });
}
