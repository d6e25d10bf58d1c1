/**
 * Drill helper: clicks the one-click unsubscribe link (POST /unsubscribe/<token>, RFC 8058) of
 * the given patient ids against a running fleet, as mail clients do.
 *
 *   UNSUBSCRIBE_SECRET=... npx tsx scripts/drill/unsubscribe-many.ts --base http://127.0.0.1:3192 --ids 15001-15300
 */
import { parseArgs } from 'node:util';
import { signUnsubscribeToken } from '../../libs/weekly/unsubscribe-token.js';

const { values } = parseArgs({ options: { base: { type: 'string', default: 'http://127.0.0.1:3000' }, ids: { type: 'string' }, step: { type: 'string', default: '1' } } });
const secret = process.env.UNSUBSCRIBE_SECRET;
if (!secret || !values.ids) throw new Error('UNSUBSCRIBE_SECRET and --ids from-to are required');
const [from, to] = values.ids.split('-').map(Number) as [number, number];
const statuses: Record<number, number> = {};
for (let id = from; id <= to; id += Number(values.step)) {
  const res = await fetch(`${values.base}/unsubscribe/${signUnsubscribeToken(secret, id)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'List-Unsubscribe=One-Click',
  });
  statuses[res.status] = (statuses[res.status] ?? 0) + 1;
}
process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), statuses })}\n`);
