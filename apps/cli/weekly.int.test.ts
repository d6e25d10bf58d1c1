import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { isoWeekOf } from '../../libs/weekly/iso-week.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;

beforeAll(async () => {
  db = await createTestDatabase();
  q = testQueuePrefix();
});

afterAll(async () => {
  await db?.drop();
  await q?.cleanup();
});

describe('fleet weekly schedule --register', () => {
  it('registers the job scheduler from a fresh CLI process', { timeout: 60_000 }, async () => {
    // The scheduler's lock was the command's first Redis call, sent while the connection (no
    // offline queue) was still connecting: "Stream isn't writeable and enableOfflineQueue options is false".
    const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
    const r = await runCli(['weekly', 'schedule', '--register'], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('registered: created');
    expect(r.stdout).toContain('job scheduler weekly-status-emails: 0 9 * * 1 Europe/Berlin');
    const again = await runCli(['weekly', 'schedule', '--register'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('registered: unchanged');
  });

  it('says when this week\'s fan-out exists already instead of claiming to queue it again', { timeout: 60_000 }, async () => {
    // A cron whose time has always passed in the current ISO week (Monday 00:00): the week is due.
    // Every fleet process with the weekly role queues the week's fan-out at start, so an
    // operator's --register afterwards finds it there (keyed by week: adding it does nothing).
    const prefix = testQueuePrefix();
    try {
      const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix.prefix, LOG_LEVEL: 'silent', WEEKLY_CRON: '0 0 * * 1' };
      const first = await runCli(['weekly', 'schedule', '--register'], env);
      expect(first.code).toBe(0);
      const week = /catch-up fan-out queued for (\d{4}-W\d{2})/.exec(first.stdout)?.[1];
      expect(week, first.stdout).toBeDefined();
      const again = await runCli(['weekly', 'schedule', '--register'], env);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain(`registered: unchanged, this week's fan-out (${week}) exists already (waiting): nothing queued again`);
      expect(again.stdout).not.toContain('catch-up fan-out queued');
    } finally {
      await prefix.cleanup();
    }
  });
});

describe('fleet weekly schedule', () => {
  // `due now: 2026-W50` alone read as "this week's emails have not gone out", also after the
  // fan-out had run; and it was the one read command without --json ("unknown option").
  it("names the due week's fan-out state, and --json prints the same as JSON", { timeout: 60_000 }, async () => {
    const prefix = testQueuePrefix();
    try {
      // A cron whose time has always passed in the current ISO week (Monday 00:00): the week is due.
      const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix.prefix, LOG_LEVEL: 'silent', WEEKLY_CRON: '0 0 * * 1' };
      const before = await runCli(['weekly', 'schedule'], env);
      expect(before.code).toBe(0);
      expect(before.stdout).toMatch(/^due now: \d{4}-W\d{2} \(its fan-out: not in the queue: not run yet, or removed after its retention\)$/m);
      expect(before.stdout).toContain('job scheduler weekly-status-emails: not registered');

      const registered = await runCli(['weekly', 'schedule', '--register', '--json'], env);
      expect(registered.stderr).toBe('');
      expect(registered.code).toBe(0);
      const json = JSON.parse(registered.stdout) as {
        cron: string;
        dueWeek: string;
        dueWeekFanout: { jobId: string; state: string | null };
        next: Array<{ at: string; isoWeek: string }>;
        registered: { action: string; catchUp: string };
        scheduler: { pattern: string; timeZone: string; next: string } | null;
      };
      expect(json).toMatchObject({
        cron: '0 0 * * 1',
        dueWeekFanout: { jobId: `weekly-fanout.week.${json.dueWeek}`, state: 'waiting' },
        registered: { action: 'created', catchUp: `catch-up fan-out queued for ${json.dueWeek}` },
        scheduler: { pattern: '0 0 * * 1', timeZone: 'Europe/Berlin' },
      });
      expect(json.next).toHaveLength(3);

      const after = await runCli(['weekly', 'schedule'], env);
      expect(after.stdout).toContain(`due now: ${json.dueWeek} (its fan-out: waiting)`);
    } finally {
      await prefix.cleanup();
    }
  });
});

describe('fleet weekly run', () => {
  it('refuses a past week with exit code 2 and queues nothing', { timeout: 60_000 }, async () => {
    const prefix = testQueuePrefix();
    try {
      // The CLI's default log level (warn): the refusal is said once, without the worker's JSON log line before it.
      const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix.prefix, LOG_LEVEL: 'warn' };
      const r = await runCli(['weekly', 'run', '--week', '2020-W10'], env);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe('fleet: week 2020-W10 is not the current week (past weeks are never sent): nothing queued; use --dry-run to count\n');
    } finally {
      await prefix.cleanup();
    }
  });
});

