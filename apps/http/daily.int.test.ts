import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { dailyReport, dailyText, localTimeWithOffset, type DailyReport } from '../../libs/ops/daily.js';
import { addDeadLetter, fleetSchedulerIds, fleetSchedulers, recordBucketPollSuccess, recordOutboxRelayStatus, type FleetSchedulerId, type OutboxRelayRecord } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { isoWeekOf } from '../../libs/weekly/iso-week.js';
import { runCli } from '../cli/run-cli.js';
import { httpComponent, type HttpComponent } from './component.js';

const USER = 'operator';
const PASSWORD = 'daily view password';
const AUTH = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

let db: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;
let ctx: FleetContext;
let http: HttpComponent;
let base: string;

const env = () => ({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix });

/** A few rows of each kind: some in the last 24 hours, some before (outside the default window), with names in object names. */
async function seed() {
  const sql = db.sql;
  const ago = (hours: number) => new Date(Date.now() - hours * 3_600_000).toISOString();
  const ledger = (name: string, status: string, extra: { importedAt?: string; failedAt?: string; receivedAt?: string; duplicateKind?: string }) =>
    sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, imported_at, failed_at, received_at, duplicate_kind, reason)
      values ('b', ${`registrations/${name}.json`}, '1', 'gs://b/x', ${status}, ${extra.importedAt ?? null}, ${extra.failedAt ?? null}, ${extra.receivedAt ?? ago(0)}, ${extra.duplicateKind ?? null}, ${status === 'failed' ? 'patient_data.plz: expected 5 digits' : null})`;
  await ledger('Mustermann_Max_1', 'deleted', { importedAt: ago(1) });
  await ledger('Mustermann_Max_2', 'deleted', { importedAt: ago(5) });
  await ledger('Mustermann_Max_3', 'deleted', { importedAt: ago(30) }); // before the window
  await ledger('Mustermann_Max_4', 'deleted', { importedAt: ago(2), duplicateKind: 'same_token' });
  await ledger('Mustermann_Max_5', 'failed', { failedAt: ago(3) });
  await ledger('Mustermann_Max_6', 'failed', { failedAt: ago(40) }); // before the window, still waiting
  await ledger('Mustermann_Max_7', 'received', { receivedAt: ago(2) }); // open for 2 hours: stale
  await ledger('Mustermann_Max_8', 'discarded', { failedAt: ago(4) }); // failed in the window, discarded since
  await ledger('Mustermann_Max_9', 'discarded', { failedAt: ago(30) }); // failed before the window, discarded since
  await sql`update fleet.patient_import_ledger set discarded_at = ${ago(1)}, finished_at = ${ago(1)} where status = 'discarded'`;
  await ledger('Mustermann_Max_10', 'replaced', {}); // replaced by a newer upload before its import
  await sql`update fleet.patient_import_ledger set finished_at = ${ago(1)} where status = 'replaced'`;

  const [closed] = await sql<{ id: string }[]>`insert into fleet.therapist_import_runs (trigger, state, closed_at) values ('watcher', 'closed', ${ago(1)}) returning id`;
  await sql`insert into fleet.therapist_import_runs (trigger, state) values ('watcher', 'collecting')`;
  await sql`insert into fleet.therapist_import_runs (trigger, state, closed_at) values ('cli', 'closed', ${ago(50)})`;
  const file = (path: string, status: string, finishedAt: string | null, failed = 0) =>
    sql`insert into fleet.therapist_import_files (run_id, path, status, finished_at, counts) values (${closed!.id}, ${path}, ${status}, ${finishedAt}, ${JSON.stringify({ failed })}::jsonb)`;
  await file('20261201/52074.json', 'imported', ago(1));
  await file('20261201/52076.json', 'imported', ago(2));
  await file('20261201/52078.json', 'partial', ago(1), 3);
  await file('20261201/52080.json', 'failed', ago(1));
  await file('20261201/aachen.json', 'skipped', ago(1));
  await file('20261101/52074.json', 'imported', ago(30)); // before the window
  await file('20261201/52082.json', 'queued', null);

  const week = isoWeekOf(new Date(), 'Europe/Berlin');
  const delivery = (key: string, kind: string, status: string, times: { createdAt: string; updatedAt: string; sentAt?: string }) =>
    sql`insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, status, created_at, updated_at, sent_at)
      values (${key}, ${kind}, 'erika.mustermann@example.org', 'noreply@curavani.com', 'Betreff', '<p>x</p>', 'x', ${status}, ${times.createdAt}, ${times.updatedAt}, ${times.sentAt ?? null})`;
  await delivery('staff.1', 'staff', 'sent', { createdAt: ago(2), updatedAt: ago(2), sentAt: ago(2) });
  await delivery('staff.2', 'staff', 'sent', { createdAt: ago(30), updatedAt: ago(30), sentAt: ago(30) }); // before the window
  await delivery('staff.3', 'staff', 'failed', { createdAt: ago(3), updatedAt: ago(3) });
  await delivery('staff.4', 'staff', 'pending', { createdAt: ago(2), updatedAt: ago(2) }); // pending for 2 hours: stale
  await delivery(`weekly.1.${week}`, 'weekly-status', 'sent', { createdAt: ago(0), updatedAt: ago(0), sentAt: ago(0) });
  await delivery(`weekly.2.${week}`, 'weekly-status', 'dropped', { createdAt: ago(0), updatedAt: ago(0) });
  await delivery(`weekly.3.${week}`, 'weekly-status', 'pending', { createdAt: ago(0), updatedAt: ago(0) });
  await delivery('weekly.4.2020-W01', 'weekly-status', 'sent', { createdAt: ago(0), updatedAt: ago(0), sentAt: ago(0) }); // another week

  // Searching patients with an active search: two without an email address, one with an invalid
  // one (they get no weekly email), one with a valid one; an opted-out one and one not searching
  // without an address are not counted. Their names and addresses must not show.
  const searcher = async (ref: string, email: string | null, status = 'auf_der_Suche', optOut = false) => {
    const [p] = await sql<{ id: number }[]>`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status, weekly_update_opt_out)
      values ('Frau', 'weiblich', 'Erika', 'Mustermann', ${email}, ${ref}, ${status}, ${optOut}) returning id`;
    await sql`insert into matching_service.platzsuche (patient_id, status) values (${p!.id}, 'aktiv')`;
    return p!.id;
  };
  unreachableIds = [await searcher('DAILY1', null), await searcher('DAILY2', '  '), await searcher('DAILY3', 'mustermann-ohne-at.example.org')];
  await searcher('DAILY4', 'erika@example.org');
  await searcher('DAILY5', null, 'auf_der_Suche', true);
  await searcher('DAILY6', null, 'in_Therapie');

  const event = (parked: boolean, published: boolean) =>
    sql`insert into fleet.outbox (event_id, event_type, version, topic, key, producer, payload, occurred_at, published_at, parked_at, park_reason)
      values (gen_random_uuid(), 'patient.registered', 1, 'patients', '1', 'fleet', '{}'::jsonb, now(), ${published ? ago(0) : null}, ${parked ? ago(0) : null}, ${parked ? 'too large' : null})`;
  await event(false, false);
  await event(false, false);
  await event(true, false);
  await event(false, true);

  for (const [queue, id] of [['email', 'email-send.a'], ['email', 'email-send.b'], ['patient-import', 'patient-import.c']] as const) {
    await addDeadLetter(ctx.queues, {
      originalQueue: queue, originalJobId: id, name: queue === 'email' ? 'email-send' : queue, data: {}, reason: 'database went away', code: null, attemptsMade: 5, enqueuedAt: null, failedAt: new Date().toISOString(),
    });
  }
  // Two of the three schedules registered (the retention sweep's is missing), the email queue paused.
  await registerSchedule(ctx, 'bucket-poll');
  await registerSchedule(ctx, 'weekly-status-emails');
  await ctx.queues.queue('email').pause();
  return week;
}

/** Registers one of the fleet's schedules as the role that owns it does at start. */
async function registerSchedule(c: FleetContext, id: FleetSchedulerId) {
  const common = { queues: c.queues, log: c.log, schedulerId: id, pattern: '0 3 * * *', timeZone: 'Europe/Berlin' };
  const s = fleetSchedulers[id];
  if (s.jobName === 'bucket-poll') await ensureJobScheduler({ ...common, jobName: s.jobName, data: { trigger: 'schedule' } });
  else await ensureJobScheduler({ ...common, jobName: s.jobName, data: {} });
}

let week: string;
let unreachableIds: number[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  q = testQueuePrefix();
  const config = loadConfig({ HTTP_PORT: '0', LOG_PRETTY: 'false', LOG_LEVEL: 'silent', DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD, ...env() });
  ctx = openContext(config, createLogger(config.log, undefined));
  http = httpComponent(ctx, {});
  await http.start();
  base = `http://127.0.0.1:${http.address()!.port}`;
  week = await seed();
}, 60_000);

