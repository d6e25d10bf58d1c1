import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../libs/config/index.js';
import { queueDelivery, type NewDelivery } from '../../libs/db/repositories/deliveries.js';
import { silentLogger, type Logger } from '../../libs/log/index.js';
import type { StillWantedChecks } from '../../libs/mail/index.js';
import { openContext, workerComponent, type Component } from '../../libs/runtime/index.js';
import { ResendStandIn, type StandInOptions } from '../../libs/testing/resend-stand-in.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { emailSweepComponent } from './sweep-component.js';
import { emailHandlers } from './worker.js';

export interface EmailHarnessOptions {
  databaseUrl: string;
  queuePrefix: string;
  driver?: 'resend' | 'outbox';
  env?: Record<string, string>;
  standIn?: StandInOptions;
  stillWanted?: StillWantedChecks;
  log?: Logger;
}

/**
 * Email delivery wired as in production (real PostgreSQL, Redis, BullMQ and the real
 * `resend` SDK) against a local Resend stand-in or an outbox folder of its own.
 * For integration tests and the benchmark.
 */
export async function startEmailHarness(o: EmailHarnessOptions) {
  const standIn = new ResendStandIn({ apiKey: 're_test_key', ...o.standIn });
  await standIn.start();
  const dir = await mkdtemp(path.join(tmpdir(), 'email-'));
  const env: Record<string, string> = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: o.databaseUrl,
    // The Redis the test helpers (deleteQueueKeys, cleanup) use too: TEST_REDIS_URL, not the default.
    REDIS_URL: TEST_REDIS_URL,
    DB_POOL_MAX: '10',
    QUEUE_PREFIX: o.queuePrefix,
    RETRY_BACKOFF_SCALE: '0.01',
    MAIL_DRIVER: o.driver ?? 'resend',
    RESEND_API_KEY: 're_test_key',
    RESEND_BASE_URL: standIn.url,
    UNSUBSCRIBE_SECRET: 'email-harness-unsubscribe-secret-0123456789',
    MAIL_OUTBOX_DIR: path.join(dir, 'outbox'),
    MAIL_REQUEST_TIMEOUT_MS: '1000',
    ...o.env,
  };
  const ctx = openContext(loadConfig(env), o.log ?? silentLogger());
  const components: Component[] = [];
  let n = 0;
  return {
    ctx,
    standIn,
    outboxDir: env.MAIL_OUTBOX_DIR!,
    /** Records a delivery (its own transaction) and returns its id; `enqueue` adds its job. */
    async addDelivery(over: Partial<NewDelivery> = {}, opts: { enqueue?: boolean } = {}) {
      const i = ++n;
      const { id } = await queueDelivery(ctx.database.db, {
        idempotencyKey: `test.${o.queuePrefix}.${i}`,
        kind: 'test',
        toAddress: `patient${i}@example.com`,
        fromAddress: 'Curavani <noreply@curavani.com>',
        subject: `Ihre Suche – Woche ${i}`,
        html: `<p>Hallo ${i}</p>`,
        text: `Hallo ${i}`,
        ...over,
      });
      if (opts.enqueue !== false) await ctx.queues.enqueue('email-send', { deliveryId: id });
      return id;
    },
    async startWorkers(opts: { stillWanted?: StillWantedChecks } = {}) {
      const stillWanted = opts.stillWanted ?? o.stillWanted;
      const c = workerComponent(ctx, 'email', emailHandlers(ctx, stillWanted ? { stillWanted } : {}));
      await c.start();
      components.push(c);
    },
    async startSweep() {
      const c = emailSweepComponent(ctx);
      await c.start();
      components.push(c);
    },
    async stopWorkers() {
      for (const c of components.splice(0).reverse()) await c.stop(5_000).catch(() => {});
    },
    async close() {
      for (const c of components.splice(0).reverse()) await c.stop(5_000).catch(() => {});
      await ctx.close();
      await standIn.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export type EmailHarness = Awaited<ReturnType<typeof startEmailHarness>>;

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
