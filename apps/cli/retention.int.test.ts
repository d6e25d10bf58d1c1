import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { addDeadLetter } from '../../libs/queues/index.js';
import { openContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { writeDurably } from '../../workers/patient-import/file-keeper.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;
let dir: string;

function fleet(...args: string[]) {
  return runCli(args, {
    DATABASE_URL: db.url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: q.prefix,
    BACKUP_DIR: path.join(dir, 'backup'),
    FAILED_DIR: path.join(dir, 'failed'),
    LOG_LEVEL: 'info',
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  q = testQueuePrefix();
  dir = await mkdtemp(path.join(tmpdir(), 'cli-retention-'));
});

afterAll(async () => {
  await db?.drop();
  await q?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function craft(status: string, finishedDaysAgo: number | null, failed = false) {
  const name = `Gross_Juergen_20250101_${status}.json`;
  const [r] = await db.sql`
    insert into fleet.patient_import_ledger (source, bucket, object_name, generation, source_uri, status, finished_at, discarded_at)
    values ('file', '(local file)', ${name}, ${status}, ${`file:///tmp/${name}`}, ${status},
            now() - make_interval(days => ${finishedDaysAgo}::int), case when ${status} = 'discarded' then now() - make_interval(days => ${finishedDaysAgo}::int) end)
    returning id`;
  const id = Number(r!.id);
  const backupPath = await writeDurably(path.join(dir, 'backup'), `${id}-${name}`, Buffer.from('{}'));
  const failedPath = failed ? await writeDurably(path.join(dir, 'failed'), `${id}-${name}`, Buffer.from('{}')) : null;
  await db.sql`update fleet.patient_import_ledger set backup_path = ${backupPath}, failed_path = ${failedPath} where id = ${id}`;
  return { id, backupPath, failedPath };
}

/**
 * An email whose last change was `daysAgo` days ago; `deadLetter`: it failed and its dead letter
 * waits in email-dlq; a failed one without is one whose dead letter an operator discarded.
 */
async function email(status: 'sent' | 'failed', daysAgo: number, deadLetter = false): Promise<string> {
  const [r] = await db.sql`
    insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, status, updated_at)
    values (${`weekly.${daysAgo}.${status}.${deadLetter}`}, 'weekly-status', 'gross@example.org', 'noreply@curavani.com', 'Ihre Suche, Herr Gross',
            '<p>Herr Gross</p>', 'Herr Gross', ${status}, now() - make_interval(days => ${daysAgo}::int)) returning id`;
  const id = String(r!.id);
  if (deadLetter) {
    const ctx = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix }), silentLogger());
    await addDeadLetter(ctx.queues, {
      originalQueue: 'email', originalJobId: `email-send.delivery.${id}`, name: 'email-send', data: { deliveryId: id },
      reason: 'rejected', code: 'rejected', attemptsMade: 1, enqueuedAt: null, failedAt: new Date().toISOString(),
    });
    await ctx.close();
  } else if (status === 'failed') {
    await db.sql`insert into fleet.audit_log (actor, action, target, reason) values ('test', 'dlq.discard', ${`email/email-send.delivery.${id}`}, 'address gone')`;
  }
  return id;
}

describe('fleet retention run', () => {
  it('counts (--dry-run), removes copies and email contents past retention and prints counts only; imports show says when a copy was removed', { timeout: 120_000 }, async () => {
    const old = await craft('deleted', 31);
    const discarded = await craft('discarded', 40, true);
    const open = await craft('backed_up', null);
    await email('sent', 31);
    await email('failed', 40);
    await email('failed', 40, true);
    await email('sent', 2);

    const dry = await fleet('retention', 'run', '--dry-run');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toBe(
      'retention sweep, dry run (nothing removed):\n' +
        '  durable copies in BACKUP_DIR (kept 30 days after the row became final): 2 past retention\n' +
        '  failed-folder copies in FAILED_DIR (kept 90 days after the row became final): 0 past retention\n' +
        '  email subjects, bodies and headers in fleet.deliveries (kept 30 days after the email was sent, failed or dropped): 2 past retention, ' +
        '1 failed kept while their dead letter waits (fleet dlq list --queue email: requeue or discard)\n',
    );
    expect(existsSync(old.backupPath)).toBe(true);

    const run = await fleet('retention', 'run');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(
      'retention sweep:\n' +
        '  durable copies in BACKUP_DIR (kept 30 days after the row became final): 2 removed\n' +
        '  failed-folder copies in FAILED_DIR (kept 90 days after the row became final): 0 removed\n' +
        '  email subjects, bodies and headers in fleet.deliveries (kept 30 days after the email was sent, failed or dropped): 2 removed, ' +
        '1 failed kept while their dead letter waits (fleet dlq list --queue email: requeue or discard)\n',
    );
    for (const out of [dry.stdout + dry.stderr, run.stdout + run.stderr]) {
      expect(out).not.toContain('Gross_Juergen');
      expect(out).not.toContain('gross@example.org');
    }
    const [left] = await db.sql`select count(*) filter (where contents_removed_at is null)::int as kept, count(*) filter (where subject = '')::int as blank from fleet.deliveries`;
    expect(left).toEqual({ kept: 2, blank: 2 });
    expect(existsSync(old.backupPath)).toBe(false);
    expect(existsSync(discarded.backupPath)).toBe(false);
    expect(existsSync(discarded.failedPath!)).toBe(true);
    expect(existsSync(open.backupPath)).toBe(true);

    const again = await fleet('retention', 'run', '--json');
    expect(JSON.parse(again.stdout)).toMatchObject({
      dryRun: false,
      backup: { removed: 0, alreadyGone: 0 },
      failed: { removed: 0 },
      problems: [],
      emails: { retentionDays: 30, removed: 0, keptForDeadLetters: 1 },
    });

    const shown = await fleet('imports', 'show', String(discarded.id));
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/\nbackup copy: +removed on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d \(retention 30 days\)\n/);
    expect(shown.stdout).toContain(`failed copy:`);
    expect(shown.stdout).toContain(discarded.failedPath!);
    expect(shown.stdout).not.toContain(discarded.backupPath);
    expect(shown.stdout).toMatch(/\nfinal since: +\d{4}-/);
    const openShown = await fleet('imports', 'show', String(open.id));
    expect(openShown.stdout).toContain(open.backupPath);
  });

  it('names the records of files in the copy folders that no record points to, and leaves those files alone', { timeout: 60_000 }, async () => {
    const stray = await writeDurably(path.join(dir, 'failed'), '77-Gross_Juergen_20250101_stray.json', Buffer.from('{}'));
    const byHand = await writeDurably(path.join(dir, 'failed'), 'copied-by-hand.json', Buffer.from('{}'));
    for (const args of [['retention', 'run', '--dry-run'], ['retention', 'run']]) {
      const r = await fleet(...args);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(
        '\n  FAILED_DIR: 2 files no import record points to (record 77: fleet imports show <id>); the sweep never removes these: check and remove by hand\n',
      );
      expect(r.stdout).not.toContain('BACKUP_DIR:');
      expect(r.stdout + r.stderr).not.toContain('Gross_Juergen');
    }
    expect(existsSync(stray) && existsSync(byHand)).toBe(true);
    const json = JSON.parse((await fleet('retention', 'run', '--dry-run', '--json')).stdout);
    expect(json.unrecorded).toEqual({ backup: { files: 0, records: [] }, failed: { files: 2, records: [77] } });
    await rm(stray);
    await rm(byHand);
  });

  it('removes the temporary copies a process that died while writing left (older than an hour), never a copy or a fresh temporary file', { timeout: 60_000 }, async () => {
    const backupDir = path.join(dir, 'backup');
    const failedDir = path.join(dir, 'failed');
    await mkdir(backupDir, { recursive: true });
    const copy = await writeDurably(backupDir, '78-Gross_Juergen_20250101_abc.json', Buffer.from('{}'));
    const old = path.join(backupDir, '.78-Gross_Juergen_20250101_abc.json.0123456789ab.tmp');
    const oldFailed = path.join(failedDir, '.79-Klein_Anna_20250101_abd.json.ba9876543210.tmp');
    const fresh = path.join(backupDir, '.80-Lang_Ute_20250101_abe.json.00000000aaaa.tmp');
    const notOurs = path.join(backupDir, '.some-editor-swap.tmp');
    const hourAgo = new Date(Date.now() - 2 * 3_600_000);
    for (const f of [old, oldFailed, fresh, notOurs]) await writeFile(f, '{"patient_data":{}}');
    for (const f of [old, oldFailed, notOurs]) await utimes(f, hourAgo, hourAgo);

    const dry = await fleet('retention', 'run', '--dry-run');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('\n  BACKUP_DIR: 1 temporary copy left by a process that died while writing would be removed\n');
    expect(dry.stdout).toContain('\n  FAILED_DIR: 1 temporary copy left by a process that died while writing would be removed\n');
    expect(existsSync(old) && existsSync(oldFailed)).toBe(true);

    const run = await fleet('retention', 'run', '--json');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).staleTemps).toEqual({ backup: 1, failed: 1 });
    expect(run.stdout + run.stderr).not.toMatch(/Gross|Klein|Lang/);
    expect([old, oldFailed].filter(existsSync)).toEqual([]);
    expect([copy, fresh, notOurs].filter((f) => !existsSync(f))).toEqual([]);
    expect(JSON.parse((await fleet('retention', 'run', '--json')).stdout).staleTemps).toEqual({ backup: 0, failed: 0 });
    for (const f of [copy, fresh, notOurs]) await rm(f);
  });
});