afterAll(async () => {
  await http?.stop(5_000);
  await ctx?.close();
  await db?.drop();
  await q?.cleanup();
});

/** The figures the seed gives for the last 24 hours. */
const expected = () => ({
  hours: 24,
  timeZone: 'Europe/Berlin',
  source: { queuePrefix: q.prefix, redis: '127.0.0.1:6379/0', fleetSeen: true },
  status: 'attention',
  patientImports: { imported: 2, duplicate: 1, failed: 1, discarded: 1, replaced: 1, failedWaiting: 2, open: 1, oldestOpenAgeSeconds: expect.closeTo(7200, -2) },
  therapistImports: {
    runsClosed: 1,
    runsOpen: 1,
    files: { imported: 2, partial: 1, failed: 1, skipped: 1 },
    therapistsFailed: 3,
    superseded: { failed: 0, partial: 0 },
    therapistsFailedOpen: 3,
    skippedOpen: { misfit: 1, tooLarge: 0, unreadable: 0 },
    filesWaiting: 1,
    oldestWaitingAgeSeconds: expect.any(Number),
  },
  emails: { sent: 3, failed: 1, dropped: 1, pending: 2, oldestPendingAgeSeconds: expect.closeTo(7200, -2) },
  weeklyEmails: { isoWeek: week, sent: 1, skipped: 1, pending: 1, failed: 0, unreachable: { noEmail: 2, invalidEmail: 1 } },
  deadLetters: { total: 3, byQueue: expect.objectContaining({ email: 2, 'patient-import': 1, 'weekly-status': 0 }) },
  outbox: { unpublished: 2, parked: 1, oldestUnpublishedAgeSeconds: expect.any(Number), kafkaConfigured: true, kafka: expect.objectContaining({ state: 'no_relay', brokers: null }) },
  schedules: [
    { id: 'bucket-poll', queue: 'bucket-poll', role: 'bucket-poller', cronVariable: 'POLL_CRON', registered: true, next: expect.stringMatching(/T0[12]:00:00\.000Z$/), nextLocal: expect.stringMatching(/ 03:00 \+0[12]:00$/) },
    { id: 'weekly-status-emails', queue: 'weekly-fanout', role: 'weekly', cronVariable: 'WEEKLY_CRON', registered: true, next: expect.any(String), nextLocal: expect.any(String) },
    { id: 'patient-import-retention', queue: 'patient-import-retention', role: 'patient-import', cronVariable: 'RETENTION_CRON', registered: false, next: null, nextLocal: null },
  ],
  pausedQueues: ['email'],
});

