import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { startTherapistImportHarness } from './int-harness.js';
import { scraperFile, therapistLine, type TherapistLine } from './fixtures.js';
import { claimFile, SCRAPED_PLZ, therapistIdPool } from '../../libs/db/repositories/therapist-import-session.js';
import { processTherapistFile, sha256, type ImportSession, type TherapistImportDeps } from './process-therapist-file.js';
import { NOT_REGULAR_REASON } from './file-size.js';
import { therapistImportRepo as repo } from './index.js';
import { therapistImportDeps } from './wiring.js';

/**
 * The file's transaction reads therapists without row locks and pipelines its writes with the
 * commit: a therapist changed by staff in between must not be overwritten from a stale read,
 * and a write that fails must take every other write of the file with it.
 */

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ db, ctx, dir, close } = await startTherapistImportHarness('therapist-session'));
});

afterAll(async () => {
  await close?.();
});

/** A tracked file in a sealed run of its own, ready for the processor. */
async function tracked(name: string, lines: TherapistLine[]): Promise<number> {
  const content = scraperFile(lines);
  await writeFile(path.join(dir, name), content);
  const runId = await repo.openRun(ctx.database.db, 'cli', 'sealed');
  const { file } = await repo.registerFile(ctx.database.db, {
    runId,
    path: name,
    postcode: name.slice(0, 5),
    dateFolder: null,
    urgent: false,
    contentHash: sha256(Buffer.from(content)),
    sizeBytes: content.length,
  });
  return file.id;
}

/** The real deps, with `afterOpen` run once between loading the therapists and the commit. */
function depsWith(afterOpen: (session: ImportSession) => Promise<void>): TherapistImportDeps & { opened: () => number } {
  const deps = therapistImportDeps(ctx);
  let opened = 0;
  return {
    ...deps,
    opened: () => opened,
    store: {
      ...deps.store,
      async openSession(keys, load) {
        const session = await deps.store.openSession(keys, load);
        if (++opened === 1) await afterOpen(session);
        return session;
      },
    },
  };
}

async function therapist(plz: string) {
  const [t] = await db.sql<Array<{ id: number; status: string; telefon: string | null }>>`
    select id, status, telefon from therapist_service.therapeuten where plz = ${plz}`;
  return t!;
}

