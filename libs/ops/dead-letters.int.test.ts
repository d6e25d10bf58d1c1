import { describe, expect, it } from 'vitest';
import { listAudit } from '../db/repositories/audit.js';
import { addDeadLetter, listDeadLetters } from '../queues/index.js';
import { useDatabaseAndQueues } from '../testing/db-and-queues.js';
import { requeueAll } from './dead-letters.js';

const f = useDatabaseAndQueues();

describe('requeueAll', () => {
  it('two operators requeueing all at once (CLI and /ops) both finish, and each dead letter is requeued once', async () => {
    const n = 60;
    for (let i = 1; i <= n; i++) {
      await addDeadLetter(f.t.queues, {
        originalQueue: 'weekly-status',
        originalJobId: `weekly-status.patient.${i}.week.2026-W51`,
        name: 'weekly-status',
        data: { patientId: i, isoWeek: '2026-W51' },
        reason: 'database was away',
        code: null,
        attemptsMade: 18,
        enqueuedAt: null,
        failedAt: new Date().toISOString(),
      });
    }
    const deps = { db: f.db.db, queues: f.t.queues, hooks: {} };
    const [a, b] = await Promise.allSettled([
      requeueAll(deps, { actor: 'ops-anna', reason: 'database is back' }, 'weekly-status'),
      requeueAll(deps, { actor: 'ops-ben', reason: 'database is back' }, 'weekly-status'),
    ]);
    expect(a.status).toBe('fulfilled');
    expect(b.status).toBe('fulfilled');
    const done = [...(a.status === 'fulfilled' ? a.value : []), ...(b.status === 'fulfilled' ? b.value : [])];
    expect(done).toHaveLength(n);
    expect(new Set(done.map((r) => r.view.originalJobId)).size).toBe(n);
    expect(await listDeadLetters(f.t.queues, { queue: 'weekly-status' })).toHaveLength(0);
    const audit = (await listAudit(f.db.db, 1000)).filter((r) => r.action === 'dlq.requeue');
    expect(audit).toHaveLength(n);
    expect(await f.t.queues.queue('weekly-status').getJobCounts('waiting')).toEqual({ waiting: n });
  });
});