/** Searching patients with an active search, and this week's delivery of each in the given status (none for null). */
async function patientsWithThisWeek(target: TestDatabase, prefix: string, week: string, statuses: Array<'sent' | 'pending' | 'failed' | 'dropped' | null>): Promise<number[]> {
  const ids: number[] = [];
  for (const [i, status] of statuses.entries()) {
    const [p] = await target.sql<Array<{ id: number }>>`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status)
      values ('Frau', 'weiblich', 'V', 'N', ${`${prefix}${i}@example.org`.toLowerCase()}, ${`${prefix}${i}`}, 'auf_der_Suche') returning id`;
    await target.sql`insert into matching_service.platzsuche (patient_id, status) values (${p!.id}, 'aktiv')`;
    if (status) {
      await target.sql`insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, status, patient_id, sent_at, last_error, drop_reason, updated_at)
        values (${`weekly.${p!.id}.${week}`}, 'weekly-status', 'x@example.org', 'noreply@example.org', 's', 'h', 't', ${status}, ${p!.id},
                ${status === 'sent' ? '2026-12-07T08:00:03Z' : null}, ${status === 'dropped' ? 'weekly status no longer wanted: address_changed' : null},
                ${status === 'dropped' ? 'address_changed' : null}, '2026-12-07T08:00:03Z')`;
    }
    ids.push(p!.id);
  }
  return ids;
}

describe('fleet weekly run --dry-run', () => {
  // Pending, failed and dropped emails of the week were counted as "already sent this week".
  it("splits the patients whose email of the week is already recorded by what became of it; --json keeps the total's old name", { timeout: 60_000 }, async () => {
    const tdb = await createTestDatabase();
    const prefix = testQueuePrefix();
    try {
      // A database of its own: the counts cover every patient.
      const week = isoWeekOf(new Date(), 'Europe/Berlin');
      await patientsWithThisWeek(tdb, 'DRY', week, ['sent', 'sent', 'pending', 'failed', 'dropped', null]);
      const env = { DATABASE_URL: tdb.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix.prefix, LOG_LEVEL: 'silent' };
      const text = await runCli(['weekly', 'run', '--dry-run'], env);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).not.toContain('already sent');
      expect(text.stdout).toContain('  skipped: already recorded this week  5: 2 sent, 1 pending, 1 failed, 1 dropped\n');
      expect(text.stdout).toContain('  eligible                             1\n');
      const json = await runCli(['weekly', 'run', '--dry-run', '--json'], env);
      expect(JSON.parse(json.stdout)).toMatchObject({ eligible: 1, skippedAlreadySent: 5, skippedAlreadyRecorded: { sent: 2, pending: 1, failed: 1, dropped: 1 } });
    } finally {
      await prefix.cleanup();
      await tdb.drop();
    }
  });
});