describe('therapist import transaction', () => {
  it('the candidates by the postcode on record are read through therapist_scraped_plz_idx (the lookup and the index say the same expression)', async () => {
    const plan = await db.sql.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      return tx.unsafe(`explain select therapist_id from fleet.therapist_scraped where ${SCRAPED_PLZ} = any('{52066}'::text[])`);
    });
    expect(plan.map((r) => r['QUERY PLAN'] as string).join('\n')).toContain('therapist_scraped_plz_idx');
  });

  it('claiming a file gives the row as the repository reads it, once per queued file', async () => {
    const fileId = await tracked('30050.json', [therapistLine({ id: 'k1', first: 'Kai', plz: '30050' })]);
    const claimed = await claimFile(ctx.database.sql, fileId, new Date('2026-01-05T10:00:00Z'));
    expect(claimed).toEqual(await repo.getFile(ctx.database.db, fileId));
    expect(claimed).toMatchObject({ id: fileId, status: 'importing', attempts: 1, path: '30050.json', postcode: '30050', startedAt: new Date('2026-01-05T10:00:00Z') });
    expect(typeof claimed!.runId).toBe('number');
    await processTherapistFile({ fileId }, therapistImportDeps(ctx));
    expect(await claimFile(ctx.database.sql, fileId, new Date())).toBeNull();
  });

  it('a therapist changed by staff between read and commit is not overwritten from the stale read: the file is planned again', async () => {
    const first = await tracked('30100.json', [therapistLine({ id: 'c1', first: 'Carla', plz: '30100', phone: '0301 1' })]);
    await processTherapistFile({ fileId: first }, therapistImportDeps(ctx));
    const before = await therapist('30100');

    // The scraper now says: phone changed. Meanwhile staff deactivate the therapist.
    const second = await tracked('30100.json', [therapistLine({ id: 'c1', first: 'Carla', plz: '30100', phone: '0301 2', status: 'deleted' })]);
    const deps = depsWith(async () => {
      await db.sql`update therapist_service.therapeuten set status = 'inaktiv' where id = ${before.id}`;
    });
    const report = await processTherapistFile({ fileId: second }, deps);

    expect(deps.opened()).toBe(2); // the first commit found the row changed and wrote nothing; planned again
    // Planned on fresh data: already inactive, so nothing to deactivate (the stale plan would have said "deactivated").
    expect(report.counts).toMatchObject({ deactivated: 0, unchanged: 1, total: 1 });
    const [ev] = await db.sql`select count(*)::int as n from fleet.outbox where event_type = 'therapist.deactivated' and key = ${String(before.id)}`;
    expect(ev!.n).toBe(0);
  });

  it('an update planned from a stale read is not written: staff edits of the same therapist survive the conflict', async () => {
    const first = await tracked('30200.json', [therapistLine({ id: 'e1', first: 'Emil', plz: '30200', phone: '0302 1' })]);
    await processTherapistFile({ fileId: first }, therapistImportDeps(ctx));
    const t = await therapist('30200');

    const second = await tracked('30200.json', [therapistLine({ id: 'e1', first: 'Emil', plz: '30200', phone: '0302 2', status: 'modified' })]);
    const deps = depsWith(async () => {
      // staff set the new number themselves and deactivate the therapist
      await db.sql`update therapist_service.therapeuten set telefon = '0302 2', status = 'inaktiv' where id = ${t.id}`;
    });
    const report = await processTherapistFile({ fileId: second }, deps);
    expect(deps.opened()).toBe(2);
    expect(report.counts).toMatchObject({ updated: 0, unchanged: 1 });
    expect(await therapist('30200')).toMatchObject({ telefon: '0302 2', status: 'inaktiv' });
  });

  it('a scraped record another import wrote between read and commit: the file is planned again on it, not failed', async () => {
    const first = await tracked('30250.json', [therapistLine({ id: 'r1', first: 'Rita', plz: '30250', phone: '0302 5' })]);
    await processTherapistFile({ fileId: first }, therapistImportDeps(ctx));
    const t = await therapist('30250');
    // As if imported before records were kept: none on record.
    await db.sql`delete from fleet.therapist_scraped where therapist_id = ${t.id}`;

    const second = await tracked('30250.json', [therapistLine({ id: 'r1', first: 'Rita', plz: '30250', phone: '0302 6', status: 'modified' })]);
    const deps = depsWith(async () => {
      await db.sql`insert into fleet.therapist_scraped (therapist_id, fields, digest) values (${t.id}, '{"vorname":"Rita"}', 'other')`;
    });
    const report = await processTherapistFile({ fileId: second }, deps);
    expect(deps.opened()).toBe(2);
    expect(report).toMatchObject({ status: 'imported' });
    expect(report.counts).toMatchObject({ updated: 1 });
    const [rec] = await db.sql`select fields->>'telefon' as telefon, digest from fleet.therapist_scraped where therapist_id = ${t.id}`;
    expect(rec).toMatchObject({ telefon: '0302 6' });
    expect(rec!.digest).not.toBe('other');
  });

  it('scraper ids and names with quotes, backslashes, commas and braces survive the array and JSON parameters', async () => {
    const odd = 'x"1\\2,{3} \'4\' ü';
    const line = (status: string) => therapistLine({ id: odd, first: 'Zoë "Z"', last: 'O\'Brien, {Jr}\\', plz: '30400', status });
    const first = await tracked('30400.json', [line('new')]);
    expect((await processTherapistFile({ fileId: first }, therapistImportDeps(ctx))).counts).toMatchObject({ created: 1 });
    const [ext] = await db.sql<Array<{ external_id: string }>>`select external_id from fleet.therapist_external_ids where scope = '30400'`;
    expect(ext!.external_id).toBe(odd);
    const again = await tracked('30400.json', [{ ...line('unchanged'), telephone_hours: { friday: ['08:00-09:00'] } }]);
    const report = await processTherapistFile({ fileId: again }, therapistImportDeps(ctx));
    expect(report.counts).toMatchObject({ created: 0, updated: 1 });
    const [t] = await db.sql<Array<{ vorname: string; nachname: string }>>`select vorname, nachname from therapist_service.therapeuten where plz = '30400'`;
    expect(t).toEqual({ vorname: 'Zoë "Z"', nachname: 'O\'Brien, {Jr}\\' });
  });

  it('when one pipelined write fails, none of the file is written: no therapists, no events, the tracking row stays open', async () => {
    const fileId = await tracked('30300.json', [
      therapistLine({ id: 'n1', first: 'Nora', plz: '30300' }),
      therapistLine({ id: 'n2', first: 'Nils', plz: '30300' }),
    ]);
    // Make the last write before the commit (the tracking row) fail: its counts column refuses the value.
    await db.sql`alter table fleet.therapist_import_files add constraint session_test_no_counts check (counts is null or not (counts ? 'created')) not valid`;
    try {
      const outboxBefore = await db.sql<Array<{ n: number }>>`select count(*)::int as n from fleet.outbox`;
      await expect(processTherapistFile({ fileId }, therapistImportDeps(ctx))).rejects.toThrow(/session_test_no_counts/);
      expect(await db.sql`select id from therapist_service.therapeuten where plz = '30300'`).toHaveLength(0);
      expect(await db.sql`select 1 from fleet.therapist_external_ids where scope = '30300'`).toHaveLength(0);
      const outboxAfter = await db.sql<Array<{ n: number }>>`select count(*)::int as n from fleet.outbox`;
      expect(outboxAfter[0]!.n).toBe(outboxBefore[0]!.n);
      const row = await repo.getFile(ctx.database.db, fileId);
      expect(row!.status).toBe('importing');
    } finally {
      await db.sql`alter table fleet.therapist_import_files drop constraint session_test_no_counts`;
    }
    // The retry (as BullMQ would run it) imports the file.
    const report = await processTherapistFile({ fileId }, therapistImportDeps(ctx));
    expect(report.counts).toMatchObject({ created: 2, total: 2 });
  });

  it('new therapist ids come from the sequence in blocks: concurrent takes share one refill, never an id twice', async () => {
    let fetches = 0;
    const sql = new Proxy(db.sql, {
      apply(target, self, args: Parameters<typeof db.sql>) {
        fetches++;
        return Reflect.apply(target, self, args);
      },
    });
    const pool = therapistIdPool(sql, 10);
    expect(await pool.take(0)).toEqual([]);
    expect(fetches).toBe(0);
    const [a, b, c] = await Promise.all([pool.take(4), pool.take(4), pool.take(3)]); // 11 > one block of 10
    expect(fetches).toBe(2);
    const all = [...a!, ...b!, ...c!];
    expect(new Set(all).size).toBe(11);
    expect(await pool.take(25)).toHaveLength(25); // more than a block: fetched in one go
    expect(fetches).toBe(3);
    // Ids taken elsewhere from the same sequence never collide with the pool's.
    const [other] = await db.sql<Array<{ id: number }>>`select nextval(pg_get_serial_sequence('therapist_service.therapeuten', 'id'))::int as id`;
    expect(all).not.toContain(other!.id);
    expect(Math.min(...all)).toBeGreaterThan(0);
  });

  describe('a job that names its file (path, hash, postcode as registered)', () => {
    /** The real deps, counting claims made apart from the import's reads. */
    function counting(): TherapistImportDeps & { claimsApart: () => number } {
      const deps = therapistImportDeps(ctx);
      let claims = 0;
      return {
        ...deps,
        claimsApart: () => claims,
        store: {
          ...deps.store,
          markImporting(id, now) {
            claims++;
            return deps.store.markImporting(id, now);
          },
        },
      };
    }
    const hintOf = async (fileId: number) => {
      const row = (await repo.getFile(ctx.database.db, fileId))!;
      return { path: row.path, contentHash: row.contentHash!, postcode: row.postcode };
    };

    it('is read first and claimed in the same round trip as the import reads: one claim, one attempt', async () => {
      const fileId = await tracked('30500.json', [therapistLine({ id: 'h1', first: 'Hanna', plz: '30500' })]);
      const deps = counting();
      const report = await processTherapistFile({ fileId, file: await hintOf(fileId) }, deps);
      expect(report.counts).toMatchObject({ created: 1, total: 1 });
      expect(deps.claimsApart()).toBe(0);
      expect(await repo.getFile(ctx.database.db, fileId)).toMatchObject({ status: 'imported', attempts: 1 });
    });

    it('a hint the row does not confirm is not trusted: the file is claimed by id and imported as registered', async () => {
      const fileId = await tracked('30600.json', [therapistLine({ id: 'h2', first: 'Hugo', plz: '30600' })]);
      const deps = counting();
      const report = await processTherapistFile({ fileId, file: { ...(await hintOf(fileId)), postcode: '99999' } }, deps);
      expect(deps.claimsApart()).toBe(1);
      expect(report.counts).toMatchObject({ created: 1 });
      // Imported in its registered scope, one attempt (the unconfirmed claim took nothing).
      expect(await db.sql`select 1 from fleet.therapist_external_ids where scope = '30600' and external_id = 'h2'`).toHaveLength(1);
      expect(await repo.getFile(ctx.database.db, fileId)).toMatchObject({ status: 'imported', attempts: 1 });
    });

    it('a file done already is reported as done and not imported again', async () => {
      const fileId = await tracked('30700.json', [therapistLine({ id: 'h3', first: 'Ida', plz: '30700' })]);
      const hint = await hintOf(fileId);
      await processTherapistFile({ fileId, file: hint }, therapistImportDeps(ctx));
      const outbox = await db.sql<Array<{ n: number }>>`select count(*)::int as n from fleet.outbox`;
      const again = await processTherapistFile({ fileId, file: hint }, therapistImportDeps(ctx));
      expect(again).toMatchObject({ alreadyDone: true, status: 'imported' });
      expect((await db.sql<Array<{ n: number }>>`select count(*)::int as n from fleet.outbox`)[0]!.n).toBe(outbox[0]!.n);
      expect(await db.sql`select 1 from therapist_service.therapeuten where plz = '30700'`).toHaveLength(1);
    });

    it('a file changed on disk since it was registered is not imported from the new bytes: skipped, as without the hint', async () => {
      const fileId = await tracked('30800.json', [therapistLine({ id: 'h4', first: 'Jana', plz: '30800' })]);
      const hint = await hintOf(fileId);
      await writeFile(path.join(dir, '30800.json'), scraperFile([therapistLine({ id: 'h4', first: 'Jana', plz: '30800', phone: '0308 9' })]));
      const report = await processTherapistFile({ fileId, file: hint }, therapistImportDeps(ctx));
      expect(report.status).toBe('skipped');
      expect(report.reason).toMatch(/changed after it was registered/);
      expect(await db.sql`select 1 from therapist_service.therapeuten where plz = '30800'`).toHaveLength(0);
    });

    it('a file replaced by a named pipe after it was registered is skipped at once, not read (a read would wait for ever)', async () => {
      const fileId = await tracked('30900.json', [therapistLine({ id: 'h5', first: 'Lena', plz: '30900' })]);
      const hint = await hintOf(fileId);
      await rm(path.join(dir, '30900.json'));
      execFileSync('mkfifo', [path.join(dir, '30900.json')]);
      const timeout = new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5_000).unref());
      const report = await Promise.race([processTherapistFile({ fileId, file: hint }, therapistImportDeps(ctx)), timeout]);
      expect(report).not.toBe('hung');
      expect(report).toMatchObject({ status: 'skipped', reason: NOT_REGULAR_REASON });
      expect(await repo.getFile(ctx.database.db, fileId)).toMatchObject({ status: 'skipped', errorCode: 'file_not_regular' });
      expect(await db.sql`select 1 from therapist_service.therapeuten where plz = '30900'`).toHaveLength(0);
    });
  });
});
