import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Worker } from 'bullmq';
import { DrizzleQueryError } from 'drizzle-orm/errors';
import { PermanentError } from '../errors/index.js';
import { createLogger } from '../log/index.js';
import { createTestQueues } from '../testing/queues.js';
import { bindQueueWorker, closeWorkers, withSupersededAt, type Handlers } from './bind-worker.js';
import { catalog, deadLetterQueueName, type JobName, type Payload } from './catalog.js';
import { addDeadLetter, discardDeadLetter, listDeadLetters, requeueDeadLetter } from './dead-letter.js';
import { jobOptionsFor } from './queue-set.js';

let t: ReturnType<typeof createTestQueues>;
let workers: Worker[] = [];

beforeEach(() => {
  t = createTestQueues();
  workers = [];
});
afterEach(async () => {
  await closeWorkers(workers, 5_000);
  await t.close();
});

function bind(handlers: Handlers, queue: string, log = t.log) {
  const w = bindQueueWorker(queue, handlers, {
    connection: t.workerConnection(),
    prefix: t.prefix,
    log,
    metrics: t.metrics,
    queues: t.queues,
    concurrency: 2,
  });
  workers.push(w);
  return w;
}

async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Adds a job of the catalog with fewer attempts than its family's (a short test of running out). */
async function addWithAttempts<N extends JobName>(name: N, payload: Payload<N>, attempts: number): Promise<string> {
  const jobId = `${name}.${randomUUID()}`;
  await t.queues.queue(catalog[name].queue).add(name, payload, { ...jobOptionsFor(name, t.queues.backoffScale), attempts, jobId });
  return jobId;
}

