import type { Database } from '../db/client.js';
import { deliveryActivity } from '../db/repositories/deliveries.js';
import { outboxBacklog } from '../db/repositories/outbox-relay.js';
import { ledgerActivity } from '../db/repositories/patient-import.js';
import { importActivity, importBacklog } from '../db/repositories/therapist-import.js';
import { weeklyDeliveryCounts, weeklyUnreachableCounts } from '../db/repositories/weekly-status.js';
import {
  bucketPollDueBy,
  countDeadLetters,
  fleetSeenUnderPrefix,
  lastBucketPollSuccess,
  pausedQueues,
  redisTargetWithDb,
  schedulerStates,
  type QueueSet,
  type QueueSource,
} from '../queues/index.js';
import type { FleetContext } from '../runtime/index.js';
import { isoWeekOf, isoWeekRange } from '../weekly/iso-week.js';
import { outboxKafkaLine, outboxKafkaState, type OutboxKafkaState } from './outbox-kafka.js';

/**
 * The daily health view (`fleet daily`, /daily): what happened in the last hours and what
 * waits now, counts and ids only (no names, no object names). Reads the same repositories as
 * the metrics gauges, `fleet status` and `fleet events stats`.
 */

/** Times on the view are shown in this zone. */
export const DAILY_TIME_ZONE = 'Europe/Berlin';
export const DEFAULT_DAILY_HOURS = 24;
/** Longest window: a month. */
export const MAX_DAILY_HOURS = 24 * 31;
/** Something that waits longer than this needs a look (an open import, a pending email, an unpublished event). */
export const STALE_AFTER_SECONDS = 3600;
/** The page that lists the patients who get no weekly email (ids only), as `fleet weekly unreachable` does. */
export const WEEKLY_UNREACHABLE_PAGE = '/daily/weekly-unreachable';
/** Why a searching patient gets no weekly email, in staff's words (`fleet weekly unreachable` and its page). */
export const WEEKLY_UNREACHABLE_WHY = { no_email: 'no email address', invalid_email: 'no valid email address' } as const;

export interface DailyAttention {
  /** Stable key, e.g. `dead_letters`. */
  key: string;
  message: string;
  /** The operator page that deals with it (the web view links it). */
  page?: string;
  /** The CLI command that shows it (the text view names it). */
  command?: string;
}

export interface DailyReport {
  generatedAt: string;
  hours: number;
  timeZone: string;
  /** The queue prefix and Redis (`host:port/db`) the queue figures are read from, and whether a fleet has used that prefix there. */
  source: QueueSource;
  window: { from: string; to: string; fromLocal: string; toLocal: string };
  staleAfterSeconds: number;
  status: 'ok' | 'attention';
  /** What needs a look, most urgent first; empty when all is in order. */
  attention: DailyAttention[];
  patientImports: {
    imported: number;
    duplicate: number;
    /** Failed in the window and not requeued or discarded since (a requeued one that imports counts as imported). */
    failed: number;
    /** Failed in the window (or discarded there while still open) and discarded by an operator since. */
    discarded: number;
    /** Not imported: replaced in the bucket by a newer upload of the same name (final in the window). */
    replaced: number;
    failedWaiting: number;
    open: number;
    oldestOpenAgeSeconds: number | null;
    /**
     * The last poll of the registration bucket that went through (any process; null: none since
     * Redis was set up or lost its data), and the scheduled poll (POLL_CRON) it should not be
     * older than (`bucketPollDueBy`: the last one at least 30 minutes ago).
     */
    lastPoll: { at: string | null; atLocal: string | null; ageSeconds: number | null; dueBy: string; dueByLocal: string; overdue: boolean };
  };
  therapistImports: {
    runsClosed: number;
    runsOpen: number;
    files: { imported: number; partial: number; failed: number; skipped: number };
    therapistsFailed: number;
    /** Of the failed and partial files: those a later import of the same postcode has replaced (no longer need a look). */
    superseded: { failed: number; partial: number };
    /** The therapists failed in the failed and partial files not replaced since: those the attention line counts. */
    therapistsFailedOpen: number;
    /** Skipped files that need a person, not replaced since: a name that does not fit, too large (SCRAPER_FILE_MAX_MB), unreadable. */
    skippedOpen: { misfit: number; tooLarge: number; unreadable: number };
    filesWaiting: number;
    oldestWaitingAgeSeconds: number | null;
  };
  emails: { sent: number; failed: number; dropped: number; pending: number; oldestPendingAgeSeconds: number | null };
  /**
   * unreachable: patients who would get the weekly email (searching, an active search, no
   * opt-out) but have no email address or no plausible one, now: they get none, week after week.
   */
  weeklyEmails: { isoWeek: string; sent: number; skipped: number; pending: number; failed: number; unreachable: { noEmail: number; invalidEmail: number } };
  deadLetters: { total: number; byQueue: Record<string, number> };
  /** The fleet's job schedulers as Redis holds them now; `next` in UTC and in the view's zone (with its offset, as every `*Local` time). */
  schedules: Array<{ id: string; queue: string; role: string; cronVariable: string; registered: boolean; next: string | null; nextLocal: string | null }>;
  /** Queues paused now (Bull Board's pause): their jobs wait until resumed. */
  pausedQueues: string[];
  /**
   * kafka: Kafka as the fleet's outbox relays see it (the relay lease in PostgreSQL, what the
   * relays record in Redis), not this process's KAFKA_BROKERS. kafkaConfigured false: the running
   * relays have KAFKA_BROKERS empty, stay idle, and every event waits here.
   */
  outbox: { unpublished: number; parked: number; oldestUnpublishedAgeSeconds: number | null; kafkaConfigured: boolean; kafka: OutboxKafkaState };
}

