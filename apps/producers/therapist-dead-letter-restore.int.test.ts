import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { recordAudit } from '../../libs/db/repositories/audit.js';
import { silentLogger } from '../../libs/log/index.js';
import { addDeadLetter, listDeadLetters, therapistImportJobId } from '../../libs/queues/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { deleteQueueKeys, testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { watcherTestEnv } from './watcher-test-config.js';
import { notImportedOutcome } from '../../workers/therapist-import/fixtures.js';
import { restoreTherapistDeadLetters, therapistImportRepo as repo } from '../../workers/therapist-import/index.js';

/**
 * Restoring the dead letters of therapist files that failed their job (Redis lost its data),
 * with what an earlier release left behind: discards it did not mark on the file (only in the
 * audit table), and dead letters under the job id it used (the content hash alone).
 */
let database: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;
let ctx: FleetContext;
let hashSeq = 0;

beforeAll(async () => {
  database = await createTestDatabase();
  q = testQueuePrefix();
  ctx = openContext(loadConfig(watcherTestEnv({ databaseUrl: database.url, redisUrl: TEST_REDIS_URL, queuePrefix: q.prefix, dropDir: tmpdir() })), silentLogger());
});
afterAll(async () => {
  await ctx?.close();
  await q?.cleanup();
  await database?.drop();
});

/** A file of a watcher run that ran out of retries, as the import leaves it. */
async function failedFile(name: string) {
  const db = ctx.database.db;
  const runId = await repo.openRun(db, 'watcher', 'sealed');
  const contentHash = (++hashSeq).toString(16).padStart(64, '0');
  const { file } = await repo.registerFile(db, { runId, path: name, postcode: name.slice(0, 5), dateFolder: null, urgent: false, contentHash, sizeBytes: 10 });
  await repo.finishFile(db, file.id, notImportedOutcome('gave_up', 'import failed after retries: database error: connection terminated'));
  return { ...file, contentHash };
}

const dlqFileIds = async () =>
  (await listDeadLetters(ctx.queues, { queue: 'therapist-import' })).map((d) => (d.data as { fileId: number }).fileId).sort((a, b) => a - b);

describe('therapist dead letters after an upgrade', () => {
  it('a dead letter an operator discarded before the file recorded discards (only its audit row says so) is not restored', async () => {
    await deleteQueueKeys(q.prefix);
    const f = await failedFile('52080.json');
    // What a discard wrote before migration 0014 (or a process of that release during a rolling
    // deploy): the audit row, nothing on the file.
    await recordAudit(ctx.database.db, {
      actor: 'ops',
      action: 'dlq.discard',
      target: `therapist-import/${therapistImportJobId(f.contentHash, f.id)}`,
      reason: 'the scraper writes the area again next week',
    });
    await restoreTherapistDeadLetters(ctx);
    expect(await dlqFileIds()).not.toContain(f.id);
    const row = await repo.getFile(ctx.database.db, f.id);
    expect(repo.deadLetterStateOf(row!, 'watcher')).toBe('discarded');
  });

  it('so is one discarded under the job id of the releases before the row id was in it', async () => {
    await deleteQueueKeys(q.prefix);
    const f = await failedFile('52081.json');
    await recordAudit(ctx.database.db, { actor: 'ops', action: 'dlq.discard', target: `therapist-import/therapist-import.sha256.${f.contentHash}` });
    await restoreTherapistDeadLetters(ctx);
    expect(await dlqFileIds()).not.toContain(f.id);
  });

  it('a file whose dead letter waits under the earlier job id gets no second one', async () => {
    await deleteQueueKeys(q.prefix);
    const f = await failedFile('52082.json');
    await addDeadLetter(ctx.queues, {
      originalQueue: 'therapist-import',
      originalJobId: `therapist-import.sha256.${f.contentHash}`,
      name: 'therapist-import',
      data: { fileId: f.id },
      reason: 'database error: connection terminated',
      code: null,
      attemptsMade: 18,
      enqueuedAt: null,
      failedAt: new Date().toISOString(),
    });
    await restoreTherapistDeadLetters(ctx);
    expect((await dlqFileIds()).filter((id) => id === f.id)).toEqual([f.id]);
  });

  it('a failed file with no discard anywhere still gets its dead letter back', async () => {
    await deleteQueueKeys(q.prefix);
    const f = await failedFile('52083.json');
    await restoreTherapistDeadLetters(ctx);
    expect(await dlqFileIds()).toContain(f.id);
    const row = await repo.getFile(ctx.database.db, f.id);
    expect(repo.deadLetterStateOf(row!, 'watcher')).toBe('waiting');
  });
});
