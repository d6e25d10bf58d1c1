/**
 * Runs the GCS stand-in as a process, for manual runs and benchmarks:
 *
 *   npx tsx scripts/gcs-stand-in.ts [--port 4443] [--host 127.0.0.1] [--log] [--bucket name ...]
 *
 * With `--bucket` only the named buckets exist (others answer 404, as GCS does for a wrong
 * `GCS_BUCKET`); without it any bucket name exists.
 *
 * Then point the fleet at it: STORAGE_DRIVER=gcs GCS_BUCKET=curavani-production-data-transfer GCS_API_ENDPOINT=http://127.0.0.1:4443
 * Objects live in memory only; upload with the real client or `gcloud`-style JSON API calls,
 * e.g. curl -X POST --data-binary @file.json -H 'content-type: application/json' \
 *   'http://127.0.0.1:4443/upload/storage/v1/b/curavani-production-data-transfer/o?uploadType=media&name=registrations%2Fa.json'
 */
import { parseArgs } from 'node:util';
import { startGcsStandIn } from '../libs/testing/gcs-stand-in.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '4443' },
    host: { type: 'string', default: '127.0.0.1' },
    log: { type: 'boolean', default: false },
    bucket: { type: 'string', multiple: true },
  },
});

const standIn = await startGcsStandIn({
  host: values.host,
  port: Number(values.port),
  recordRequests: false,
  buckets: values.bucket,
  onRequest: values.log ? (r) => console.log(`${r.method} ${r.path} ${new URLSearchParams(r.query).toString()} -> ${r.kind}`) : undefined,
});
console.log(`GCS stand-in listening on ${standIn.url} (apiEndpoint); Ctrl-C stops it`);

const stop = () => {
  void standIn.close().then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
