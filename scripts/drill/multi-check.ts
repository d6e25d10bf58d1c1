/**
 * The checks after a round of the multi-process drill (scripts/drill/multi-process.sh): reads
 * the fleet's database, Redis, outbox folder, bucket folder, logs and /metrics and prints one
 * JSON report; exit 1 when something is wrong (listed under `problems`).
 *
 *   DATABASE_URL=... REDIS_URL=... QUEUE_PREFIX=... npx tsx scripts/drill/multi-check.ts \
 *     --outbox /tmp/d/outbox --bucket /tmp/d/bucket --logs /tmp/d/logs --ports 3101,3102,3103 \
 *     --registrations 500 --invalid 25
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import postgres from 'postgres';

const { values } = parseArgs({
  options: {
    outbox: { type: 'string' },
    bucket: { type: 'string' },
    logs: { type: 'string' },
    ports: { type: 'string', default: '' },
    registrations: { type: 'string' },
    invalid: { type: 'string' },
  },
});
const problems: string[] = [];
const report: Record<string, unknown> = {};
const sql = postgres(process.env.DATABASE_URL!, { max: 2, onnotice: () => {} });
const redis = new Redis(process.env.REDIS_URL!);
const prefix = `{${process.env.QUEUE_PREFIX ?? 'fleet'}}`;
const num = (x: unknown) => Number(x);

// Patient import.
const ledger = await sql`select status, count(*)::int n from fleet.patient_import_ledger group by status order by status`;
report.ledger = Object.fromEntries(ledger.map((r) => [r.status, r.n]));
const dupObjects = await sql`select count(*)::int n from (select object_name from fleet.patient_import_ledger where status <> 'replaced' group by object_name having count(*) > 1) x`;
if (dupObjects[0]!.n) problems.push(`${dupObjects[0]!.n} object names with more than one ledger row`);
const patients = await sql`select count(*)::int n, count(distinct zahlungsreferenz)::int refs, count(distinct email)::int emails from patient_service.patienten`;
report.patients = patients[0];
if (patients[0]!.n !== patients[0]!.refs || patients[0]!.n !== patients[0]!.emails) problems.push('patients: a payment reference or email twice');
const deletedRows = await sql`select count(*)::int n,
  count(*) filter (where patient_id is null)::int no_patient,
  count(*) filter (where deleted_at is null or imported_at is null or deleted_at < imported_at)::int deleted_before_import,
  count(*) filter (where staff_delivery_id is null)::int no_staff_email
  from fleet.patient_import_ledger where status = 'deleted'`;
report.deletedRows = deletedRows[0];
for (const k of ['no_patient', 'deleted_before_import', 'no_staff_email'] as const) if (deletedRows[0]![k]) problems.push(`deleted ledger rows: ${k} ${deletedRows[0]![k]}`);
const patientLedger = await sql`select count(*)::int n from patient_service.patienten p
  where (select count(*) from fleet.patient_import_ledger l where l.patient_id = p.id) <> 1`;
if (patientLedger[0]!.n) problems.push(`${patientLedger[0]!.n} patients without exactly one ledger row`);
const failed = await sql`select id, reason, error_code, failure_delivery_id, object_name from fleet.patient_import_ledger where status = 'failed'`;
const badReasons = failed.filter((r) => !/patient_data\.plz/.test(String(r.reason)) || !r.failure_delivery_id);
if (badReasons.length) problems.push(`${badReasons.length} failed rows without a reason naming patient_data.plz or without their staff email`);
if (values.registrations) {
  const expectValid = num(values.registrations) - num(values.invalid ?? 0);
  if (deletedRows[0]!.n !== expectValid) problems.push(`deleted ledger rows ${deletedRows[0]!.n}, expected ${expectValid}`);
  if (patients[0]!.n !== expectValid) problems.push(`patients ${patients[0]!.n}, expected ${expectValid}`);
  if (failed.length !== num(values.invalid ?? 0)) problems.push(`failed rows ${failed.length}, expected ${values.invalid}`);
}
const notFinal = await sql`select status, count(*)::int n from fleet.patient_import_ledger where status not in ('deleted','failed','replaced','duplicate_deleted') group by status`;
if (notFinal.length) problems.push(`unfinished ledger rows: ${JSON.stringify(notFinal)}`);

// Bucket: only the failed files are left.
if (values.bucket) {
  const left = (await readdir(path.join(values.bucket, 'registrations')).catch(() => [] as string[])).filter((f) => !f.startsWith('.'));
  report.bucketLeft = left.length;
  const failedNames = new Set(failed.map((r) => path.basename(String(r.object_name))));
  const unexpected = left.filter((f) => !failedNames.has(f));
  if (unexpected.length) problems.push(`${unexpected.length} files left in the bucket that are not failed imports`);
  if (left.length !== failed.length) problems.push(`bucket holds ${left.length} files, ${failed.length} failed rows`);
}

// Emails.
const deliveries = await sql`select split_part(idempotency_key, '.', 1) || '.' || split_part(idempotency_key, '.', 2) k, status, count(*)::int n
  from fleet.deliveries group by 1, 2 order by 1, 2`;
report.deliveries = deliveries.map((r) => `${r.k} ${r.status} ${r.n}`);
const notSent = deliveries.filter((r) => r.status !== 'sent');
if (notSent.length) problems.push(`deliveries not sent: ${JSON.stringify(notSent)}`);
const staffPerPatient = await sql`select count(*)::int n from (select patient_id from fleet.deliveries where idempotency_key like 'patient-import.staff.%' group by patient_id having count(*) > 1) x`;
if (staffPerPatient[0]!.n) problems.push(`${staffPerPatient[0]!.n} patients with more than one staff email`);
if (values.outbox) {
  const files = (await readdir(values.outbox)).filter((f) => f.endsWith('.eml'));
  const sentCount = deliveries.filter((r) => r.status === 'sent').reduce((a, r) => a + r.n, 0);
  report.outboxFiles = files.length;
  if (files.length !== sentCount) problems.push(`outbox folder holds ${files.length} emails, ${sentCount} deliveries sent`);
  const tmp = (await readdir(values.outbox)).filter((f) => f.endsWith('.tmp'));
  if (tmp.length) problems.push(`${tmp.length} temporary files left in the outbox folder`);
}

// Therapist import.
const tfiles = await sql`select status, count(*)::int n from fleet.therapist_import_files group by status order by status`;
report.therapistFiles = Object.fromEntries(tfiles.map((r) => [r.status, r.n]));
const openFiles = tfiles.filter((r) => ['queued', 'importing', 'discovered'].includes(r.status));
if (openFiles.length) problems.push(`therapist files not finished: ${JSON.stringify(openFiles)}`);
const hashTwice = await sql`select count(*)::int n from (select content_hash from fleet.therapist_import_files where status not in ('skipped') group by content_hash having count(*) > 1) x`;
if (hashTwice[0]!.n) problems.push(`${hashTwice[0]!.n} contents imported more than once`);
const runs = await sql`select r.id, r.state, r.counts, r.summary_delivery_id,
  (select count(*)::int from fleet.deliveries d where d.idempotency_key = 'therapist-import.run.' || r.id or d.idempotency_key like 'therapist-import.run.' || r.id || '.closed.%') summaries,
  (select coalesce(jsonb_agg(f.counts), '[]'::jsonb) from fleet.therapist_import_files f where f.run_id = r.id) file_counts
  from fleet.therapist_import_runs r order by r.id`;
report.runs = runs.length;
for (const r of runs) {
  if (r.state !== 'closed') problems.push(`run ${r.id} is ${r.state}`);
  else if (r.summaries !== 1 || !r.summary_delivery_id) problems.push(`run ${r.id} has ${r.summaries} summary emails`);
  const sum: Record<string, number> = {};
  for (const c of (r.file_counts as Array<Record<string, unknown> | null>)) for (const [k, v] of Object.entries(c ?? {})) if (typeof v === 'number') sum[k] = (sum[k] ?? 0) + v;
  const c = (r.counts ?? {}) as Record<string, number>;
  const parts = ['created', 'updated', 'unchanged', 'deactivated', 'skipped', 'failed'].reduce((a, k) => a + (c[k] ?? 0), 0);
  if (r.counts && c.total !== parts) problems.push(`run ${r.id}: total ${c.total}, its parts add up to ${parts}`);
  for (const [k, v] of Object.entries(c)) {
    if (typeof v === 'number' && k in sum && sum[k] !== v) problems.push(`run ${r.id}: ${k} ${v} but its files add up to ${sum[k]}`);
  }
}
const therapists = await sql`select count(*)::int n from therapist_service.therapeuten`.catch(() => [{ n: -1 }]);
report.therapists = therapists[0]!.n;

// Outbox events: once per aggregate and change.
const events = await sql`select event_type, count(*)::int n from fleet.outbox group by 1 order by 1`;
report.events = Object.fromEntries(events.map((r) => [r.event_type, r.n]));
const eventTwice = await sql`select event_type, count(*)::int n from (
  select event_type, key, coalesce(payload->>'fileId', '') f, coalesce(payload->>'changedFields', '') c from fleet.outbox
  group by 1, 2, 3, 4 having count(*) > 1) x group by 1`;
if (eventTwice.length) problems.push(`events twice: ${JSON.stringify(eventTwice)}`);
const createdTwice = await sql`select event_type, count(*)::int n from (select event_type, key from fleet.outbox where event_type in ('patient.created','therapist.created') group by 1, 2 having count(*) > 1) x group by 1`;
if (createdTwice.length) problems.push(`created twice: ${JSON.stringify(createdTwice)}`);

// Queues.
const queues: Record<string, Record<string, number>> = {};
for (const q of ['patient-import', 'therapist-import', 'email', 'bucket-poll', 'patient-import-dlq', 'therapist-import-dlq', 'email-dlq']) {
  const base = `${prefix}:${q}`;
  const [active, wait, delayed, stalled] = await Promise.all([redis.llen(`${base}:active`), redis.llen(`${base}:wait`), redis.zcard(`${base}:delayed`), redis.scard(`${base}:stalled`)]);
  queues[q] = { active, wait, delayed, stalled };
  if (!q.endsWith('-dlq') && q !== 'bucket-poll' && (active || wait || stalled)) problems.push(`queue ${q}: ${active} active, ${wait} waiting, ${stalled} marked stalled`);
}
report.queues = queues;
const dlqKeys = await redis.keys(`${prefix}:*-dlq:*`);
report.dlqKeys = dlqKeys.length;

// Personal data: job data in Redis, logs, /metrics.
const PII = /Vor[A-Z][a-z]{3}|Nach[A-Z][a-z]{3}|drill\.[0-9a-f]{8}|praxis\d+-\d+@|@example\.org/;
let jobsScanned = 0;
let jobsWithPii = 0;
for (const key of await redis.keys(`${prefix}:*`)) {
  if ((await redis.type(key)) !== 'hash') continue;
  const h = await redis.hgetall(key);
  jobsScanned++;
  if (PII.test(JSON.stringify(h))) jobsWithPii++;
}
report.redisHashesScanned = jobsScanned;
if (jobsWithPii) problems.push(`${jobsWithPii} Redis hashes hold personal data`);
if (values.logs) {
  let lines = 0;
  let errors = 0;
  let piiLines = 0;
  for (const f of await readdir(values.logs)) {
    for (const line of (await readFile(path.join(values.logs, f), 'utf8')).split('\n')) {
      if (!line) continue;
      lines++;
      if (PII.test(line)) piiLines++;
      if (/"level":(50|60)/.test(line)) errors++;
    }
  }
  report.logLines = lines;
  report.logErrorLines = errors;
  if (piiLines) problems.push(`${piiLines} log lines hold personal data`);
}
for (const port of (values.ports ?? '').split(',').filter(Boolean)) {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => '');
  if (PII.test(text)) problems.push(`/metrics on ${port} holds personal data`);
}

report.problems = problems;
console.log(JSON.stringify(report, null, 1));
await sql.end();
redis.disconnect();
process.exit(problems.length ? 1 : 0);
