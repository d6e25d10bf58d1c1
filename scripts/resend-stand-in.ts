/**
 * Runs the Resend stand-in on its own, e.g. for benchmarks or a local fleet with
 * MAIL_DRIVER=resend RESEND_BASE_URL=http://127.0.0.1:4010 RESEND_API_KEY=re_test and an
 * UNSUBSCRIBE_SECRET of 32 characters or more (required with MAIL_DRIVER=resend):
 *
 *   npx tsx scripts/resend-stand-in.ts --port 4010 --rate 2
 *
 * GET /_stand-in/stats prints requests, statuses, messages and duplicates.
 */
import { parseArgs } from 'node:util';
import { startResendStandIn } from '../libs/testing/resend-stand-in.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '4010' },
    host: { type: 'string', default: '127.0.0.1' },
    rate: { type: 'string' },
    'keep-bodies': { type: 'boolean', default: false },
  },
});
const port = Number(values.port);
const rate = values.rate === undefined ? undefined : Number(values.rate);
if (!Number.isInteger(port) || port < 0) throw new Error(`--port: expected a port number (got ${values.port})`);
if (rate !== undefined && !(rate > 0)) throw new Error(`--rate: expected requests per second > 0 (got ${values.rate})`);

const standIn = await startResendStandIn({ port, host: values.host, keepBodies: values['keep-bodies'], ...(rate ? { ratePerSecond: rate } : {}) });
process.stdout.write(`${JSON.stringify({ url: standIn.url, ratePerSecond: rate ?? null })}\n`);
const stop = () => void standIn.stop().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
