import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { createTestQueues } from '../../libs/testing/queues.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';

const fixture = fileURLToPath(new URL('./fixtures/slow-worker-process.ts', import.meta.url));

let db: TestDatabase;
let t: ReturnType<typeof createTestQueues>;
let redis: Redis;

beforeAll(async () => {
  db = await createTestDatabase();
  redis = new Redis(TEST_REDIS_URL);
});
const children: ChildProcess[] = [];
afterAll(async () => {
  // a failed assertion must not leave a fixture process behind
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  redis.disconnect();
  await db.drop();
});

function startProcess(env: Record<string, string>): { child: ChildProcess; started: Promise<void>; exited: Promise<number | null>; output(): string } {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
    env: { ...process.env, DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: t.prefix, LOG_LEVEL: 'info', LOG_PRETTY: 'false', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  const started = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"fleet started"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`fixture exited (${code}) before start: ${out}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, started, exited, output: () => out };
}

async function waitFor(fn: () => Promise<boolean>, timeoutMs = 20_000) {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const counter = async (kind: 'started' | 'finished', jobId: string) => Number((await redis.get(`{${t.prefix}}:test:${kind}:${jobId}`)) ?? 0);

describe('graceful shutdown', () => {
  it('SIGTERM while a job is active: waits for it, exits 0, the job completes once', async () => {
    t = createTestQueues();
    try {
      const p = startProcess({ SLOW_JOB_MS: '1500', SHUTDOWN_TIMEOUT_MS: '10000' });
      await p.started;
      const { jobId } = await t.queues.enqueue('weekly-status', { patientId: 1, isoWeek: '2026-W48' });
      await waitFor(async () => (await counter('started', jobId)) === 1);
      const signalledAt = Date.now();
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      expect(Date.now() - signalledAt).toBeGreaterThanOrEqual(1000);
      const job = await t.queues.queue('weekly-status').getJob(jobId);
      expect(await job!.getState()).toBe('completed');
      expect(await counter('started', jobId)).toBe(1);
      expect(await counter('finished', jobId)).toBe(1);
    } finally {
      await t.close();
    }
  });

  it('past the time limit the process exits anyway and the job is picked up again, not lost', async () => {
    t = createTestQueues();
    try {
      const first = startProcess({ SLOW_JOB_MS: '4000', SHUTDOWN_TIMEOUT_MS: '300', SLOW_LOCK_MS: '1500' });
      await first.started;
      const { jobId } = await t.queues.enqueue('weekly-status', { patientId: 2, isoWeek: '2026-W48' });
      await waitFor(async () => (await counter('started', jobId)) === 1);
      const signalledAt = Date.now();
      first.child.kill('SIGTERM');
      expect(await first.exited).toBe(0);
      expect(Date.now() - signalledAt).toBeLessThan(3000);
      expect(await counter('finished', jobId)).toBe(0);

      const second = startProcess({ SLOW_JOB_MS: '100', SHUTDOWN_TIMEOUT_MS: '5000', SLOW_LOCK_MS: '1500' });
      await second.started;
      await waitFor(async () => (await counter('finished', jobId)) === 1, 30_000);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      const job = await t.queues.queue('weekly-status').getJob(jobId);
      expect(await job!.getState()).toBe('completed');
      expect(await counter('started', jobId)).toBe(2);
    } finally {
      await t.close();
    }
  });
});

describe('graceful shutdown of several roles', () => {
  it('SIGTERM stops every role taking work at once and drains them within one SHUTDOWN_TIMEOUT_MS, not one limit per role', async () => {
    t = createTestQueues();
    try {
      const p = startProcess({ SLOW_SECOND: '1', SLOW_JOB_MS: '4000', SHUTDOWN_TIMEOUT_MS: '2000', SLOW_LOCK_MS: '30000' });
      await p.started;
      const a = await t.queues.enqueue('weekly-status', { patientId: 3, isoWeek: '2026-W48' });
      const b = await t.queues.enqueue('patient-import', { ledgerId: 3 });
      await waitFor(async () => (await counter('started', a.jobId)) === 1 && (await counter('started', b.jobId)) === 1);
      const signalledAt = Date.now();
      p.child.kill('SIGTERM');
      // The process has begun to stop (every role stops taking work as it says so).
      await waitFor(async () => p.output().includes('"msg":"fleet stopping"'), 10_000);
      // work that arrives while the process drains is left for another process
      const late = await t.queues.enqueue('weekly-status', { patientId: 4, isoWeek: '2026-W48' });
      expect(await p.exited).toBe(0);
      // both roles drained at the same time: about one limit (2 s), not one per role (4 s)
      expect(Date.now() - signalledAt).toBeLessThan(3500);
      expect(await counter('started', late.jobId)).toBe(0);
      expect(await t.queues.queue('weekly-status').getJob(late.jobId).then((j) => j!.getState())).toBe('waiting');
    } finally {
      await t.close();
    }
  });
});

describe('shutdown while Redis does not answer (stopped with SIGSTOP, hung)', () => {
  it('SIGTERM: the process exits soon after SHUTDOWN_TIMEOUT_MS, saying it dropped the Redis connections, instead of living until Redis answers again', async () => {
    // BullMQ's close and QUIT waited for Redis: "fleet stopped" never came, and the process
    // outlived the shutdown limit (and a pod's grace period) for as long as Redis was silent.
    t = createTestQueues();
    const proxy = tcpProxy({ host: new URL(TEST_REDIS_URL).hostname, port: Number(new URL(TEST_REDIS_URL).port || 6379) });
    await proxy.open();
    try {
      const p = startProcess({ REDIS_URL: `redis://127.0.0.1:${proxy.port}`, SHUTDOWN_TIMEOUT_MS: '1000' });
      await p.started;
      proxy.hang();
      p.child.kill('SIGTERM');
      const code = await Promise.race([p.exited, new Promise((r) => setTimeout(() => r('still running 30 s after SIGTERM'), 30_000))]);
      expect(code, p.output()).toBe(0);
      expect(p.output()).toContain('"msg":"fleet stopped"');
      expect(p.output()).toMatch(/"gaveUp":\[[^\]]*"redis producer"[^\]]*\].*"msg":"closing: redis did not answer in time; its connections were dropped without waiting"/);
    } finally {
      await proxy.close();
      await t.close();
    }
  });
});

