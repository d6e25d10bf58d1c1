import { userInfo } from 'node:os';
import type { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../libs/db/repositories/audit.js';
import { getDelivery, queueDelivery } from '../../libs/db/repositories/deliveries.js';
import { PermanentError } from '../../libs/errors/index.js';
import { getLedgerRow, insertLedgerObjects, updateLedgerRow } from '../../libs/db/repositories/patient-import.js';
import { addDeadLetter, bindQueueWorker, closeWorkers, discardDeadLetter, listDeadLetters } from '../../libs/queues/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { createTestQueues } from '../../libs/testing/queues.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let t: ReturnType<typeof createTestQueues>;
let worker: Worker;
let runs = 0;
let failing = true;

/** Runs the CLI as operator ops-anna; `env` adds variables or (undefined) removes them. */
function fleetWith(env: Record<string, string | undefined>, ...args: string[]) {
  return runCli(args, { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: t.prefix, FLEET_OPERATOR: 'ops-anna', LOG_LEVEL: 'warn', ...env });
}

const fleet = (...args: string[]) => fleetWith({}, ...args);

async function waitFor(fn: () => Promise<boolean>, timeoutMs = 15_000) {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  t = createTestQueues();
  worker = bindQueueWorker(
    'patient-import',
    {
      'patient-import': async () => {
        runs++;
        if (failing) throw new PermanentError('validation_failed', 'patient_data.symptome: expected 1 to 6 entries, got 7');
      },
    },
    { connection: t.workerConnection(), prefix: t.prefix, log: t.log, metrics: t.metrics, queues: t.queues, concurrency: 1 },
  );
});
afterAll(async () => {
  await closeWorkers([worker], 5_000);
  await t.close();
  await db.drop();
});