// No poll of the bucket is recorded in the seeded Redis: bucket_not_polled.
const attentionKeys = ['schedules_missing', 'queues_paused', 'bucket_not_polled', 'dead_letters', 'patient_imports_failed', 'therapist_imports_failed', 'therapist_files_skipped', 'weekly_unreachable', 'emails_failed', 'outbox_parked', 'patient_imports_stale', 'emails_stale'];

describe('daily health view', () => {
  it('says all in order when nothing needs a look (an empty database, no dead letters)', async () => {
    const empty = await createTestDatabase();
    const q2 = testQueuePrefix();
    const config = loadConfig({ LOG_LEVEL: 'silent', DATABASE_URL: empty.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q2.prefix });
    const c2 = openContext(config, createLogger(config.log, undefined));
    try {
      const now = new Date();
      const deps = { database: c2.database, queues: c2.queues, now, weeklyTimeZone: 'Europe/Berlin', pollSchedule: { pattern: '0 * * * *', timeZone: 'Europe/Berlin' }, source: { queuePrefix: q2.prefix, redis: '127.0.0.1:6379/0' } };
      for (const id of fleetSchedulerIds) await registerSchedule(c2, id);

      // The hourly poll: none recorded (Redis new), then the last one that went through 2 hours ago, then one just now.
      const none = await dailyReport(deps);
      expect(none.patientImports.lastPoll).toMatchObject({ at: null, ageSeconds: null, overdue: true });
      expect(none.attention).toEqual([
        {
          key: 'bucket_not_polled',
          message: `the registration bucket's poll due at ${none.patientImports.lastPoll.dueByLocal} has not gone through (it is retried up to the next one), none is recorded (none since Redis was set up or lost its data): new registrations wait in the bucket; the bucket-poller's log says why (job attempt failed), fleet poll tries one now`,
          command: 'fleet status',
        },
      ]);
      // Due: the last full hour at least 30 minutes ago.
      const due = new Date(none.patientImports.lastPoll.dueBy);
      expect(due.getUTCMinutes()).toBe(0);
      expect(now.getTime() - due.getTime()).toBeGreaterThanOrEqual(30 * 60_000);
      expect(now.getTime() - due.getTime()).toBeLessThan(90 * 60_000);
      expect(dailyText(none)).toContain('\n  last successful bucket poll none recorded\n');
      await recordBucketPollSuccess(c2.queues, new Date(now.getTime() - 2 * 3_600_000));
      const late = await dailyReport(deps);
      expect(late.patientImports.lastPoll).toMatchObject({ ageSeconds: 7200, overdue: true });
      expect(late.attention.map((a) => a.message)).toEqual([expect.stringContaining(`has not gone through (it is retried up to the next one), the last one that did was at ${late.patientImports.lastPoll.atLocal} (2 h ago)`)]);
      expect(dailyText(late)).toContain(`\n  last successful bucket poll ${late.patientImports.lastPoll.atLocal} (2 h ago)\n`);
      await recordBucketPollSuccess(c2.queues, now);

      const r = await dailyReport(deps);
      expect(r.patientImports.lastPoll).toMatchObject({ at: now.toISOString(), ageSeconds: 0, overdue: false });
      expect(r).toMatchObject({ status: 'ok', attention: [], deadLetters: { total: 0 }, patientImports: { open: 0, oldestOpenAgeSeconds: null } });
      expect(dailyText(r)).toContain('\nall in order\n');
      expect(dailyText(r)).not.toContain('Kafka');

      // an event unpublished for 2 hours: with Kafka configured, look at the relay; without, the view says nothing will be published
      await empty.sql`insert into fleet.outbox (event_id, event_type, version, topic, key, producer, payload, occurred_at, created_at)
        values (gen_random_uuid(), 'patient.created', 1, 'patient-events', '1', 'fleet', '{}'::jsonb, now() - interval '2 hours 30 seconds', now() - interval '2 hours 30 seconds')`;
      // Kafka as the fleet's relays record it in Redis, not as this process's KAFKA_BROKERS (it has none).
      const relay = (r: Partial<OutboxRelayRecord>) =>
        recordOutboxRelayStatus(c2.queues, {
          process: 'curavani-fleet:outbox-relay@host:1',
          role: 'leader',
          brokers: ['kafka-1:9092'],
          kafkaUp: true,
          kafkaDownSince: null,
          kafkaError: null,
          missingTopics: [],
          lastPublishedAt: null,
          updatedAt: new Date().toISOString(),
          ...r,
        });
      const noRelay = await dailyReport(deps);
      expect(noRelay.attention).toEqual([
        {
          key: 'outbox_stale',
          message: 'the oldest unpublished outbox event is 2 h old (1 unpublished): no outbox relay runs (no process with the outbox-relay role holds its lease or recorded itself within a minute): events wait in the outbox until one does',
          command: 'fleet events stats',
        },
      ]);
      await relay({});
      const withKafka = await dailyReport(deps);
      expect(withKafka.outbox.kafka).toMatchObject({ state: 'publishing', brokers: ['kafka-1:9092'] });
      expect(withKafka.attention).toEqual([{ key: 'outbox_stale', message: 'the oldest unpublished outbox event is 2 h old (1 unpublished)', command: 'fleet events stats' }]);
      expect(dailyText(withKafka)).toContain('\n  - the oldest unpublished outbox event is 2 h old (1 unpublished) — fleet events stats\n');
      expect(dailyText(withKafka)).toContain('\n  Kafka reachable (brokers kafka-1:9092): the leading relay publishes\n');
      // A Kafka outage is said as one (not as Kafka not configured), with since when and why.
      const downSince = new Date(Date.now() - 20 * 60_000);
      await relay({ kafkaUp: false, kafkaDownSince: downSince.toISOString(), kafkaError: 'Connection error: connect ECONNREFUSED 10.0.0.5:9092' });
      const down = await dailyReport(deps);
      const downLine = `Kafka unreachable since ${localTimeWithOffset(downSince)} (brokers kafka-1:9092): Connection error: connect ECONNREFUSED 10.0.0.5:9092; events wait in the outbox and go out in order once it answers`;
      expect(down.attention).toEqual([
        { key: 'kafka_unreachable', message: `${downLine} (1 unpublished)`, command: 'fleet events stats' },
        { key: 'outbox_stale', message: 'the oldest unpublished outbox event is 2 h old (1 unpublished)', command: 'fleet events stats' },
      ]);
      expect(dailyText(down)).toContain(`\n  ${downLine}\n`);
      expect(dailyText(down)).not.toContain('not configured');
      await relay({ role: 'disabled', brokers: null, kafkaUp: null });
      const withoutKafka = await dailyReport(deps);
      expect(withoutKafka.attention).toEqual([
        {
          key: 'outbox_stale',
          message: 'the oldest unpublished outbox event is 2 h old (1 unpublished): Kafka not configured on the fleet (its outbox relays run with KAFKA_BROKERS empty): events wait in the outbox and are published once it is set',
          command: 'fleet events stats',
        },
      ]);
      expect(dailyText(withoutKafka)).toContain('\n  Kafka not configured on the fleet (its outbox relays run with KAFKA_BROKERS empty): events wait in the outbox and are published once it is set\n');

      // A schedule removed behind the fleet's back (Redis lost its data, or a hand on redis-cli) and a paused queue
      await c2.queues.queue('bucket-poll').removeJobScheduler('bucket-poll');
      await c2.queues.queue('patient-import').pause();
      const gone = await dailyReport(deps);
      expect(gone.attention.slice(0, 2)).toEqual([
        {
          key: 'schedules_missing',
          message: '1 schedule is not registered, so nothing runs it: bucket-poll (POLL_CRON, role bucket-poller); a process with that role registers it at start and within SCHEDULE_CHECK_MS when it is missing: is one running? Else start one',
        },
        { key: 'queues_paused', message: '1 queue is paused, its jobs wait until resumed on the dashboard: patient-import', page: '/dashboard' },
      ]);
      expect(dailyText(gone)).toContain('\nschedules\n  bucket-poll  NOT REGISTERED (POLL_CRON, role bucket-poller)\n  weekly-status-emails  next ');
      expect(dailyText(gone)).toContain('\n  paused queues: patient-import\n');

      // A failed therapist file needs a look until a later file of its postcode is imported; then it does not.
      const file = (path: string, postcode: string, status: string) =>
        empty.sql`insert into fleet.therapist_import_files (path, postcode, status, finished_at, counts) values (${path}, ${postcode}, ${status}, now(), '{"failed": 0}'::jsonb)`;
      await file('20261201/52080.json', '52080', 'failed');
      await file('20261201/52082.json', '52082', 'partial');
      const failing = await dailyReport(deps);
      expect(failing.attention.find((a) => a.key === 'therapist_imports_failed')).toEqual({
        key: 'therapist_imports_failed',
        message: '1 therapist file failed, 1 therapist file partly imported',
        page: '/imports',
        command: 'fleet imports list --kind therapist --status failed,partial',
      });
      await file('20261208/52080.json', '52080', 'imported');
      const fixed = await dailyReport(deps);
      expect(fixed.therapistImports).toMatchObject({ files: { failed: 1, partial: 1, imported: 1 }, superseded: { failed: 1, partial: 0 } });
      expect(fixed.attention.find((a) => a.key === 'therapist_imports_failed')?.message).toBe(
        '1 therapist file partly imported; 1 more replaced since by a newer file of the same postcode',
      );
      // A newer partial file replaces the older one, but needs a look itself.
      await file('20261208/52082.json', '52082', 'partial');
      expect((await dailyReport(deps)).attention.find((a) => a.key === 'therapist_imports_failed')?.message).toBe(
        '1 therapist file partly imported; 2 more replaced since by a newer file of the same postcode',
      );
      await file('20261215/52082.json', '52082', 'imported');
      expect((await dailyReport(deps)).attention.map((a) => a.key)).not.toContain('therapist_imports_failed');

      // The failed therapists counted are those of the files that still need a look, not of those replaced since.
      const counted = (path: string, postcode: string, status: string, failed: number) =>
        empty.sql`insert into fleet.therapist_import_files (path, postcode, status, finished_at, counts) values (${path}, ${postcode}, ${status}, now(), ${JSON.stringify({ failed })}::jsonb)`;
      await counted('20261201/52090.json', '52090', 'partial', 1);
      await counted('20261208/52090.json', '52090', 'imported', 0);
      await counted('20261208/52092.json', '52092', 'partial', 4);
      await counted('20261208/52094.json', '52094', 'partial', 5);
      const partly = await dailyReport(deps);
      expect(partly.therapistImports).toMatchObject({ therapistsFailed: 10, therapistsFailedOpen: 9 });
      expect(partly.attention.find((a) => a.key === 'therapist_imports_failed')).toEqual({
        key: 'therapist_imports_failed',
        message: '2 therapist files partly imported (9 therapists failed); 4 more replaced since by a newer file of the same postcode',
        page: '/imports',
        command: 'fleet imports list --kind therapist --status failed,partial',
      });
      await counted('20261215/52092.json', '52092', 'imported', 0);
      await counted('20261215/52094.json', '52094', 'imported', 0);

      // Skipped files that need a person are named with what to do, unless replaced since.
      const skipped = (path: string, postcode: string | null, reason: string, hash: string | null = null) =>
        empty.sql`insert into fleet.therapist_import_files (path, postcode, status, reason, content_hash, finished_at) values (${path}, ${postcode}, 'skipped', ${reason}, ${hash}, now())`;
      await skipped('10141_neu.json', null, 'name does not fit', 'c'.repeat(64));
      await skipped('Notizen.json', null, 'name does not fit');
      await skipped('52096.json', '52096', 'too large to import: 17.0 MB, more than SCRAPER_FILE_MAX_MB=16 allows');
      await skipped('52098.json', '52098', 'cannot read the file (EACCES); once it can be read it is imported');
      await skipped('20261201/52099.json', '52099', 'superseded by the newer folder 20261208/52099.json');
      const needy = await dailyReport(deps);
      expect(needy.therapistImports.skippedOpen).toEqual({ misfit: 2, tooLarge: 1, unreadable: 1 });
      expect(needy.attention.find((a) => a.key === 'therapist_files_skipped')).toEqual({
        key: 'therapist_files_skipped',
        message:
          '4 therapist files were not imported and need a person: 2 have names that do not fit <plz>.json, YYYYMMDD/<plz>.json or urgent/<plz>.json: rename or move them; 1 is larger than SCRAPER_FILE_MAX_MB: check what the scraper wrote, or raise the limit and restart the fleet; 1 cannot be read: fix its permissions (they are imported once that is done)',
        page: '/imports',
        command: 'fleet imports list --kind therapist --status skipped',
      });
      expect(dailyText(needy)).toContain('\n  of the skipped files, needing a person: name does not fit 2  too large 1  unreadable 1\n');
      // Renamed to its right name (its content imported), a smaller file imported, permissions fixed: nothing left.
      await empty.sql`insert into fleet.therapist_import_files (path, postcode, status, content_hash, finished_at) values ('10141.json', '10141', 'imported', ${'c'.repeat(64)}, now())`;
      await empty.sql`insert into fleet.therapist_import_files (path, postcode, status, finished_at) values ('52096.json', '52096', 'imported', now()), ('52098.json', '52098', 'imported', now())`;
      expect((await dailyReport(deps)).therapistImports.skippedOpen).toEqual({ misfit: 1, tooLarge: 0, unreadable: 0 });
      await empty.sql`delete from fleet.therapist_import_files where path = 'Notizen.json'`;
      expect((await dailyReport(deps)).attention.map((a) => a.key)).not.toContain('therapist_files_skipped');
    } finally {
      await c2.close();
      await empty.drop();
      await q2.cleanup();
    }
  });

  it('/daily/api: the counts of the last 24 hours and what needs attention; ?hours widens the window; a bad one is 400', async () => {
    expect((await fetch(`${base}/daily/api`)).status).toBe(401);
    const res = await fetch(`${base}/daily/api`, { headers: { authorization: AUTH } });
    expect(res.status).toBe(200);
    const r = (await res.json()) as DailyReport;
    expect(r).toMatchObject(expected());
    expect(r.attention.map((a) => a.key)).toEqual(attentionKeys);
    expect(r.window.toLocal).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2} \+0[12]:00$/);
    expect(JSON.stringify(r)).not.toMatch(/Mustermann|example\.org/);

    const wide = (await (await fetch(`${base}/daily/api?hours=48`, { headers: { authorization: AUTH } })).json()) as DailyReport;
    expect(wide).toMatchObject({ hours: 48, patientImports: { imported: 3, failed: 2, discarded: 2, replaced: 1 }, therapistImports: { runsClosed: 1, files: { imported: 3 } }, emails: { sent: 4 } });

    for (const bad of ['0', 'abc', '1.5', '10000']) {
      const b = await fetch(`${base}/daily/api?hours=${bad}`, { headers: { authorization: AUTH } });
      expect(b.status).toBe(400);
      expect(await b.json()).toEqual({ error: expect.stringContaining('hours: expected a whole number from 1 to 744') });
    }
  });

  it('/daily: the page needs the operator login and shows the overall line and the numbers, no personal data', async () => {
    expect((await fetch(`${base}/daily`)).status).toBe(401);
    const res = await fetch(`${base}/daily`, { headers: { authorization: AUTH } });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('<h1>Daily health</h1>');
    expect(text).toContain('<strong>Needs attention:</strong>');
    expect(text).toContain('3 dead letters wait for an operator (email 2, patient-import 1)');
    expect(text).toContain('— <a href="/ops">open /ops</a></li>'); // each attention item links the page that deals with it
    expect(text).toContain('1 outbox event is parked (refused by Kafka, or held behind one that was) — <code>fleet events parked</code></li>');
    expect(text).toContain('<tr><th>patient-import-retention</th><td class="text">not registered (RETENTION_CRON, role patient-import)</td></tr>');
    expect(text).toMatch(/<tr><th>bucket-poll<\/th><td class="text">next \d{4}-\d{2}-\d{2} 03:00 \+0[12]:00<\/td><\/tr>/);
    expect(text).toContain('1 queue is paused, its jobs wait until resumed on the dashboard: email — <a href="/dashboard">open /dashboard</a>');
    expect(text).toContain('1 therapist file failed, 1 therapist file partly imported (3 therapists failed) — <a href="/imports">open /imports</a>');
    expect(text).not.toContain('fleet imports list'); // the web view links the page, the text view names the command
    expect(text).toContain('<p class="muted">no outbox relay runs (no process with the outbox-relay role holds its lease or recorded itself within a minute): events wait in the outbox until one does</p>');
    expect(text).toContain('<tr><th>imported</th><td class="num">2</td></tr>');
    expect(text).toContain('<tr><th>failed, discarded since</th><td class="num">1</td></tr>');
    expect(text).toContain('<tr><th>replaced by a newer upload before import</th><td class="num">1</td></tr>');
    expect(text).toContain('<tr><th>therapists failed</th><td class="num">3</td></tr>');
    expect(text).toContain(`Weekly emails <span class="muted">(${week})</span>`);
    expect(text).toContain('<tr><th>total waiting</th><td class="num">3</td></tr>');
    expect(text).toContain('<tr><th>oldest open</th><td class="num">2 h</td></tr>');
    expect(text).toContain('<a href="/daily">Daily health</a>'); // in the nav of the operator pages
    expect(text).not.toMatch(/Mustermann|example\.org/);
    expect((await fetch(`${base}/daily?hours=-1`, { headers: { authorization: AUTH } })).status).toBe(400);
  });

  it('the dashboard links it from its menu', async () => {
    const html = await (await fetch(`${base}/dashboard`, { headers: { authorization: AUTH } })).text();
    expect(html).toContain('/daily');
  });

  it('fleet daily --json prints the same report; the text says what needs attention; a bad --hours is exit 2', { timeout: 90_000 }, async () => {
    const json = await runCli(['daily', '--json'], { ...env(), LOG_LEVEL: 'silent' });
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const r = JSON.parse(json.stdout) as DailyReport;
    expect(r).toMatchObject(expected());
    expect(r.attention.map((a) => a.key)).toEqual(attentionKeys);

    const text = await runCli(['daily', '--hours', '48'], { ...env(), LOG_LEVEL: 'silent' });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('daily health: last 48 h');
    // The hourly poll due (the last full hour at least 30 minutes ago), in the view's zone.
    const due = /poll due at (\d{4}-\d{2}-\d{2} \d{2}:00 \+0[12]:00) has not gone through/.exec(text.stdout)?.[1];
    expect(due).toBeDefined();
    expect(text.stdout).toContain(
      'needs attention:\n  - 1 schedule is not registered, so nothing runs it: patient-import-retention (RETENTION_CRON, role patient-import); a process with that role registers it at start and within SCHEDULE_CHECK_MS when it is missing: is one running? Else start one\n' +
        '  - 1 queue is paused, its jobs wait until resumed on the dashboard: email — /dashboard\n' +
        `  - the registration bucket's poll due at ${due} has not gone through (it is retried up to the next one), none is recorded (none since Redis was set up or lost its data): new registrations wait in the bucket; the bucket-poller's log says why (job attempt failed), fleet poll tries one now — fleet status\n` +
        '  - 3 dead letters wait for an operator (email 2, patient-import 1) — fleet dlq list or /ops\n' +
        '  - 2 failed patient registration imports wait for an operator (2 in the window) — fleet imports list --status failed or /imports\n',
    );
    // Every import record of the window in one final state or another: discarded failures and replaced uploads too.
    expect(text.stdout).toContain('imported 3  duplicate 1  failed 2  discarded 2  replaced 1  (failed, waiting for an operator: 2)');
    // Its times carry their offset, as fleet status's carry Z: 03:00 in Berlin is not 03:00 UTC.
    expect(text.stdout).toMatch(/\n {2}bucket-poll {2}next \d{4}-\d{2}-\d{2} 03:00 \+0[12]:00\n/);
    expect(text.stdout).not.toMatch(/Mustermann|example\.org/);

    const bad = await runCli(['daily', '--hours', '0'], { ...env(), LOG_LEVEL: 'silent' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('fleet: --hours: expected a whole number from 1 to 744 (got "0")');
  });
});