export interface DailyDeps {
  database: Database;
  queues: QueueSet;
  now: Date;
  /** WEEKLY_TZ: the ISO week is the weekly emails' week. */
  weeklyTimeZone: string;
  /** POLL_CRON and POLL_TZ: when the bucket poll is due. */
  pollSchedule: { pattern: string; timeZone: string };
  /** QUEUE_PREFIX and REDIS_URL's `host:port/db`, as the report names them. */
  source: { queuePrefix: string; redis: string };
}

/** The daily view's inputs from a process's context, as of now. */
export function dailyDepsOf(ctx: FleetContext): DailyDeps {
  return {
    database: ctx.database,
    queues: ctx.queues,
    now: ctx.clock.now(),
    weeklyTimeZone: ctx.config.weekly.timeZone,
    pollSchedule: { pattern: ctx.config.patientImport.pollCron, timeZone: ctx.config.patientImport.pollTimeZone },
    source: { queuePrefix: ctx.config.queues.prefix, redis: redisTargetWithDb(ctx.config.queues.redisUrl) },
  };
}

/** The window as a usage error names it: a whole number of hours, 1 to MAX_DAILY_HOURS. */
export function parseDailyHours(raw: string | undefined): number | string {
  if (raw === undefined || raw === '') return DEFAULT_DAILY_HOURS;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isInteger(n) || n < 1 || n > MAX_DAILY_HOURS) {
    return `hours: expected a whole number from 1 to ${MAX_DAILY_HOURS} (got ${JSON.stringify(raw)})`;
  }
  return n;
}

const LOCAL_MINUTE = new Intl.DateTimeFormat('sv-SE', { timeZone: DAILY_TIME_ZONE, dateStyle: 'short', timeStyle: 'short' });
const LOCAL_SECOND = new Intl.DateTimeFormat('sv-SE', { timeZone: DAILY_TIME_ZONE, dateStyle: 'short', timeStyle: 'medium' });

/** `2026-12-04 21:17` (or `2026-12-04 21:17:05`) in DAILY_TIME_ZONE: the staff's time, on /daily and the operator pages. */
export function localTime(d: Date, to: 'minute' | 'second' = 'minute'): string {
  return (to === 'second' ? LOCAL_SECOND : LOCAL_MINUTE).format(d);
}

const OFFSET = new Intl.DateTimeFormat('en-GB', { timeZone: DAILY_TIME_ZONE, timeZoneName: 'longOffset' });

/**
 * `2026-12-04 21:17 +01:00`: localTime with the zone's UTC offset at that time, as every time of
 * the daily view (text, page, JSON `*Local`) is shown, so it reads unambiguously next to `fleet
 * status`'s UTC times (`2026-12-04T20:17:00Z`) and across the change to and from summer time.
 */