describe('the README run command', () => {
  it('`npm start` stops on a SIGTERM sent to npm (a process manager stops the pid it started): the fleet shuts down, no process is left', async () => {
    const dirs = await mkdtemp(path.join(tmpdir(), 'npm-start-'));
    const queues = createTestQueues();
    const child = spawn('npm', ['start'], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        REDIS_URL: TEST_REDIS_URL,
        QUEUE_PREFIX: queues.prefix,
        LOG_LEVEL: 'info',
        LOG_PRETTY: 'false',
        HTTP_PORT: '0',
        SCRAPER_DROP_DIR: path.join(dirs, 'scraper'),
        LOCAL_BUCKET_DIR: path.join(dirs, 'bucket'),
        MAIL_OUTBOX_DIR: path.join(dirs, 'outbox'),
        BACKUP_DIR: path.join(dirs, 'backup'),
        FAILED_DIR: path.join(dirs, 'failed'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(async () => out.includes('"msg":"fleet started"'), 60_000);
    const fleetPid = Number(/"pid":(\d+)[^\n]*"msg":"fleet started"/.exec(out)![1]);
    expect(fleetPid).not.toBe(child.pid);

    child.kill('SIGTERM');
    await exited;
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitFor(async () => !alive(fleetPid), 20_000).catch(() => {
      process.kill(fleetPid, 'SIGKILL');
      throw new Error(`the fleet (pid ${fleetPid}) still runs after npm got SIGTERM:\n${out}`);
    });
    expect(out).toContain('"msg":"fleet stopped"');
    await rm(dirs, { recursive: true, force: true });
    await queues.close(); // and the keys the fleet made under the prefix
  }, 90_000);
});