describe('fleet dlq (the real CLI)', () => {
  it('lists a dead letter with its reason, requeues it (job runs again) and audits who and why', async () => {
    const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 41 });
    await waitFor(async () => (await listDeadLetters(t.queues)).length === 1);
    expect(runs).toBe(1);

    const listed = await fleet('dlq', 'list');
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(jobId);
    expect(listed.stdout).toContain('code validation_failed');
    expect(listed.stdout).toContain('reason: patient_data.symptome: expected 1 to 6 entries, got 7');
    const listedJson = JSON.parse((await fleet('dlq', 'list', '--json', '--queue', 'patient-import')).stdout);
    expect(listedJson.source).toEqual({ queuePrefix: t.prefix, redis: '127.0.0.1:6379/0', fleetSeen: true });
    const json = listedJson.deadLetters;
    expect(json).toHaveLength(1);
    expect(json[0]).toMatchObject({ id: jobId, originalQueue: 'patient-import', code: 'validation_failed', data: { ledgerId: 41 } });

    const status = await fleet('status');
    // workers (the test's own, if still connected), waiting, active, delayed, completed, failed, dead
    expect(status.stdout).toMatch(/patient-import\s+\d+\s+0\s+0\s+0\s+0\s+1\s+1/);
    expect(status.stdout).toContain('1 dead letter(s) wait for an operator');
    // No relay or watcher runs here: status says so.
    expect(status.stdout).toContain('scraper watcher: none watching');
    expect(status.stdout).toContain('outbox relay: none publishing');
    // No process with a scheduling role has run against this prefix: every schedule is missing, and status says which role registers it.
    expect(status.stdout).toContain('\nschedules:\n  bucket-poll: NOT REGISTERED: nothing produces its jobs; a process with the bucket-poller role registers it (POLL_CRON) at start and within SCHEDULE_CHECK_MS when it is missing: is one running?\n');
    // Nor has any poll gone through: status says so (with the schedule missing, not where a failing poll says why).
    expect(status.stdout).toContain('\n  last successful bucket poll: none recorded (none yet, or none since Redis lost its data)\n');
    expect(status.stdout).not.toContain('paused');

    failing = false;
    // No reason, no action: the dead letter stays and nothing is audited.
    for (const args of [['dlq', 'requeue', jobId], ['dlq', 'requeue', jobId, '--reason', '  '], ['dlq', 'requeue', '--all', '--queue', 'patient-import']]) {
      const refused = await fleet(...args);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('--reason <text> is required');
    }
    expect(await listDeadLetters(t.queues)).toHaveLength(1);
    expect(await listAudit(db.db, 1)).toEqual([]);

    const requeued = await fleet('dlq', 'requeue', jobId, '--reason', 'symptom list fixed by staff');
    expect(requeued.code).toBe(0);
    expect(requeued.stdout).toContain(`requeued ${jobId} on patient-import`);
    await waitFor(async () => (await (await t.queues.queue('patient-import').getJob(jobId))?.getState()) === 'completed');
    expect(runs).toBe(2);
    expect(await listDeadLetters(t.queues)).toEqual([]);

    const [audit] = await listAudit(db.db, 1);
    expect(audit).toMatchObject({ actor: 'ops-anna', action: 'dlq.requeue', target: `patient-import/${jobId}`, reason: 'symptom list fixed by staff' });
  });

  it('discards a dead letter for good, audited; unknown ids and queues give clear errors', async () => {
    failing = true;
    const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 42 });
    await waitFor(async () => (await listDeadLetters(t.queues)).length === 1);
    // Named with the wrong --queue: said where it is, not only "no entry" (and nothing done).
    const wrongQueue = await fleet('dlq', 'discard', jobId, '--queue', 'email', '--reason', 'cleanup');
    expect(wrongQueue.code).toBe(3);
    expect(wrongQueue.stderr).toBe(`fleet: no dead-letter entry with id ${jobId} in queue email: it is a dead letter of patient-import\n`);
    const noReason = await fleet('dlq', 'discard', jobId);
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain('--reason <text> is required');
    expect(await listDeadLetters(t.queues)).toHaveLength(1);

    // An empty --queue ("$QUEUE" unset in a script) names no queue: refused, not read as every queue.
    for (const args of [['dlq', 'requeue', '--all', '--queue', '', '--reason', 'provider outage over'], ['dlq', 'list', '--queue', '']]) {
      const empty = await fleet(...args);
      expect(empty.code, args.join(' ')).toBe(2);
      expect(empty.stderr).toContain('unknown queue ""; queues: email,');
    }
    expect(await listDeadLetters(t.queues)).toHaveLength(1);
    expect((await listAudit(db.db, 10)).filter((a) => a.reason === 'provider outage over')).toEqual([]);

    // No --actor, no $FLEET_OPERATOR, no $USER (as under cron or in a container): the login name.
    const discarded = await fleetWith({ FLEET_OPERATOR: undefined, USER: undefined, SUDO_USER: undefined }, 'dlq', 'discard', jobId, '--reason', 'duplicate upload');
    expect(discarded.code).toBe(0);
    expect(discarded.stdout).toContain(`discarded ${jobId}`);
    expect(await listDeadLetters(t.queues)).toEqual([]);
    const [audit] = await listAudit(db.db, 1);
    expect(audit).toMatchObject({ action: 'dlq.discard', target: `patient-import/${jobId}`, reason: 'duplicate upload', actor: userInfo().username });
    expect(audit!.actor).not.toBe('unknown');

    // Handled already (a colleague, another tab): who did what and when, not just "no entry".
    const again = await fleet('dlq', 'requeue', jobId, '--reason', 'retry');
    expect(again.code).toBe(3);
    expect(again.stderr).toMatch(new RegExp(`${jobId.replaceAll('.', '\\.')} is no longer a dead letter: discarded by ${userInfo().username} at \\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} UTC \\(reason: duplicate upload\\)`));

    const missing = await fleet('dlq', 'discard', 'no-such-id', '--reason', 'cleanup');
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('no dead-letter entry with id no-such-id');
    const badQueue = await fleet('dlq', 'list', '--queue', 'nope');
    expect(badQueue.code).toBe(2);
    expect(badQueue.stderr).toContain('unknown queue nope');
    const neither = await fleet('dlq', 'requeue', '--reason', 'cleanup');
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain('name a dead-letter id or pass --all');
  });

  // A requeue of a file whose content is wrong went ahead silently (its own advice said it cannot
  // help) and added another import.failed event; `--all` requeued those too.
  it('refuses a requeue its advice says cannot help unless --force; --all skips those and says so; a bare record number is pointed at its dead letter', async () => {
    failing = true;
    const failedRow = async (name: string, code: string) => {
      const [id] = await insertLedgerObjects(db.db, [{ bucket: 'b', objectName: `registrations/${name}`, generation: '1', sourceUri: `gs://b/registrations/${name}` }]);
      await updateLedgerRow(db.db, id!, { status: 'failed', errorCode: code, reason: `ledger ${id}: ${code}`, attempts: 2, failedAt: new Date() });
      await addDeadLetter(t.queues, {
        originalQueue: 'patient-import', originalJobId: `patient-import.ledger.${id}`, name: 'patient-import', data: { ledgerId: id },
        reason: `ledger ${id}: ${code}`, code, attemptsMade: 1, enqueuedAt: null, failedAt: new Date().toISOString(),
      });
      return id!;
    };
    const invalid = await failedRow('A_B_20250707_abcdef01.json', 'invalid_json');
    const gaveUp = await failedRow('C_D_20250707_abcdef02.json', 'gave_up');
    const dlqInvalid = `patient-import.ledger.${invalid}`;

    const listed = await fleet('dlq', 'list', '--queue', 'patient-import');
    expect(listed.stdout).toContain('attempts since last queued 1');
    expect(listed.stdout).toContain(`before a requeue (refused without --force; skipped by --all): A requeue does not help (the content is wrong): have a corrected file uploaded, then discard ${dlqInvalid}.`);

    const refused = await fleet('dlq', 'requeue', dlqInvalid, '--reason', 'try again');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toBe(`fleet: ${dlqInvalid}: not requeued: A requeue does not help (the content is wrong): have a corrected file uploaded, then discard ${dlqInvalid}. To requeue it anyway: add --force.\n`);
    expect(await getLedgerRow(db.db, invalid)).toMatchObject({ status: 'failed' });
    expect((await listAudit(db.db, 50)).filter((a) => a.reason === 'try again')).toEqual([]);

    // Staff emails say "Import-Nr. 7": the bare number is not a dead-letter id; the message names the one meant.
    const bare = await fleet('dlq', 'requeue', String(invalid), '--reason', 'try again');
    expect(bare.code).toBe(3);
    expect(bare.stderr).toBe(`fleet: no dead-letter entry with id ${invalid}; a patient import record's dead letter is ${dlqInvalid} (see fleet dlq list)\n`);

    const all = await fleet('dlq', 'requeue', '--all', '--queue', 'patient-import', '--reason', 'storage back');
    expect(all.code).toBe(0);
    expect(all.stdout).toContain(`requeued 1 dead letter(s); skipped 1 whose own advice says a requeue cannot help (e.g. a file whose content is wrong fails the same way again): ${dlqInvalid}; see fleet dlq list (before a requeue), or requeue them anyway with --force\n`);
    expect(await getLedgerRow(db.db, invalid)).toMatchObject({ status: 'failed' });
    expect((await getLedgerRow(db.db, gaveUp))?.status).not.toBe('failed');

    // --json, as events retry-parked has, and in the /ops API's shape.
    const forced = await fleet('dlq', 'requeue', dlqInvalid, '--reason', 'operator insists', '--force', '--json');
    expect(forced.code).toBe(0);
    expect(JSON.parse(forced.stdout)).toEqual({ outcome: 'requeued', id: dlqInvalid, queue: 'patient-import', jobId: dlqInvalid });
    const [audit] = (await listAudit(db.db, 50)).filter((a) => a.reason === 'operator insists');
    expect(audit?.details).toMatchObject({ forced: true, advice: expect.stringContaining('A requeue does not help') });

    // The fake worker fails both again: leave no dead letters to the tests below.
    await waitFor(async () => (await listDeadLetters(t.queues, { queue: 'patient-import' })).length === 2);
    const [first, ...rest] = await listDeadLetters(t.queues, { queue: 'patient-import' });
    const gone = await fleet('dlq', 'discard', first!.id, '--reason', 'test over', '--json');
    expect(JSON.parse(gone.stdout)).toEqual({ outcome: 'discarded', id: first!.id, queue: 'patient-import', jobId: first!.originalJobId });
    for (const d of rest) await discardDeadLetter(t.queues, d.id);
  });
});

