import { afterAll, describe, expect, it } from 'vitest';
import type { Worker } from 'bullmq';
import { createLogger } from '../log/index.js';
import { createMetrics } from '../metrics/index.js';
import { createTestQueues, workerHoldingItsJob } from '../testing/queues.js';
import { until } from '../testing/until.js';
import { bindQueueWorker, closeWorkers } from './bind-worker.js';

const t = createTestQueues();
afterAll(() => t.close());

describe('a job whose process died while running it', () => {
  // Found in a drill with several fleet processes: the jobs of a process killed with SIGKILL ran
  // again in the others 40-60 s later (lock duration plus stalled interval), and no process said
  // so: the logs showed nothing between the crash and the jobs' second attempt.
  it('is said at warn (queue, job id) and counted by the process that puts it back, which runs it', { timeout: 30_000 }, async () => {
    // The process that dies: its job never ends, and its lock is no longer renewed.
    const { worker: dying, running, finish: release } = workerHoldingItsJob(t, { lockDurationMs: 1_000, stalledIntervalMs: 500 });
    const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
    const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    const metrics = createMetrics();
    const ran: string[] = [];
    let survivor: Worker | null = null;
    try {
      const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 8181 });
      await running;
      await dying.close(true); // as SIGKILL: no renewal, the job stays active until its lock expires
      survivor = bindQueueWorker(
        'patient-import',
        {
          'patient-import': async (_p, ctx) => {
            ran.push(String(ctx.jobId));
            return 'ok';
          },
        },
        { connection: t.workerConnection(), prefix: t.prefix, log, metrics, queues: t.queues, concurrency: 1, lockDurationMs: 1_000, stalledIntervalMs: 500 },
      );
      await until('the stalled job ran again', () => ran.length > 0);
      expect(ran).toEqual([jobId]);
      const said = lines.filter((l) => /job stalled/.test(l.msg));
      expect(said).toHaveLength(1);
      expect(said[0]).toMatchObject({ level: 40, queue: 'patient-import', jobId });
      const counted = await metrics.stalled.get();
      expect(counted.values).toEqual([expect.objectContaining({ labels: { queue: 'patient-import' }, value: 1 })]);
    } finally {
      release();
      await closeWorkers(survivor ? [survivor, dying] : [dying], 5_000);
    }
  });
});
