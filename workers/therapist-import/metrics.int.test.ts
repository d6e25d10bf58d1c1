import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { everyOutcomeFile } from './fixtures.js';
import { startTherapistImportHarness } from './int-harness.js';
import { registerTherapistImportGauges } from './metrics.js';
import { importTherapistFileNow } from './import-file-now.js';

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;

const values = (c: FleetContext, name: string, label?: string) => metricValues(c.metrics.registry, name, label);

beforeAll(async () => {
  ({ db, ctx, dir, close } = await startTherapistImportHarness('therapist-metrics'));
  registerTherapistImportGauges(ctx);
});

afterAll(async () => {
  await close?.();
});

describe('therapist import metrics', () => {
  it('count a finished file by status and its therapists by outcome, once per file', async () => {
    const file = path.join(dir, '52066.json');
    await writeFile(file, everyOutcomeFile());
    const report = await importTherapistFileNow(ctx, file);
    expect(report.status).toBe('partial');

    expect(await values(ctx, 'fleet_therapist_import_files_total', 'status')).toEqual({ imported: 0, partial: 1, failed: 0, skipped: 0 });
    // everyOutcomeFile: two created (one a status mismatch), one not adult, one without last name.
    expect(await values(ctx, 'fleet_therapist_import_therapists_total', 'outcome')).toEqual({ created: 2, updated: 0, unchanged: 0, deactivated: 0, skipped: 1, failed: 1 });

    // The same content again is not imported again, and not counted again.
    expect((await importTherapistFileNow(ctx, file)).alreadyDone).toBe(true);
    expect(await values(ctx, 'fleet_therapist_import_files_total', 'status')).toEqual({ imported: 0, partial: 1, failed: 0, skipped: 0 });

    const text = await ctx.metrics.registry.metrics();
    expect(text).toContain('fleet_therapist_import_therapists_total{outcome="created"} 2');
    for (const personal of ['52066', 'Adler', 'p1']) expect(text).not.toContain(personal);
  });

  it("the gauges show the backlog with the oldest file's age and when the watcher's last run closed", async () => {
    expect(await values(ctx, 'fleet_therapist_import_pending_files', 'status')).toEqual({ queued: 0, importing: 0 });
    expect(await values(ctx, 'fleet_therapist_import_oldest_pending_seconds')).toEqual({ '': 0 });
    // Only the CLI's run so far: the watcher never closed one.
    expect(await values(ctx, 'fleet_therapist_import_last_run_closed_timestamp_seconds')).toEqual({});

    await db.sql`insert into fleet.therapist_import_files (path, postcode, content_hash, status, discovered_at) values
      ('20261201/52067.json', '52067', 'stuck-hash', 'importing', now() - interval '10 minutes'),
      ('20261201/52068.json', '52068', 'waiting-hash', 'queued', now() - interval '1 minute')`;
    const [run] = await db.sql<Array<{ closed: number }>>`
      insert into fleet.therapist_import_runs (trigger, state, sealed_at, closed_at) values ('watcher', 'closed', now() - interval '2 days', now() - interval '2 days' + interval '5 minutes')
      returning extract(epoch from sealed_at)::float8 as closed`;
    // A run of ten days ago closed again today (an operator requeued one of its files): not a new drop.
    await db.sql`insert into fleet.therapist_import_runs (trigger, state, sealed_at, closed_at) values ('watcher', 'closed', now() - interval '10 days', now())`;
    // A run still importing does not count yet.
    await db.sql`insert into fleet.therapist_import_runs (trigger, state, sealed_at) values ('watcher', 'sealed', now() - interval '1 minute')`;

    expect(await values(ctx, 'fleet_therapist_import_pending_files', 'status')).toEqual({ queued: 1, importing: 1 });
    const age = (await values(ctx, 'fleet_therapist_import_oldest_pending_seconds'))['']!;
    expect(age).toBeGreaterThanOrEqual(600);
    expect(age).toBeLessThan(900);
    // Through a JS Date: milliseconds, while PostgreSQL keeps microseconds.
    expect((await values(ctx, 'fleet_therapist_import_last_run_closed_timestamp_seconds'))['']).toBeCloseTo(run!.closed, 2);

    // A run of yesterday open again while its requeued file is imported (or retried, for up to an
    // hour): it closed before, so it still counts; the gauge does not fall back to an older run.
    const [reopened] = await db.sql<Array<{ sealed: number }>>`
      insert into fleet.therapist_import_runs (trigger, state, sealed_at, closed_at, summary_delivery_id) values ('watcher', 'sealed', now() - interval '1 day', null, gen_random_uuid())
      returning extract(epoch from sealed_at)::float8 as sealed`;
    expect((await values(ctx, 'fleet_therapist_import_last_run_closed_timestamp_seconds'))['']).toBeCloseTo(reopened!.sealed, 2);
  });

  it('the scrape still answers when PostgreSQL cannot be read, without the gauges read from it', async () => {
    const down = openContext(loadConfig({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nothing', REDIS_URL: TEST_REDIS_URL, LOG_LEVEL: 'silent' }), silentLogger());
    try {
      registerTherapistImportGauges(down);
      const text = await down.metrics.registry.metrics();
      expect(text).toContain('# TYPE fleet_therapist_import_pending_files gauge');
      for (const name of ['fleet_therapist_import_pending_files', 'fleet_therapist_import_oldest_pending_seconds', 'fleet_therapist_import_last_run_closed_timestamp_seconds']) {
        expect(text).not.toMatch(new RegExp(`^${name}[ {]`, 'm'));
      }
    } finally {
      await down.close();
    }
  });
});
