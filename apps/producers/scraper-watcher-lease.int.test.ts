import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentLeaseHolders } from '../../libs/db/lease.js';
import { createLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

/**
 * Two fleet processes with the scraper-watcher role (a second replica, a rolling deploy): one
 * watches, the other stands by and takes over when the first stops or loses its PostgreSQL
 * session. Two watching at once split one drop into two runs and two staff summaries, and the
 * second's start sealed the first's collecting run. Each watcher has a fleet context of its own,
 * as a process would.
 */

let db: TestDatabase;
let ctxA: FleetContext;
let ctxB: FleetContext;
let dir: string;
let close: () => Promise<void>;
const watchers: ScraperWatcher[] = [];

beforeAll(async () => {
  ({ db, ctx: ctxA, dir, close } = await startWatcherHarness('scraper-lease', { quietMs: 300, env: { SCRAPER_LEASE_CHECK_MS: '200' } }));
  ctxB = openContext(ctxA.config, createLogger({ level: 'silent', pretty: 'false' }));
});
afterAll(async () => {
  for (const w of watchers) await w.stop(5_000).catch(() => {});
  await ctxB?.close();
  await close?.();
});

function watcherOf(ctx: FleetContext): ScraperWatcher {
  const w = scraperWatcherComponent(ctx);
  watchers.push(w);
  return w;
}

async function drop(plz: string): Promise<void> {
  await writeFile(path.join(dir, `${plz}.json`), scraperFile([therapistLine({ id: `t-${plz}`, first: 'Anna', last: `Adler${plz}`, plz })], { postcode_area: plz }));
}

/** Runs with their file counts and summaries, once every file is imported and every run closed. */
async function settled(files: number) {
  return until(
    `${files} files imported, every run closed with its summary`,
    async () => {
      const [f] = await db.sql<Array<{ imported: number; all: number }>>`
        select count(*) filter (where status = 'imported')::int as imported, count(*)::int as all from fleet.therapist_import_files`;
      const runs = await db.sql<Array<{ id: string; state: string; files: number; summaries: number }>>`
        select r.id::text, r.state, (select count(*)::int from fleet.therapist_import_files f where f.run_id = r.id) as files,
          (select count(*)::int from fleet.deliveries d where d.idempotency_key = 'therapist-import.run.' || r.id) as summaries
        from fleet.therapist_import_runs r order by r.id`;
      return f!.imported === files && f!.all === files && runs.every((r) => r.state === 'closed' && r.summaries === 1) && runs;
    },
    // Seconds when the machine is idle; generous for a busy one (it once ran out at 20 s while
    // the machine type-checked, linted and ran a drill beside it).
    40_000,
  );
}

async function activeGauge(ctx: FleetContext): Promise<number | undefined> {
  const m = await ctx.metrics.registry.getSingleMetric('fleet_scraper_watcher_active')?.get();
  return m?.values[0]?.value;
}

describe('scraper watcher: one watches, another stands by', () => {
  it('a second watcher stands by while the first watches: one drop, one run, one summary', async () => {
    const a = watcherOf(ctxA);
    await a.start();
    const b = watcherOf(ctxB);
    await b.start();
    expect([a.active(), b.active()]).toEqual([true, false]);
    expect([await activeGauge(ctxA), await activeGauge(ctxB)]).toEqual([1, 0]);
    // GET /ready says which one watches; a standby is not a failure.
    expect(await b.ready!()).toEqual({ ok: true, detail: 'standing by: another scraper watcher watches the drop folder' });
    expect(await a.ready!()).toMatchObject({ ok: true, detail: expect.stringMatching(/^watching /) });

    for (const plz of ['40001', '40002', '40003', '40004']) await drop(plz);
    const runs = await settled(4);
    // Before, the second watcher's start sealed the first's run, and both registered files.
    expect(runs.map((r) => r.files)).toEqual([4]);
    // Still so after many lease checks.
    await new Promise((r) => setTimeout(r, 600));
    expect([a.active(), b.active()]).toEqual([true, false]);

    // The first stops (a deploy): the second takes over, and its catch-up finds what came meanwhile.
    await a.stop(5_000);
    await drop('40005');
    await until('the standby took over', () => b.active(), 10_000);
    expect(await activeGauge(ctxB)).toBe(1);
    // `fleet status` names the session that holds the lease.
    expect(await currentLeaseHolders(db.sql)).toEqual([{ lease: 'scraperWatcher', applicationName: 'curavani-fleet:scraper-watcher', since: expect.any(Date) }]);
    expect((await settled(5)).map((r) => r.files)).toEqual([4, 1]);
  });

  it('a watcher whose PostgreSQL session ends gives way to the one that took the lease, or takes it back: one watches', async () => {
    const [b] = watchers.filter((w) => w.active());
    expect(b).toBeDefined();
    const a = watcherOf(ctxA);
    await a.start();
    expect(a.active()).toBe(false);
    // The active watcher's lease session ends (a failover, a network cut).
    const ended = await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
      where datname = ${db.name} and application_name like '%:scraper-watcher' and pid in (select pid from pg_locks where locktype = 'advisory' and objid = 3 and granted)`;
    expect(ended).toHaveLength(1);
    await until('exactly one watcher active, with the lease', async () => {
      const [held] = await db.sql<Array<{ n: number }>>`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = 3 and granted`;
      return held!.n === 1 && [a, b!].filter((w) => w.active()).length === 1;
    });
    await new Promise((r) => setTimeout(r, 600));
    expect([a, b!].filter((w) => w.active())).toHaveLength(1);

    await drop('40006');
    const runs = await settled(6);
    expect(runs.map((r) => r.files)).toEqual([4, 1, 1]);
  });
});
