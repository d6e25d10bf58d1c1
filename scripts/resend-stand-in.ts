/**
 * Runs the Resend stand-in on its own, e.g. for benchmarks or a local fleet with
 * MAIL_DRIVER=resend RESEND_BASE_URL=http://127.0.0.1:4010 RESEND_API_KEY=re_test and an
 * UNSUBSCRIBE_SECRET of 32 characters or more (required with MAIL_DRIVER=resend):
 *
 *   npx tsx scripts/resend-stand-in.ts --port 4010 --rate 2
 *
 * GET /_stand-in/stats prints requests, statuses, messages and duplicates.
 * Lines on stdin inject faults, to rehearse an outage and its alerts by hand:
 *   fail <status> [count]     the next <count> (1) requests answer <status> (500, 503, 429 with retry-after: 1, …)
 *   hang [count]              the next <count> requests get no answer (the fleet's MAIL_REQUEST_TIMEOUT_MS ends them)
 *   lose-answer [count]       the next <count> requests are processed (sent), then the connection is dropped
 *   refuse 401|key|domain     every request is refused until `ok`: 401 missing_api_key, 403
 *                             invalid_api_key, 403 unverified sending domain (FleetEmailProviderRefused)
 *   ok                        lifts a refusal and drops faults not yet used
 *   stats                     prints the requests per status so far
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { refusals, startResendStandIn, type Refusal } from '../libs/testing/resend-stand-in.js';

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

const countOf = (raw: string | undefined): number => {
  const n = raw === undefined ? 1 : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`expected a count of 1 or more (got ${raw})`);
  return n;
};
const refusalsByName: Record<string, Refusal> = {
  '401': { status: 401, name: 'missing_api_key', message: 'Missing API key in the authorization header.' },
  key: refusals.invalidApiKey,
  domain: refusals.unverifiedDomain,
};
const commands: Record<string, (args: string[]) => string> = {
  fail: ([status, count]) => {
    const s = Number(status);
    if (!Number.isInteger(s) || s < 400 || s > 599) throw new Error(`expected an HTTP status 400-599 (got ${status})`);
    standIn.inject({ kind: 'status', status: s, ...(s === 429 ? { retryAfterSeconds: 1 } : {}) }, countOf(count));
    return `the next ${countOf(count)} request(s) answer ${s}`;
  },
  hang: ([count]) => (standIn.inject({ kind: 'hang' }, countOf(count)), `the next ${countOf(count)} request(s) get no answer`),
  'lose-answer': ([count]) => (standIn.inject({ kind: 'lose-answer' }, countOf(count)), `the next ${countOf(count)} request(s) lose their answer`),
  refuse: ([what]) => {
    const refusal = refusalsByName[what ?? ''];
    if (!refusal) throw new Error(`expected 401, key or domain (got ${what ?? 'nothing'})`);
    standIn.refuse(refusal);
    return `every request is refused (${refusal.status} ${refusal.name}) until ok`;
  },
  ok: () => (standIn.refuse(null), standIn.clearFaults(), 'answering normally'),
  stats: () => JSON.stringify(standIn.stats()),
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const [name, ...rest] = line.trim().split(/\s+/);
  if (!name) return;
  const command = commands[name];
  if (!command) return void process.stderr.write(`unknown command ${name}: ${Object.keys(commands).join(', ')}\n`);
  try {
    process.stdout.write(`${line.trim()}: ${command(rest)}\n`);
  } catch (err) {
    process.stderr.write(`${line.trim()}: ${(err as Error).message}\n`);
  }
});