describe('fleet dlq requeue of an email (the real CLI)', () => {
  /** A delivery of a two-row batch whose last request got no answer, failed for good `claimedHoursAgo` ago, with its dead letter. */
  async function failedUnanswered(key: string, claimedHoursAgo: number) {
    const { id } = await queueDelivery(db.db, { idempotencyKey: key, kind: 'staff', toAddress: 'staff@example.com', fromAddress: 'noreply@curavani.com', subject: 's', html: '<p>h</p>', text: 't' });
    await db.sql`update fleet.deliveries set status = 'failed', outcome_unknown = true, batch_id = gen_random_uuid(), batch_leader_id = id,
      claimed_at = now() - make_interval(hours => ${claimedHoursAgo}), last_error = 'resend network application_error' where id = ${id}`;
    const jobId = `email-send.delivery.${id}`;
    await addDeadLetter(t.queues, { originalQueue: 'email', originalJobId: jobId, name: 'email-send', data: { deliveryId: id }, reason: 'resend network application_error', code: 'send_failed', attemptsMade: 18, enqueuedAt: null, failedAt: new Date().toISOString() });
    return { id, jobId };
  }

  it('dlq list says before a requeue whether the email may reach its recipient twice', async () => {
    const recent = await failedUnanswered('cli.list.recent', 2);
    const old = await failedUnanswered('cli.list.old', 30);
    const emptied = await failedUnanswered('cli.list.emptied', 30);
    await db.sql`update fleet.deliveries set contents_removed_at = '2026-11-01T03:00:00Z', subject = '', html = '', text = '' where id = ${emptied.id}`;
    const listed = await fleet('dlq', 'list', '--queue', 'email');
    expect(listed.code).toBe(0);
    // One entry's lines: from its id to the next entry's.
    const block = (jobId: string) => listed.stdout.slice(listed.stdout.indexOf(jobId)).split(/\n(?=\S)/)[0]!;
    const until = new Date((await getDelivery(db.db, recent.id))!.claimedAt!.getTime() + 23 * 3600_000).toISOString().replace('T', ' ').slice(0, 19);
    expect(block(recent.jobId)).toContain(
      `  before a requeue: its last provider request got no answer: requeued before ${until} UTC, it goes out again under the same idempotency key, so at most once\n`,
    );
    expect(block(old.jobId)).toContain("  before a requeue: its last provider request got no answer and the provider's 24 h idempotency window is over: a requeue sends it again, and the recipient may already have it");
    expect(block(emptied.jobId)).toContain('  before a requeue: its contents were removed on 2026-11-01 03:00:00 UTC (EMAIL_RETENTION_DAYS): it cannot be sent again; discard it\n');
    const json = (JSON.parse((await fleet('dlq', 'list', '--queue', 'email', '--json')).stdout) as { deadLetters: Array<{ originalJobId: string; requeueAdvice?: string }> }).deadLetters;
    expect(json.find((e) => e.originalJobId === old.jobId)?.requeueAdvice).toMatch(/may already have it/);
    expect(listed.stdout).not.toContain('@example.com');
    // PostgreSQL away: the dead letters (in Redis) are still listed, the advice says it is unknown.
    const down = await fleetWith({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere' }, 'dlq', 'list', '--queue', 'email');
    expect(down.code).toBe(0);
    expect(down.stdout).toContain(recent.jobId);
    expect(down.stdout).toMatch(/ {2}before a requeue: unknown: what a requeue would do could not be read \(database query failed: .*ECONNREFUSED.*\); look again before requeueing\n/);
    expect(down.stdout).not.toContain('Failed query');
    for (const d of [recent, old, emptied]) expect((await fleet('dlq', 'discard', d.jobId, '--queue', 'email', '--reason', 'test over')).code).toBe(0);
  });

  it('says what became of it: resent under its key within the window, a new email that may be a second one after it', async () => {
    const recent = await failedUnanswered('cli.recent', 2);
    const r1 = await fleet('dlq', 'requeue', recent.jobId, '--queue', 'email', '--reason', 'provider outage over');
    expect(r1.code).toBe(0);
    expect(r1.stdout).toContain(`note: delivery ${recent.id}: its last provider request got no answer, so it goes out again with its batch`);
    expect((await getDelivery(db.db, recent.id))).toMatchObject({ status: 'sending', batchLeaderId: recent.id });

    const old = await failedUnanswered('cli.old', 30);
    const r2 = await fleet('dlq', 'requeue', old.jobId, '--queue', 'email', '--reason', 'provider outage over');
    expect(r2.code).toBe(0);
    expect(r2.stdout).toContain(`note: delivery ${old.id}: its last provider request got no answer and the provider's 24 h idempotency window is over`);
    expect(r2.stdout).toContain('the recipient may already have received it');
    expect(r2.stdout).not.toContain('@example.com');
    expect((await getDelivery(db.db, old.id))).toMatchObject({ status: 'pending', batchId: null, outcomeUnknown: false });
  });
});
