import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { Writable } from 'node:stream';
import { createLogger, silentLogger } from '../../libs/log/index.js';
import { jobNames } from '../../libs/queues/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { resolveRoles, roles, UnknownRoleError } from './roles.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';

let db: TestDatabase;
let ctx: FleetContext;
const queuePrefix = testQueuePrefix();

beforeAll(async () => {
  db = await createTestDatabase();
  ctx = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: queuePrefix.prefix, LOG_LEVEL: 'silent' }), silentLogger());
});
afterAll(async () => {
  await ctx.close();
  await queuePrefix.cleanup();
  await db.drop();
});

describe('roles', () => {
  it('every job name of the catalog has exactly one handler across all roles', async () => {
    const handledBy = new Map<string, string[]>();
    for (const [role, spec] of Object.entries(roles)) {
      for (const c of await spec.components(ctx)) {
        for (const name of c.handles ?? []) handledBy.set(name, [...(handledBy.get(name) ?? []), `${role}/${c.name}`]);
      }
    }
    for (const name of jobNames) expect(handledBy.get(name), `handlers of ${name}`).toHaveLength(1);
    expect([...handledBy.keys()].sort()).toEqual([...jobNames].sort());
  });

  // Signature checking was off by default without a word (REGISTRATION_SIGNING_SECRET is optional).
  it('a process running the patient import warns once at start when registration signatures are not checked', async () => {
    const messages = async (env: Record<string, string>) => {
      const lines: Array<{ level: number; msg: string }> = [];
      const stream = new Writable({ write: (chunk, _e, done) => (lines.push(JSON.parse(String(chunk))), done()) });
      const own = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: queuePrefix.prefix, ...env }), createLogger({ level: 'info', pretty: 'false' }, stream));
      try {
        await roles['patient-import']!.components(own);
        await roles['bucket-poller']!.components(own);
      } finally {
        await own.close();
      }
      return lines.filter((l) => l.level === 40).map((l) => l.msg);
    };
    expect(await messages({})).toEqual(['registration signatures are not checked: REGISTRATION_SIGNING_SECRET is not set']);
    expect(await messages({ REGISTRATION_SIGNING_SECRET: 'x'.repeat(32) })).toEqual([]);
  });

  it('--only takes a subset and names unknown roles', () => {
    expect(resolveRoles()).toEqual(Object.keys(roles));
    expect(resolveRoles('email, http')).toEqual(['email', 'http']);
    expect(() => resolveRoles('email,mailer')).toThrow(UnknownRoleError);
    expect(() => resolveRoles('email,mailer')).toThrow(/unknown role\(s\): mailer; known roles: .*email/);
  });

  it('--only with no role in it (an empty variable) is refused, not read as every role', () => {
    for (const only of ['', ' ', ',', ' , ']) {
      expect(() => resolveRoles(only), JSON.stringify(only)).toThrow(/--only names no role; known roles: .*email/);
    }
  });
});