describe('searching patients who get no weekly email', () => {
  // They were only counted in the fan-out's log line: staff could not see who never gets one.
  it('are counted in fleet daily and /daily (an attention item only for addresses that are not valid), listed by id only in fleet weekly unreachable and its page', { timeout: 90_000 }, async () => {
    const r = (await (await fetch(`${base}/daily/api`, { headers: { authorization: AUTH } })).json()) as DailyReport;
    // No email address is a lasting state (a registration may leave it out): counted, not "attention".
    expect(r.weeklyEmails.unreachable).toEqual({ noEmail: 2, invalidEmail: 1 });
    expect(r.attention.find((a) => a.key === 'weekly_unreachable')).toEqual({
      key: 'weekly_unreachable',
      message: '1 patient searching for a place has an email address that is not valid and gets no weekly status email until it is corrected on the platform (their patient ids are listed)',
      page: '/daily/weekly-unreachable',
      command: 'fleet weekly unreachable',
    });
    const daily = await runCli(['daily'], { ...env(), LOG_LEVEL: 'silent' });
    expect(daily.stdout).toContain(
      '  - 1 patient searching for a place has an email address that is not valid and gets no weekly status email until it is corrected on the platform (their patient ids are listed) — fleet weekly unreachable or /daily/weekly-unreachable\n',
    );
    expect(daily.stdout).toContain('  searching patients who get none (now): no email address 2  no valid email address 1  (fleet weekly unreachable)\n');
    const pageHtml = await (await fetch(`${base}/daily`, { headers: { authorization: AUTH } })).text();
    expect(pageHtml).toContain('corrected on the platform (their patient ids are listed) — <a href="/daily/weekly-unreachable">open /daily/weekly-unreachable</a></li>');
    expect(pageHtml).toContain('<p class="muted">Their patient ids: <a href="/daily/weekly-unreachable">/daily/weekly-unreachable</a></p>');

    const [a, b, c] = unreachableIds as [number, number, number];
    const json = await runCli(['weekly', 'unreachable', '--json'], { ...env(), LOG_LEVEL: 'silent' });
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({
      count: 3,
      noEmail: 2,
      invalidEmail: 1,
      patients: [{ patientId: a, why: 'no_email' }, { patientId: b, why: 'no_email' }, { patientId: c, why: 'invalid_email' }],
    });
    const text = await runCli(['weekly', 'unreachable'], { ...env(), LOG_LEVEL: 'silent' });
    const rows = text.stdout.split('\n');
    expect(rows[2]).toMatch(/^patient {2,}why$/);
    expect(rows.slice(3, 6).map((l) => l.trim().split(/\s+/)[0])).toEqual([a, b, c].map(String));
    expect(text.stdout).toMatch(new RegExp(`\\n${c} +no valid email address\\n`));
    expect(text.stdout).toContain('They get the weekly email from the next fan-out on once their address is corrected on the platform.');
    const list = await fetch(`${base}/daily/weekly-unreachable`, { headers: { authorization: AUTH } });
    expect(list.status).toBe(200);
    const listHtml = await list.text();
    expect(listHtml).toContain(`<tr><td class="num">${c}</td><td class="text">no valid email address</td></tr>`);
    expect((await fetch(`${base}/daily/weekly-unreachable`)).status).toBe(401);
    for (const out of [JSON.stringify(r), daily.stdout, pageHtml, json.stdout, text.stdout, listHtml]) {
      expect(out).not.toMatch(/Mustermann|Erika|example\.org/);
    }
  });
});
