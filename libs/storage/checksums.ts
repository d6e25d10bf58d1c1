import { createHash } from 'node:crypto';
import { CRC32C } from '@google-cloud/storage';

/** Base64 MD5, as GCS reports `md5Hash`. */
export function md5Base64(data: Buffer): string {
  return createHash('md5').update(data).digest('base64');
}

/** Base64 of the big-endian CRC32C, as GCS reports `crc32c` (the client library's implementation). */
export function crc32cBase64(data: Buffer): string {
  const c = new CRC32C();
  c.update(data);
  return c.toString();
}