describe('fleet weekly opt-out', () => {
  // Staff on the phone with a patient who asks to stop the emails need to know whether this
  // week's went out already: "an email not yet sent is dropped" alone read as "none will arrive".
  it("says whether this week's email went out already, is dropped, or was never queued", { timeout: 60_000 }, async () => {
    const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
    const week = isoWeekOf(new Date(), 'Europe/Berlin');
    const ids: number[] = [];
    for (const ref of ['OPTOUT01', 'OPTOUT02', 'OPTOUT03']) {
      const [p] = await db.sql<Array<{ id: number }>>`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status)
        values ('Frau', 'weiblich', 'V', 'N', ${`${ref.toLowerCase()}@example.org`}, ${ref}, 'auf_der_Suche') returning id`;
      ids.push(p!.id);
    }
    const [sent, pending, none] = ids as [number, number, number];
    for (const [id, status] of [[sent, 'sent'], [pending, 'pending']] as const) {
      await db.sql`insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, status, patient_id, sent_at)
        values (${`weekly.${id}.${week}`}, 'weekly-status', 'x@example.org', 'noreply@example.org', 's', 'h', 't', ${status}, ${id},
                ${status === 'sent' ? '2026-12-07T08:00:03Z' : null})`;
    }
    const lines = async (id: number) => {
      const r = await runCli(['weekly', 'opt-out', String(id), '--reason', 'asked on the phone'], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      return r.stdout.split('\n');
    };
    expect((await lines(sent))[1]).toBe(`this week's email (${week}): went out already at 2026-12-07 09:00 +01:00`);
    expect((await lines(pending))[1]).toBe(`this week's email (${week}): not sent yet, it is dropped`);
    expect((await lines(none))[1]).toBe(`this week's email (${week}): none queued yet`);
    const json = await runCli(['weekly', 'opt-in', String(sent), '--reason', 'wants them back', '--json'], env);
    expect(JSON.parse(json.stdout)).toEqual({ patientId: sent, optedOut: false, changed: true, thisWeek: { isoWeek: week, status: 'sent', sentAt: '2026-12-07T08:00:03Z' } });
  });
});

describe('fleet weekly preview', () => {
  // Typed in a shell without the fleet's UNSUBSCRIBE_SECRET, the link it printed was signed with
  // the development secret and answered 404 on the real fleet, without a word.
  it('warns when the unsubscribe link is signed with the development secret, not when the fleet\'s is set', { timeout: 60_000 }, async () => {
    const [p] = await db.sql<Array<{ id: number }>>`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status)
      values ('Frau', 'weiblich', 'V', 'N', 'preview@example.org', 'TP1', 'auf_der_Suche') returning id`;
    const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
    const dev = await runCli(['weekly', 'preview', String(p!.id)], env);
    expect(dev.code).toBe(0);
    expect(dev.stdout).toContain('Subject: ');
    expect(dev.stderr).toBe(
      "fleet: warning: UNSUBSCRIBE_SECRET is not set here: the unsubscribe link is signed with the development secret and does not work against a fleet with its own secret (404); export the fleet's UNSUBSCRIBE_SECRET to preview the link it sends\n",
    );
    const own = await runCli(['weekly', 'preview', String(p!.id)], { ...env, UNSUBSCRIBE_SECRET: 'the fleet secret of at least 32 characters' });
    expect(own.code).toBe(0);
    expect(own.stderr).toBe('');
  });
});

describe("fleet weekly preview when this week's email is already recorded", () => {
  // The preview said "eligible" for a patient whose email of the week was already sent, waiting,
  // failed or dropped (e.g. address changed): the fan-out skips them, and staff on the phone
  // promised an email that would not come.
  it('says what became of it, in the words of fleet weekly opt-out, in the text and in --json', { timeout: 60_000 }, async () => {
    const week = isoWeekOf(new Date(), 'Europe/Berlin');
    const [sent, pending, failed, dropped, none] = await patientsWithThisWeek(db, 'PRV', week, ['sent', 'pending', 'failed', 'dropped', null]);
    const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent', UNSUBSCRIBE_SECRET: 'the fleet secret of at least 32 characters' };
    const head = async (id: number) => {
      const r = await runCli(['weekly', 'preview', String(id)], env);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.split('\n')[0];
    };
    const at = '2026-12-07 09:00 +01:00';
    expect(await head(sent!)).toBe(`# patient ${sent}, week ${week}: eligible, but this week's email (${week}) is already recorded: went out already at ${at}; no other email this week`);
    expect(await head(pending!)).toBe(`# patient ${pending}, week ${week}: eligible, but this week's email (${week}) is already recorded: waiting to be sent; no other email this week`);
    expect(await head(failed!)).toBe(
      `# patient ${failed}, week ${week}: eligible, but this week's email (${week}) is already recorded: failed at ${at}, not sent (its dead letter: fleet dlq list); no other email this week`,
    );
    expect(await head(dropped!)).toBe(
      `# patient ${dropped}, week ${week}: eligible, but this week's email (${week}) is already recorded: dropped (address changed) at ${at}, not sent; no other email this week`,
    );
    expect(await head(none!)).toBe(`# patient ${none}, week ${week}: eligible`);

    const json = async (id: number) => JSON.parse((await runCli(['weekly', 'preview', String(id), '--json'], env)).stdout) as Record<string, unknown>;
    expect(await json(dropped!)).toMatchObject({
      isoWeek: week,
      eligible: false,
      reason: 'already_recorded',
      thisWeek: { status: 'dropped', sentAt: null, updatedAt: '2026-12-07T08:00:03Z', dropReason: 'address changed', says: expect.stringContaining('dropped (address changed)') },
    });
    expect(await json(sent!)).toMatchObject({ eligible: false, reason: 'already_recorded', thisWeek: { status: 'sent', sentAt: '2026-12-07T08:00:03Z' } });
    expect(await json(none!)).toMatchObject({ eligible: true, reason: null, thisWeek: null });

    // An opted-out patient's pending email: not sent, dropped at send time (as fleet weekly opt-out says).
    await db.sql`update patient_service.patienten set weekly_update_opt_out = true where id = ${pending!}`;
    expect(await head(pending!)).toBe(
      `# patient ${pending}, week ${week}: would not be sent (opted_out), and this week's email (${week}) is already recorded: not sent yet, it is dropped; no other email this week`,
    );
  });
});