describe('queues: retries, dead letters, idempotency', () => {
  it('retries a job that fails transiently twice, with growing backoff, and runs it three times', async () => {
    const runs: number[] = [];
    const lines: Array<{ msg: string; attempt?: number; nextAttemptWithinMs?: number }> = [];
    const w = bind(
      {
        'weekly-status': async (_p, h) => {
          runs.push(Date.now());
          if (h.attempt < 3) throw new Error('database went away');
          return { ok: true };
        },
      },
      'weekly-status',
      createLogger({ level: 'warn', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) }),
    );
    const completed = new Promise((resolve) => w.on('completed', resolve));
    // backoff 5 s scaled to 50 ms: retries after ~50 ms then ~100 ms (jitter shortens by up to half)
    const { jobId } = await t.queues.enqueue('weekly-status', { patientId: 1, isoWeek: '2026-W48' });
    await completed;
    expect(runs).toHaveLength(3);
    expect(runs[1]! - runs[0]!).toBeGreaterThanOrEqual(20);
    expect(runs[2]! - runs[1]!).toBeGreaterThanOrEqual(45);
    const job = await t.queues.queue('weekly-status').getJob(jobId);
    expect(job?.attemptsMade).toBe(3); // BullMQ counts the successful run too
    expect(await listDeadLetters(t.queues)).toEqual([]);
    // Each failed attempt's line says how long the work waits at most for the next (the scaled backoff, doubling).
    expect(lines.filter((l) => l.msg === 'job attempt failed: will retry').map((l) => [l.attempt, l.nextAttemptWithinMs])).toEqual([
      [1, 50],
      [2, 100],
    ]);
  });

  it('runs a job with a permanent error once and dead-letters it; requeue runs it again; discard removes it', async () => {
    let runs = 0;
    let fail = true;
    bind(
      {
        'patient-import': async () => {
          runs++;
          if (fail) throw new PermanentError('validation_failed', 'patient_data.anrede: expected Herr or Frau');
          return 'imported';
        },
      },
      'patient-import',
    );
    const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 7 });
    const [dead] = await until(async () => {
      const l = await listDeadLetters(t.queues);
      return l.length ? l : undefined;
    });
    expect(runs).toBe(1);
    expect(dead).toMatchObject({
      id: jobId,
      originalQueue: 'patient-import',
      originalJobId: jobId,
      name: 'patient-import',
      data: { ledgerId: 7 },
      code: 'validation_failed',
      attemptsMade: 1,
      deadLetterQueue: deadLetterQueueName('patient-import'),
    });
    expect(dead!.reason).toContain('patient_data.anrede');

    fail = false;
    const res = await requeueDeadLetter(t.queues, dead!.id);
    expect(res.state).toBe('requeued');
    await until(async () => (await t.queues.queue('patient-import').getJob(jobId))?.finishedOn && runs === 2);
    const job = await t.queues.queue('patient-import').getJob(jobId);
    expect(await job!.getState()).toBe('completed');
    expect(await listDeadLetters(t.queues)).toEqual([]);

    // a second failure, then discard
    fail = true;
    const second = await t.queues.enqueue('patient-import', { ledgerId: 8 });
    await until(async () => (await listDeadLetters(t.queues)).length === 1);
    // The dead letter is written just before BullMQ marks the job failed.
    await until(async () => (await (await t.queues.queue('patient-import').getJob(second.jobId))?.getState()) === 'failed');
    await discardDeadLetter(t.queues, second.jobId);
    expect(await listDeadLetters(t.queues)).toEqual([]);
    // Handled: no longer counted as failed (Bull Board would show it in red for its retention).
    expect(await t.queues.queue('patient-import').getJob(second.jobId)).toBeUndefined();
    expect(await t.queues.queue('patient-import').getJobCounts('failed')).toEqual({ failed: 0 });
  });

  it('two requeues of the same dead letter at once (two operators, a double click): one requeues, the other finds it gone; one run', async () => {
    let runs = 0;
    let fail = true;
    bind(
      {
        'patient-import': async () => {
          runs++;
          if (fail) throw new PermanentError('validation_failed', 'patient_data.plz: expected 5 digits');
        },
      },
      'patient-import',
    );
    const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 9 });
    await until(async () => (await listDeadLetters(t.queues)).length === 1);
    fail = false;
    const hooks: string[] = [];
    const beforeRequeue = async () => void hooks.push('reopen');
    const outcomes = await Promise.allSettled([
      requeueDeadLetter(t.queues, jobId, undefined, { beforeRequeue }),
      requeueDeadLetter(t.queues, jobId, undefined, { beforeRequeue }),
      discardDeadLetter(t.queues, jobId),
    ]);
    const fulfilled = outcomes.filter((o) => o.status === 'fulfilled');
    const rejected = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as Error] : []));
    expect(fulfilled).toHaveLength(1);
    expect(rejected.map((e) => e.name)).toEqual(['DeadLetterNotFound', 'DeadLetterNotFound']);
    // Requeued: its run has ended (a fixed pause let a slower run be read as still waiting); discarded: it stays failed.
    const state = await until(async () => {
      const s = await (await t.queues.queue('patient-import').getJob(jobId))?.getState();
      return (s === 'completed' || s === 'failed') && s;
    });
    // The first action wins: either requeued (ran once more, hook once) or discarded (not run).
    if ((fulfilled[0] as PromiseFulfilledResult<{ state?: string }>).value.state === 'requeued') {
      expect({ runs, hooks, state }).toEqual({ runs: 2, hooks: ['reopen'], state: 'completed' });
    } else {
      expect({ runs, hooks, state }).toEqual({ runs: 1, hooks: [], state: 'failed' });
    }
    expect(await listDeadLetters(t.queues)).toEqual([]);
  });

  it('a job that fails for good again while its requeue is under way keeps its new dead letter', async () => {
    const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 11 });
    const entry = { originalQueue: 'patient-import', originalJobId: jobId, name: 'patient-import', data: { ledgerId: 11 }, reason: 'first', code: 'validation_failed', attemptsMade: 1, enqueuedAt: null, failedAt: new Date().toISOString() };
    await t.queues.queue('patient-import').remove(jobId);
    await addDeadLetter(t.queues, entry);
    // The requeue puts the job back, then removes the old entry: a worker that fails the job again
    // in between adds its dead letter then (here: from the requeue's hook, so it is sure to fall in between).
    let again: Promise<string> | null = null;
    await requeueDeadLetter(t.queues, jobId, undefined, {
      beforeRequeue: async () => {
        again = addDeadLetter(t.queues, { ...entry, reason: 'second', failedAt: new Date().toISOString() });
        await new Promise((r) => setTimeout(r, 300));
      },
    });
    await again;
    const dead = await listDeadLetters(t.queues);
    expect(dead.map((d) => [d.id, d.reason])).toEqual([[jobId, 'second']]);
  });

  it('dead-letters a job whose attempts run out, with its reason and attempt count', async () => {
    let runs = 0;
    bind(
      {
        'weekly-status': async () => {
          runs++;
          throw new Error('database unavailable');
        },
      },
      'weekly-status',
    );
    await addWithAttempts('weekly-status', { patientId: 3, isoWeek: '2026-W48' }, 5);
    const [dead] = await until(async () => {
      const l = await listDeadLetters(t.queues, { queue: 'weekly-status' });
      return l.length ? l : undefined;
    });
    expect(runs).toBe(5);
    expect(dead).toMatchObject({ reason: 'database unavailable', attemptsMade: 5, code: null });
    const deadCount = (await t.metrics.registry.getSingleMetricAsString('fleet_jobs_dead_total')).trim();
    expect(deadCount).toContain('fleet_jobs_dead_total{queue="weekly-status"} 1');
  });

  it('a job whose handler names the run that supersedes it: retried up to that run, then failed without a dead letter (attempts left)', async () => {
    let runs = 0;
    // The run after the job: 1.5 s after it was added (retries 50 ms doubling: about 5 attempts fit before it).
    let supersededBy: Date | null = null;
    bind(
      {
        'weekly-status': withSupersededAt<'weekly-status'>(
          async () => {
            runs++;
            throw new Error('database unavailable');
          },
          (_p, job) => (supersededBy = new Date(job.enqueuedAt.getTime() + 1_500)),
        ),
      },
      'weekly-status',
    );
    const { jobId } = await t.queues.enqueue('weekly-status', { patientId: 4, isoWeek: '2026-W48' });
    const job = await until(async () => {
      const j = await t.queues.queue('weekly-status').getJob(jobId);
      return j?.finishedOn ? j : undefined;
    });
    expect(await job.getState()).toBe('failed');
    expect(runs).toBeGreaterThan(1);
    expect(job.attemptsMade).toBeLessThan(catalog['weekly-status'].retry.attempts);
    expect(job.failedReason).toBe(`superseded by the run scheduled for ${supersededBy!.toISOString()} (a retry could not begin before it): database unavailable`);
    await new Promise((r) => setTimeout(r, 300)); // the 'failed' event's own dead-lettering would have run by now
    expect(await listDeadLetters(t.queues)).toEqual([]);
    expect((await t.metrics.registry.getSingleMetricAsString('fleet_jobs_dead_total')).trim()).not.toContain('weekly-status');
  });

  it('a permanent error is dead-lettered at once, also when a later run would supersede the job', async () => {
    bind(
      {
        'weekly-status': withSupersededAt<'weekly-status'>(
          async () => {
            throw new PermanentError('bad_config', 'the template is missing');
          },
          (_p, job) => new Date(job.enqueuedAt.getTime() + 3_600_000),
        ),
      },
      'weekly-status',
    );
    const jobId = await addWithAttempts('weekly-status', { patientId: 5, isoWeek: '2026-W48' }, 10);
    const [dead] = await until(async () => {
      const l = await listDeadLetters(t.queues, { queue: 'weekly-status' });
      return l.length ? l : undefined;
    });
    expect(dead).toMatchObject({ id: jobId, code: 'bad_config', attemptsMade: 1 });
  });

  it("a database query error keeps the statement's parameters (row values) out of the dead letter and the job's failure", async () => {
    bind(
      {
        'weekly-status': async () => {
          const cause = Object.assign(new Error('deadlock detected'), { name: 'PostgresError', code: '40P01' });
          throw new DrizzleQueryError('update patienten set email = $1', ['erika@example.org'], cause);
        },
      },
      'weekly-status',
    );
    const jobId = await addWithAttempts('weekly-status', { patientId: 6, isoWeek: '2026-W48' }, 2);
    const [dead] = await until(async () => {
      const l = await listDeadLetters(t.queues, { queue: 'weekly-status' });
      return l.length ? l : undefined;
    });
    expect(dead).toMatchObject({ reason: 'database query failed: 40P01 deadlock detected' });
    const job = await t.queues.queue('weekly-status').getJob(jobId);
    expect(job!.failedReason).toBe('database query failed: 40P01 deadlock detected');
    expect(JSON.stringify([job!.failedReason, job!.stacktrace, dead])).not.toContain('erika@example.org');
  });

  it('tells a job of a job scheduler the time it was scheduled for (a job added by hand: none)', async () => {
    const seen: Array<Date | null | undefined> = [];
    bind({ 'weekly-tick': async (_p, h) => void seen.push(h.scheduledAt) }, 'weekly-fanout');
    await t.queues.enqueue('weekly-tick', {});
    const q = t.queues.queue('weekly-fanout');
    await q.upsertJobScheduler('probe', { pattern: '* * * * * *' }, { name: 'weekly-tick', data: {} }); // every second
    await until(async () => seen.length >= 2);
    await q.removeJobScheduler('probe');
    const [done] = (await q.getJobs(['completed'])).filter((j) => j.repeatJobKey === 'probe');
    expect(seen[0]).toBeNull();
    // The cron time itself (a whole second), not when the job was added or ran.
    expect(seen[1]).toEqual(new Date(Number(done!.id!.split(':').at(-1))));
    expect(seen[1]!.getTime() % 1000).toBe(0);
  });

  it('enqueuing the same idempotency key twice runs the job once', async () => {
    let runs = 0;
    const w = bind(
      {
        'email-send': async () => {
          runs++;
        },
      },
      'email',
    );
    const id = '5b0e7c1e-7a55-4a4e-9d0b-0b8f6c2b9f10';
    const a = await t.queues.enqueue('email-send', { deliveryId: id });
    const b = await t.queues.enqueue('email-send', { deliveryId: id });
    expect(a.jobId).toBe(b.jobId);
    await until(async () => runs > 0);
    await new Promise((r) => setTimeout(r, 300));
    await t.queues.enqueue('email-send', { deliveryId: id }); // kept as completed: still a no-op
    await new Promise((r) => setTimeout(r, 300));
    expect(runs).toBe(1);
    expect(w.isRunning()).toBe(true);
  });

  it('refuses a payload that does not match the catalog before it reaches Redis', async () => {
    await expect(t.queues.enqueue('patient-import', { ledgerId: -1 } as never)).rejects.toThrow(/ledgerId/);
    await expect(
      t.queues.enqueue('patient-import', { ledgerId: 1, objectName: 'Mustermann_Max.json' } as never),
    ).rejects.toThrow(PermanentError);
    expect(await t.queues.queue('patient-import').count()).toBe(0);
  });
});
