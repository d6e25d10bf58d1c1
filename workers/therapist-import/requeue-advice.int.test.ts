import { describe, expect, it } from 'vitest';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import { withRequeueAdvice } from '../../libs/ops/dead-letters.js';
import { addDeadLetter, listDeadLetters, therapistImportJobId } from '../../libs/queues/index.js';
import { useDatabaseAndQueues } from '../../libs/testing/db-and-queues.js';
import { therapistImportDeadLetterHook } from './dead-letters.js';

const f = useDatabaseAndQueues();

/** A file row in `status` with a dead letter of its job, as a job that died twice leaves them. */
async function fileWithDeadLetter(n: number, status: 'imported' | 'partial' | 'failed'): Promise<number> {
  const runId = await repo.openRun(f.db.db, 'watcher', 'sealed');
  const hash = `${'ab'.repeat(31)}${String(n).padStart(2, '0')}`;
  const { file } = await repo.registerFile(f.db.db, { runId, path: `5206${n}.json`, postcode: `5206${n}`, dateFolder: null, urgent: false, contentHash: hash, sizeBytes: 100 });
  await f.db.sql`update fleet.therapist_import_files set status = ${status}, attempts = 1,
    error_code = ${status === 'failed' ? 'worker_died' : null}, finished_at = now() where id = ${file.id}`;
  await addDeadLetter(f.t.queues, {
    originalQueue: 'therapist-import',
    originalJobId: therapistImportJobId(hash, file.id),
    name: 'therapist-import',
    data: { fileId: file.id },
    reason: 'job stalled more than allowable limit',
    code: null,
    attemptsMade: 1,
    enqueuedAt: null,
    failedAt: new Date().toISOString(),
  });
  return file.id;
}

describe('therapist import dead letters: what a requeue would do (/ops, fleet dlq list)', () => {
  // The crash drill (scripts/drill/therapist-crash.ts): a job killed twice after its file's commit
  // left a dead letter with nothing said, reading as a file that was not imported; the file was
  // imported and nothing was left to do.
  it('says of a file imported before its job died that nothing is left to do, and nothing of a failed one', async () => {
    const imported = await fileWithDeadLetter(1, 'imported');
    const partial = await fileWithDeadLetter(2, 'partial');
    const failed = await fileWithDeadLetter(3, 'failed');

    const entries = await withRequeueAdvice({ db: f.db.db, hooks: { 'therapist-import': therapistImportDeadLetterHook } }, await listDeadLetters(f.t.queues));
    const advice = new Map(entries.map((e) => [(e.data as { fileId: number }).fileId, e.requeueAdvice]));
    expect(advice.get(imported)).toBe(
      `File ${imported} was imported before its job failed: nothing is left to do. A requeue runs the job, which finds the file done and writes nothing; discard this dead letter.`,
    );
    expect(advice.get(partial)).toMatch(new RegExp(`^File ${partial} was imported \\(partial\\) before its job failed: nothing is left to do\\.`));
    expect(advice.get(failed)).toBeUndefined();
  });
});