export function localTimeWithOffset(d: Date): string {
  const name = OFFSET.formatToParts(d).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  return `${localTime(d)} ${name === 'GMT' ? '+00:00' : name.replace('GMT', '')}`;
}

/** Whole seconds from `from` to `now` (0 for a time ahead of `now`: clocks of two machines). */
export function secondsSince(from: Date, now: Date): number {
  return Math.max(0, Math.round((now.getTime() - from.getTime()) / 1000));
}

/** An age as people read it: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`; `–` for none. */
export function formatAge(seconds: number | null): string {
  if (seconds === null) return '–';
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

const many = (n: number, one: string, more: string) => `${n} ${n === 1 ? one : more}`;
const stale = (age: number | null) => age !== null && age > STALE_AFTER_SECONDS;

function attentionOf(r: Omit<DailyReport, 'status' | 'attention'>): DailyAttention[] {
  const out: DailyAttention[] = [];
  const add = (key: string, message: string, where: { page?: string; command?: string } = {}) => out.push({ key, message, ...where });
  // Nothing of a fleet under the prefix (a terminal without the fleet's QUEUE_PREFIX or
  // REDIS_URL): said instead of every schedule missing and the poll overdue, which would advise
  // starting processes that most likely run already.
  const seen = r.source.fleetSeen;
  if (!seen) {
    add(
      'queue_prefix_unused',
      `no fleet has used queue prefix "${r.source.queuePrefix}" on redis ${r.source.redis} (no job, schedule or worker of any queue): is QUEUE_PREFIX (and REDIS_URL) the one the fleet runs with? The schedules, dead letters and last poll below are empty for that reason`,
    );
  }
  const missing = seen ? r.schedules.filter((x) => !x.registered) : [];
  if (missing.length) {
    const list = missing.map((x) => `${x.id} (${x.cronVariable}, role ${x.role})`).join(', ');
    add(
      'schedules_missing',
      `${many(missing.length, 'schedule is', 'schedules are')} not registered, so nothing runs ${missing.length === 1 ? 'it' : 'them'}: ${list}; ${missing.length === 1 ? 'a process with that role registers it' : 'a process with the role named registers each'} at start and within SCHEDULE_CHECK_MS when it is missing: is one running? Else start one`,
    );
  }
  if (r.pausedQueues.length) {
    add('queues_paused', `${many(r.pausedQueues.length, 'queue is', 'queues are')} paused, ${r.pausedQueues.length === 1 ? 'its' : 'their'} jobs wait until resumed on the dashboard: ${r.pausedQueues.join(', ')}`, {
      page: '/dashboard',
    });
  }
  const poll = r.patientImports.lastPoll;
  // A missing schedule is said above; a poll that keeps failing leaves no dead letter (the next one takes over).
  if (seen && poll.overdue && !missing.some((x) => x.id === 'bucket-poll')) {
    const last = poll.at ? `the last one that did was at ${poll.atLocal} (${formatAge(poll.ageSeconds)} ago)` : 'none is recorded (none since Redis was set up or lost its data)';
    add(
      'bucket_not_polled',
      `the registration bucket's poll due at ${poll.dueByLocal} has not gone through (it is retried up to the next one), ${last}: new registrations wait in the bucket; the bucket-poller's log says why (job attempt failed), fleet poll tries one now`,
      { command: 'fleet status' },
    );
  }
  if (r.deadLetters.total > 0) {
    const queues = Object.entries(r.deadLetters.byQueue).filter(([, n]) => n > 0).map(([q, n]) => `${q} ${n}`).join(', ');
    add('dead_letters', `${many(r.deadLetters.total, 'dead letter waits', 'dead letters wait')} for an operator (${queues})`, { page: '/ops', command: 'fleet dlq list' });
  }
  if (r.patientImports.failedWaiting > 0) {
    add('patient_imports_failed', `${many(r.patientImports.failedWaiting, 'failed patient registration import waits', 'failed patient registration imports wait')} for an operator (${r.patientImports.failed} in the window)`, {
      page: '/imports',
      command: 'fleet imports list --status failed',
    });
  }
  const tf = r.therapistImports.files;
  const sup = r.therapistImports.superseded;
  // A failed or partial file that a later import of its postcode has replaced needs no look.
  const failedOpen = tf.failed - sup.failed;
  const partialOpen = tf.partial - sup.partial;
  if (failedOpen + partialOpen > 0) {
    const files = [
      ...(failedOpen ? [`${many(failedOpen, 'therapist file', 'therapist files')} failed`] : []),
      ...(partialOpen ? [`${many(partialOpen, 'therapist file', 'therapist files')} partly imported`] : []),
    ].join(', ');
    // Only the therapists of the files that still need a look: a replaced file's are no one's task.
    const open = r.therapistImports.therapistsFailedOpen;
    const therapists = open ? ` (${many(open, 'therapist', 'therapists')} failed)` : '';
    const replaced = sup.failed + sup.partial ? `; ${sup.failed + sup.partial} more replaced since by a newer file of the same postcode` : '';
    // The list shows the newest 50 by default: asked for enough to hold every file counted here.
    const listed = tf.failed + tf.partial;
    add('therapist_imports_failed', `${files}${therapists}${replaced}`, {
      page: '/imports',
      command: `fleet imports list --kind therapist --status failed,partial${listed > 50 ? ` --limit ${listed}` : ''}`,
    });
  }
  const sk = r.therapistImports.skippedOpen;
  if (sk.misfit + sk.tooLarge + sk.unreadable > 0) {
    const kinds = [
      ...(sk.misfit ? [`${many(sk.misfit, 'has a name', 'have names')} that ${sk.misfit === 1 ? 'does' : 'do'} not fit <plz>.json, YYYYMMDD/<plz>.json or urgent/<plz>.json: rename or move ${sk.misfit === 1 ? 'it' : 'them'}`] : []),
      ...(sk.tooLarge ? [`${sk.tooLarge} ${sk.tooLarge === 1 ? 'is' : 'are'} larger than SCRAPER_FILE_MAX_MB: check what the scraper wrote, or raise the limit and restart the fleet`] : []),
      ...(sk.unreadable ? [`${sk.unreadable} cannot be read: fix ${sk.unreadable === 1 ? 'its' : 'their'} permissions`] : []),
    ];
    const total = sk.misfit + sk.tooLarge + sk.unreadable;
    add('therapist_files_skipped', `${many(total, 'therapist file was', 'therapist files were')} not imported and ${total === 1 ? 'needs' : 'need'} a person: ${kinds.join('; ')} (${total === 1 ? 'it is' : 'they are'} imported once that is done)`, {
      page: '/imports',
      command: `fleet imports list --kind therapist --status skipped${r.therapistImports.files.skipped > 50 ? ` --limit ${r.therapistImports.files.skipped}` : ''}`,
    });
  }
  // Only an address that is not valid needs a person: a registration may leave the email out
  // (DOMAIN.md), so patients without one are a lasting state that would keep /daily in
  // "attention" for good; their count stays in the weekly figures, with the list.
  const un = r.weeklyEmails.unreachable;
  if (un.invalidEmail > 0) {
    add(
      'weekly_unreachable',
      `${many(un.invalidEmail, 'patient searching for a place has an email address that is not valid and gets', 'patients searching for a place have an email address that is not valid and get')} no weekly status email until it is corrected on the platform (their patient ids are listed)`,
      { page: WEEKLY_UNREACHABLE_PAGE, command: 'fleet weekly unreachable' },
    );
  }
  if (r.emails.failed > 0) add('emails_failed', `${many(r.emails.failed, 'email', 'emails')} failed for good (fleet.deliveries, status failed, last_error says why)`);
  const kafka = r.outbox.kafka;
  if (seen && (kafka.state === 'unreachable' || kafka.state === 'topic_missing')) {
    add(kafka.state === 'unreachable' ? 'kafka_unreachable' : 'kafka_topic_missing', `${outboxKafkaLine(kafka, localTimeWithOffset)} (${r.outbox.unpublished} unpublished)`, { command: 'fleet events stats' });
  }
  if (r.outbox.parked > 0) add('outbox_parked', `${many(r.outbox.parked, 'outbox event is', 'outbox events are')} parked (refused by Kafka, or held behind one that was)`, { command: 'fleet events parked' });
  const age = (s: number | null) => formatAge(s);
  if (stale(r.patientImports.oldestOpenAgeSeconds)) {
    add('patient_imports_stale', `the oldest open patient registration import is ${age(r.patientImports.oldestOpenAgeSeconds)} old (${r.patientImports.open} open)`, { page: '/imports', command: 'fleet imports list' });
  }
  if (stale(r.therapistImports.oldestWaitingAgeSeconds)) {
    add('therapist_imports_stale', `the oldest waiting therapist file is ${age(r.therapistImports.oldestWaitingAgeSeconds)} old (${r.therapistImports.filesWaiting} waiting)`, {
      page: '/therapist-imports',
      command: 'fleet imports list --kind therapist',
    });
  }
  if (stale(r.emails.oldestPendingAgeSeconds)) add('emails_stale', `the oldest pending email is ${age(r.emails.oldestPendingAgeSeconds)} old (${r.emails.pending} pending)`);
  if (stale(r.outbox.oldestUnpublishedAgeSeconds)) {
    const head = `the oldest unpublished outbox event is ${age(r.outbox.oldestUnpublishedAgeSeconds)} old (${r.outbox.unpublished} unpublished)`;
    // Said with why, unless an attention line above says it already (Kafka unreachable, a topic missing).
    if (kafka.state === 'publishing' || kafka.state === 'unreachable' || kafka.state === 'topic_missing') add('outbox_stale', head, { command: 'fleet events stats' });
    else add('outbox_stale', `${head}: ${outboxKafkaLine(kafka, localTimeWithOffset)}`, { command: 'fleet events stats' });
  }
  return out;
}

export async function dailyReport(deps: DailyDeps, hours = DEFAULT_DAILY_HOURS): Promise<DailyReport> {
  const { now } = deps;
  const since = new Date(now.getTime() - hours * 3_600_000);
  const db = deps.database.db;
  const isoWeek = isoWeekOf(now, deps.weeklyTimeZone);
  const [patientImports, therapist, backlog, emails, weekly, unreachable, dead, outbox, schedules, paused, lastPoll, fleetSeen, kafka] = await Promise.all([
    ledgerActivity(db, since, now),
    importActivity(db, since),
    importBacklog(db, now),
    deliveryActivity(db, since, now),
    weeklyDeliveryCounts(db, { isoWeek, weekStart: isoWeekRange(isoWeek, deps.weeklyTimeZone).start }),
    weeklyUnreachableCounts(db),
    countDeadLetters(deps.queues),
    outboxBacklog(deps.database, now),
    schedulerStates(deps.queues),
    pausedQueues(deps.queues),
    lastBucketPollSuccess(deps.queues),
    fleetSeenUnderPrefix(deps.queues),
    outboxKafkaState(deps),
  ]);
  const dueBy = bucketPollDueBy(deps.pollSchedule, now);
  const waiting = backlog.queued + backlog.importing;
  const body: Omit<DailyReport, 'status' | 'attention'> = {
    generatedAt: now.toISOString(),
    hours,
    timeZone: DAILY_TIME_ZONE,
    source: { ...deps.source, fleetSeen },
    window: { from: since.toISOString(), to: now.toISOString(), fromLocal: localTimeWithOffset(since), toLocal: localTimeWithOffset(now) },
    staleAfterSeconds: STALE_AFTER_SECONDS,
    patientImports: {
      ...patientImports,
      lastPoll: {
        at: lastPoll?.toISOString() ?? null,
        atLocal: lastPoll ? localTimeWithOffset(lastPoll) : null,
        ageSeconds: lastPoll ? secondsSince(lastPoll, now) : null,
        dueBy: dueBy.toISOString(),
        dueByLocal: localTimeWithOffset(dueBy),
        overdue: !lastPoll || lastPoll < dueBy,
      },
    },
    therapistImports: { ...therapist, filesWaiting: waiting, oldestWaitingAgeSeconds: waiting ? backlog.oldestPendingAgeSeconds : null },
    emails,
    weeklyEmails: { isoWeek, ...weekly, unreachable },
    deadLetters: { total: Object.values(dead).reduce((a, n) => a + n, 0), byQueue: dead },
    schedules: schedules.map(({ id, queue, role, cronVariable, registered, next }) => ({
      id,
      queue,
      role,
      cronVariable,
      registered,
      next: next?.toISOString() ?? null,
      nextLocal: next ? localTimeWithOffset(next) : null,
    })),
    pausedQueues: paused,
    outbox: { unpublished: outbox.unpublished, parked: outbox.parked, oldestUnpublishedAgeSeconds: outbox.unpublished ? outbox.oldestAgeSeconds : null, kafkaConfigured: kafka.state !== 'not_configured', kafka },
  };
  const attention = attentionOf(body);
  return { ...body, status: attention.length ? 'attention' : 'ok', attention };
}

/** The view as plain text (`fleet daily`): the overall line first, then one block per part. */
export function dailyText(r: DailyReport): string {
  const p = r.patientImports;
  const t = r.therapistImports;
  const e = r.emails;
  const w = r.weeklyEmails;
  const o = r.outbox;
  const deadQueues = Object.entries(r.deadLetters.byQueue).filter(([, n]) => n > 0);
  const lines = [
    `daily health: last ${r.hours} h, ${r.window.fromLocal} to ${r.window.toLocal} (${r.timeZone})`,
    `queue prefix "${r.source.queuePrefix}" on redis ${r.source.redis} (QUEUE_PREFIX, REDIS_URL)`,
    '',
    r.status === 'ok' ? 'all in order' : 'needs attention:',
    // The text view names where to look: the CLI command first, then the page.
    ...r.attention.map((a) => `  - ${a.message}${a.command || a.page ? ` — ${[a.command, a.page].filter(Boolean).join(' or ')}` : ''}`),
    '',
    'patient registration imports',
    `  imported ${p.imported}  duplicate ${p.duplicate}  failed ${p.failed}  discarded ${p.discarded}  replaced ${p.replaced}  (failed, waiting for an operator: ${p.failedWaiting})`,
    `  still open ${p.open}  oldest open ${formatAge(p.oldestOpenAgeSeconds)}`,
    `  last successful bucket poll ${p.lastPoll.at ? `${p.lastPoll.atLocal} (${formatAge(p.lastPoll.ageSeconds)} ago)` : 'none recorded'}`,
    'therapist imports',
    `  runs closed ${t.runsClosed}  runs open ${t.runsOpen}`,
    `  files imported ${t.files.imported}  partial ${t.files.partial}  failed ${t.files.failed}  skipped ${t.files.skipped}  therapists failed ${t.therapistsFailed}`,
    ...(t.skippedOpen.misfit + t.skippedOpen.tooLarge + t.skippedOpen.unreadable
      ? [`  of the skipped files, needing a person: name does not fit ${t.skippedOpen.misfit}  too large ${t.skippedOpen.tooLarge}  unreadable ${t.skippedOpen.unreadable}`]
      : []),
    ...(t.superseded.failed + t.superseded.partial ? [`  of the failed and partial files, replaced since by a newer file of the same postcode: ${t.superseded.failed + t.superseded.partial}`] : []),
    `  files waiting ${t.filesWaiting}  oldest waiting ${formatAge(t.oldestWaitingAgeSeconds)}`,
    'emails',
    `  sent ${e.sent}  failed ${e.failed}  dropped ${e.dropped}  pending ${e.pending}  oldest pending ${formatAge(e.oldestPendingAgeSeconds)}`,
    `weekly emails ${w.isoWeek}`,
    `  sent ${w.sent}  skipped ${w.skipped}  pending ${w.pending}  failed ${w.failed}`,
    `  searching patients who get none (now): no email address ${w.unreachable.noEmail}  no valid email address ${w.unreachable.invalidEmail}${w.unreachable.noEmail + w.unreachable.invalidEmail ? '  (fleet weekly unreachable)' : ''}`,
    'schedules',
    ...r.schedules.map((x) => `  ${x.id}  ${x.registered ? `next ${x.nextLocal ?? '–'}` : `NOT REGISTERED (${x.cronVariable}, role ${x.role})`}`),
    ...(r.pausedQueues.length ? [`  paused queues: ${r.pausedQueues.join(', ')}`] : []),
    'dead letters',
    `  total ${r.deadLetters.total}${deadQueues.length ? `  (${deadQueues.map(([q, n]) => `${q} ${n}`).join(', ')})` : ''}`,
    'outbox',
    `  unpublished ${o.unpublished}  parked ${o.parked}  oldest unpublished ${formatAge(o.oldestUnpublishedAgeSeconds)}`,
    `  ${outboxKafkaLine(o.kafka, localTimeWithOffset)}`,
  ];
  return lines.join('\n') + '\n';
}
