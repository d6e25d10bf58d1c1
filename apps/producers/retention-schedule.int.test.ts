import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { writeDurably } from '../../workers/patient-import/file-keeper.js';
import { startOwnImportHarness, until, type ImportHarness } from '../../workers/patient-import/int-harness.js';
import { roles } from '../fleet/roles.js';
import { RETENTION_SCHEDULER_ID, retentionComponents } from './retention-schedule.js';

let t: Awaited<ReturnType<typeof startOwnImportHarness>>;
let database: TestDatabase;
let h: ImportHarness;
const started: Component[] = [];

beforeAll(async () => {
  t = await startOwnImportHarness();
  ({ database, h } = t);
});

afterAll(() => t?.close(started));

describe('the retention schedule of role patient-import', () => {
  it('a process with the retention worker exports its counters at 0 from the start, not only after the first night', async () => {
    // They were made by the first sweep: /metrics had neither until the night's run in that process.
    const ctx = openContext(loadConfig(h.env), silentLogger());
    try {
      retentionComponents(ctx);
      const text = await ctx.metrics.registry.metrics();
      expect(text).toMatch(/^fleet_patient_import_copies_removed_total\{folder="backup"\} 0$/m);
      expect(text).toMatch(/^fleet_patient_import_copies_removed_total\{folder="failed"\} 0$/m);
      expect(text).toMatch(/^fleet_email_contents_removed_total 0$/m);
    } finally {
      await ctx.close();
    }
  });

  it('registers one scheduler on RETENTION_CRON in RETENTION_TZ however many processes start, and its job removes what is due (local copies and email contents)', async () => {
    // Two patient-import processes start (only the retention parts: the import worker is not needed here).
    for (let i = 0; i < 2; i++) {
      const own = (await roles['patient-import']!.components(h.ctx)).filter((c) => c.name.startsWith('patient-import-retention'));
      expect(own.map((c) => c.name).sort()).toEqual(['patient-import-retention', 'patient-import-retention-schedule']);
      for (const c of own) {
        await c.start();
        started.push(c);
      }
    }
    const queue = h.ctx.queues.queue('patient-import-retention');
    const schedulers = await queue.getJobSchedulers(0, -1);
    expect(schedulers.map((s) => s.key)).toEqual([RETENTION_SCHEDULER_ID]);
    expect(schedulers[0]).toMatchObject({ pattern: '30 3 * * *', tz: 'Europe/Berlin', name: 'patient-import-retention' });
    const next = new Date(schedulers[0]!.next!);
    expect(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(next)).toBe('03:30');
    expect((await queue.getDelayed(0, -1)).filter((j) => j.name === 'patient-import-retention')).toHaveLength(1);

    // A row that finished 31 days ago; the scheduled job is what runs the sweep (run now here).
    const [r] = await database.sql`
      insert into fleet.patient_import_ledger (source, bucket, object_name, generation, source_uri, status, finished_at)
      values ('file', '(local file)', 'Muster_Max_20250101_abcd.json', 'g1', 'file:///tmp/x.json', 'done', now() - interval '31 days') returning id`;
    const id = Number(r!.id);
    const copy = await writeDurably(h.backupDir, `${id}-Muster_Max_20250101_abcd.json`, Buffer.from('{}'));
    await database.sql`update fleet.patient_import_ledger set backup_path = ${copy} where id = ${id}`;
    // An email sent 31 days ago: its contents go in the same job.
    const [d] = await database.sql`
      insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, status, sent_at, updated_at)
      values ('patient-import.staff.ledger.1', 'staff', 'info@curavani.com', 'noreply@curavani.com', 'Neuer Patient: Max Muster', '<p>Max Muster</p>', 'Max Muster',
              'sent', now() - interval '31 days', now() - interval '31 days') returning id`;
    const job = await queue.add('patient-import-retention', {}, { removeOnComplete: false });
    await until(async () => (await job.getState()) === 'completed', 20_000, 'the retention job completed');
    expect(existsSync(copy)).toBe(false);
    const [row] = await database.sql`select backup_removed_at from fleet.patient_import_ledger where id = ${id}`;
    expect(row!.backup_removed_at).toBeTruthy();
    const done = await queue.getJob(job.id!);
    // The job's result holds counts only.
    expect(done!.returnvalue).toMatchObject({
      backup: { retentionDays: 30, removed: 1 },
      failed: { retentionDays: 90, removed: 0 },
      problems: [],
      emails: { retentionDays: 30, removed: 1, keptForDeadLetters: 0 },
    });
    const [email] = await database.sql`select subject, text, contents_removed_at from fleet.deliveries where id = ${d!.id}`;
    expect(email).toMatchObject({ subject: '', text: '' });
    expect(email!.contents_removed_at).toBeTruthy();
    expect(JSON.stringify(done!.returnvalue)).not.toContain('Muster');
  });
});
