import type { Command } from 'commander';
import { auditOfTargets, recordAudit } from '../../../libs/db/repositories/audit.js';
import { discardLedgerRow, getLedgerRow, listLedger, newerGenerations, newerImports, type LedgerRow } from '../../../libs/db/repositories/patient-import.js';
import { patientImportOpenStatuses, patientImportStatuses, type PatientImportStatus } from '../../../libs/db/schema/fleet-patient-import.js';
import { carriedAttemptOf, DeadLetterNotFound, findDeadLetter, isLiveJobState, jobIdFor, type DeadLetterView } from '../../../libs/queues/index.js';
import type { FleetContext } from '../../../libs/runtime/index.js';
import { gcsEndpointHost } from '../../../libs/storage/index.js';
import { failureRemedy, importLocalFile, newerImportNextStep, paymentReferenceCollision, runPoll, signingWarning, type NewerImport, type PollResult } from '../../../workers/patient-import/index.js';
import { argPath, CliError, operatorName, positiveInt, printJson, requiredReason, shownPath, withContext } from '../context.js';
import { displayTime, table } from '../format.js';

/**
 * One entry per import kind (`--kind`): how to list and show its records. The therapist
 * import adds its entry here; the commands below stay the same.
 */
export interface ImportKind {
  statuses: readonly string[];
  /** Keys of the list's rows for --json only: the table leaves them out (their note says it in words). */
  listJsonOnly?: readonly string[];
  /** Rows for `fleet imports list`: short, no names or object names (they contain personal data). */
  list(ctx: FleetContext, opts: { status?: string[]; limit: number; runId?: number }): Promise<Array<Record<string, unknown>>>;
  /** The kind groups its records in runs (`fleet imports list --run <id>`): whether run `id` exists. */
  runExists?(ctx: FleetContext, id: number): Promise<boolean>;
  /** Whether record `id` exists (`fleet imports show` of an id of another kind names it). */
  exists(ctx: FleetContext, id: number): Promise<boolean>;
  /** Text block (and JSON) for `fleet imports show <id>`, or null when there is no such record. */
  show(ctx: FleetContext, id: number): Promise<{ text: string; json: unknown } | null>;
  /**
   * `fleet imports discard <id>`: closes a failed record that no dead letter stands for (those
   * are discarded with `fleet dlq discard`), audited; returns the line to print. Throws a
   * CliError (3: no such record, 2: not one to discard here). Absent: the kind has none.
   */
  discard?(ctx: FleetContext, id: number, action: { actor: string; reason: string }): Promise<string>;
}

/**
 * A same_token duplicate whose content differs: which fields (names only). Compared with what the
 * import of the token read (its digests), or, where that import recorded none (and on rows from
 * before the comparison was recorded), with the patient as it was at the re-upload: then the
 * fields may be corrections staff made since the import, and the line says so.
 */
function sameRegistrationChanged(r: LedgerRow): string {
  const fields = (r.differingFields ?? []).join(', ');
  return r.differingComparedWith === 'import'
    ? `same registration as patient ${r.duplicateOfPatientId}; differs in: ${fields}`
    : `same registration as patient ${r.duplicateOfPatientId}; differs from the patient record as it is now in: ${fields} (may be corrections made since the import: check before changing anything)`;
}

function patientSummary(r: LedgerRow) {
  return {
    id: r.id,
    status: r.status,
    received: r.receivedAt,
    attempts: r.attempts,
    patient: r.patientId ?? (r.duplicateOfPatientId ? `dup of ${r.duplicateOfPatientId}` : null),
    note: r.status === 'failed' || r.status === 'discarded' ? `${r.errorCode ?? ''}: ${r.reason ?? ''}` : r.status === 'replaced' ? (r.reason ?? '') : r.possibleDuplicateOfPatientId ? `possible duplicate of patient ${r.possibleDuplicateOfPatientId}` : r.differingFields?.length ? sameRegistrationChanged(r) : r.duplicateKind ? `duplicate (${r.duplicateKind})` : '',
  };
}

/** A local copy: its path, or when the retention sweep removed it (the path no longer exists). */
function localCopy(path: string | null, removedAt: Date | null, retentionDays: number): string | null {
  if (!path) return null;
  if (!removedAt) return path;
  return `removed on ${displayTime(removedAt, 'second')} (${retentionDays > 0 ? `retention ${retentionDays} days` : 'retention sweep'})`;
}

/** Where a job is still trying a row (waiting for its next attempt, or running): what its last attempt failed with. */
interface RetryState {
  lastFailure: string;
  attemptsMade: number;
  maxAttempts: number;
  /** The last attempt could not reach the database: it waits for it, not counted (OUTAGE_CARRY_HOURS). */
  carried: boolean;
}

/**
 * The job of an open row that has failed an attempt and will try again (the ledger records
 * only failures for good): its last reason. Job reasons carry no values from the file and no
 * file names (dead letters are made from them).
 */
async function retryStateOf(ctx: FleetContext, r: LedgerRow): Promise<RetryState | null> {
  if (!(patientImportOpenStatuses as readonly string[]).includes(r.status) || r.attempts === 0) return null;
  const job = await ctx.queues.queue('patient-import').getJob(jobIdFor('patient-import', { ledgerId: r.id })!);
  if (!job || !isLiveJobState(await job.getState())) return null;
  const maxAttempts = job.opts.attempts ?? 1;
  // An attempt carried through a database outage leaves no failedReason, only its log line.
  const { logs } = await ctx.queues.queue('patient-import').getJobLogs(job.id!, -1, -1);
  const carried = logs[0] ? carriedAttemptOf(logs[0]) : null;
  if (carried && carried.at.getTime() >= (job.processedOn ?? 0)) return { lastFailure: carried.reason, attemptsMade: job.attemptsMade, maxAttempts, carried: true };
  if (!job.failedReason) return null;
  return { lastFailure: job.failedReason, attemptsMade: job.attemptsMade, maxAttempts, carried: false };
}

/**
 * What to do about a failed file from the bucket, by what failed (as the staff email says it,
 * `failureRemedy`): a requeue imports the copy the fleet kept, so it cannot help a file whose
 * content or name is wrong.
 */
function bucketFailureNextSteps(r: LedgerRow): string {
  const requeue = `fleet dlq requeue patient-import.ledger.${r.id} --reason "..."`;
  const discard = `fleet dlq discard patient-import.ledger.${r.id} --reason "..."`;
  const imported = `the next poll (or fleet poll) imports it as a record of its own.\nThen close this record: ${discard}`;
  switch (failureRemedy(r.errorCode)) {
    case 'corrected-upload':
      return `The file stays in the bucket. Its content is wrong (see reason): the same file fails again at every attempt, so a requeue does not help (it imports the copy the fleet kept, not a file fixed in the bucket).\nUpload a corrected file (under the same name or another): ${imported}`;
    case 'rename':
      return `The file stays in the bucket. Its name does not fit (see reason): a requeue does not help.\nUpload it again under a fitting name (its content corrected too where the reason names fields): ${imported}`;
    case 'settings':
      return `The file stays in the bucket. Its signature or environment does not match the fleet's settings (REGISTRATION_SIGNING_SECRET, REGISTRATION_ENVIRONMENT).\nIf the settings are wrong: correct them, restart the fleet, then ${requeue}\nIf the file is not genuine: ${discard}`;
    case 'raise-limit':
      return `The file stays in the bucket. It is larger than REGISTRATION_FILE_MAX_MB allows and was not read.\nIf it is a real registration: raise the limit, restart the fleet, then ${requeue}\nOtherwise: ${discard}`;
    case 'object-gone':
      return `The file is no longer in the bucket: have the registration uploaded again (it becomes a record of its own), then close this record: ${discard}`;
    case 'resolve-by-hand':
      return `The file stays in the bucket. A requeue does not help: ${paymentReferenceCollision(null)} (a corrected upload of the same registration too).` +
        `\nResolve the registration by hand with the platform (another person? then create the patient there with another payment reference), then close this record: ${discard}`;
    case 'requeue':
      return `The file stays in the bucket. After fixing the cause: ${requeue}` +
        `\n(or upload a corrected file: a new generation is imported on its own as a record of its own; this record then stays failed until it is discarded).` +
        `\nTo close it (given up, or replaced by a corrected upload): ${discard}`;
  }
}

/** The waiting dead letter of a bucket row's job (null: none). */
async function deadLetterOf(ctx: FleetContext, id: number): Promise<DeadLetterView | null> {
  try {
    return (await findDeadLetter(ctx.queues, jobIdFor('patient-import', { ledgerId: id })!, 'patient-import')).view;
  } catch (err) {
    if (err instanceof DeadLetterNotFound) return null;
    throw err;
  }
}

type AuditRow = Awaited<ReturnType<typeof auditOfTargets>>[number];

/** The operator actions on one record (its dead letter requeued or discarded, the record discarded): who, what, when, why. */
function patientAudit(db: FleetContext['database']['db'], id: number): Promise<AuditRow[]> {
  const jobId = jobIdFor('patient-import', { ledgerId: id })!;
  return auditOfTargets(db, [`patient-import/${jobId}`, jobId]);
}

function auditLines(rows: AuditRow[]): string {
  if (!rows.length) return '';
  const lines = rows.map((a) => `  ${displayTime(a.createdAt, 'second')}  ${a.action}  by ${a.actor}${a.reason ? `: ${a.reason}` : ''}`);
  return `\n\noperator actions:\n${lines.join('\n')}`;
}

function patientDetail(
  r: LedgerRow,
  retention: { backupDays: number; failedDays: number },
  retry: RetryState | null = null,
  audit: AuditRow[] = [],
  newer: NewerImport | null = null,
  deleteDeadLetter: DeadLetterView | null = null,
): string {
  const lines: Array<[string, unknown]> = [
    ['import', `${r.id} (patient registration, ${r.source === 'bucket' ? 'from the bucket' : 'local file'})`],
    ['status', r.status],
    ['source', r.sourceUri],
    ['generation', r.generation],
    ['size', r.size === null ? null : `${r.size} bytes`],
    // Every job run on the record, requeues included; a dead letter's `attempts` counts only the runs since it was last queued.
    ['attempts (all runs)', r.attempts],
    [
      'last attempt',
      retry?.carried
        ? `could not reach the database: ${retry.lastFailure} (waits for it; not counted: ${retry.attemptsMade} of ${retry.maxAttempts} attempts used)`
        : retry
          ? `failed: ${retry.lastFailure} (retrying: ${retry.attemptsMade} of ${retry.maxAttempts} attempts used)`
          : null,
    ],
    ['validation', r.validation],
    ['patient', r.patientId],
    ['duplicate of', r.duplicateOfPatientId ? `patient ${r.duplicateOfPatientId} (${r.duplicateKind})` : null],
    [
      'content changed',
      !r.differingFields?.length
        ? null
        : r.differingComparedWith === 'import'
          ? `${sameRegistrationChanged(r)} (compared with what the import of this registration read; the patient was not changed: update it by hand; staff were emailed)`
          : `${sameRegistrationChanged(r)} (its import recorded no digests of what it read, so the patient as it was at this upload was compared; the patient was not changed; staff were emailed)`,
    ],
    ['possible duplicate of', r.possibleDuplicateOfPatientId ? `patient ${r.possibleDuplicateOfPatientId} (same email, other name)` : null],
    ['error code', r.errorCode],
    ['reason', r.reason],
    ['unknown fields', r.unknownFields.length ? r.unknownFields.join(', ') : null],
    ['backup copy', localCopy(r.backupPath, r.backupRemovedAt, retention.backupDays)],
    ['failed copy', localCopy(r.failedPath, r.failedRemovedAt, retention.failedDays)],
    ['bucket delete', r.deleteOutcome],
    ['received', displayTime(r.receivedAt, 'second')],
    ['downloaded', displayTime(r.downloadedAt, 'second')],
    ['backed up', displayTime(r.backedUpAt, 'second')],
    ['imported', displayTime(r.importedAt, 'second')],
    ['deleted', displayTime(r.deletedAt, 'second')],
    ['failed', displayTime(r.failedAt, 'second')],
    ['discarded', displayTime(r.discardedAt, 'second')],
    ['final since', displayTime(r.finishedAt, 'second')],
    ['last attempt', displayTime(r.lastAttemptAt, 'second')],
  ];
  const shown = lines.filter(([, v]) => v !== null && v !== undefined && v !== '');
  const width = Math.max(...shown.map(([k]) => k.length));
  let text = shown.map(([k, v]) => `${(k + ':').padEnd(width + 2)}${String(v)}`).join('\n') + auditLines(audit);
  if (r.status === 'failed' && r.source === 'file') {
    // Imported by hand: no job ran, so there is no dead letter, and nothing is in the bucket.
    text += `\n\nThis file was imported by hand (fleet import patient-file): there is no dead letter and nothing in the bucket.` +
      `\nAfter fixing the cause: fleet import patient-file <path> (the same file again retries this record; a renamed or corrected file gets a record of its own).` +
      `\nTo close this record for good: fleet imports discard ${r.id} --reason "..."`;
  } else if (r.status === 'failed') {
    text += `\n\n${newer ? newerImportNextStep(r, newer, 'cli') : bucketFailureNextSteps(r)}`;
  } else if (deleteDeadLetter) {
    const dlq = deleteDeadLetter.id;
    text += `\n\nImported; only removing the file from the bucket is left, and its job gave up (dead letter ${dlq}: ${deleteDeadLetter.reason}).` +
      `\nOnce the cause is fixed: fleet dlq requeue ${dlq} --reason "..." (deletes the file; imports nothing again).` +
      `\nA discard leaves the file, with its personal data, in the bucket: it would then have to be deleted by hand.`;
  } else if (r.status === 'discarded' && r.source === 'bucket') {
    // A discard closes the record and deletes nothing (a file not imported is kept in the bucket):
    // the operator who discarded it, or one reading it later, must not take the file for gone.
    text += newer
      ? `\n\nDiscarded. A newer upload of this file name came since (import record ${newer.id}, ${newer.status}; fleet imports show ${newer.id}): it replaced this file in the bucket.`
      : `\n\nDiscarded. A discard deletes nothing: unless someone removed it by hand, the file is still in the bucket, with its personal data.` +
        `\nIf it should go, delete that generation by hand: ${r.sourceUri}, generation ${r.generation}.`;
  } else if (r.deleteOutcome === 'discarded') {
    text += `\n\nImported; its dead letter (the bucket delete out of retries) was discarded by an operator, so the file is still in the bucket.` +
      `\nIt holds personal data: once the cause is fixed, delete that generation from the bucket by hand (${r.sourceUri}, generation ${r.generation}).`;
  }
  return text;
}

export const importKinds: Record<string, ImportKind> = {
  patient: {
    statuses: patientImportStatuses,
    exists: async (ctx, id) => (await getLedgerRow(ctx.database.db, id)) !== null,
    async list(ctx, opts) {
      const rows = await listLedger(ctx.database.db, { ...(opts.status ? { status: opts.status as PatientImportStatus[] } : {}), limit: opts.limit });
      return rows.map(patientSummary);
    },
    async show(ctx, id) {
      const r = await getLedgerRow(ctx.database.db, id);
      if (!r) return null;
      const [retry, audit, newerImport, deleteDeadLetter] = await Promise.all([
        retryStateOf(ctx, r),
        patientAudit(ctx.database.db, id),
        r.status === 'failed' && r.source === 'bucket'
          ? newerImports(ctx.database.db, [r.id]).then((m) => m.get(r.id) ?? null)
          : r.status === 'discarded' && r.source === 'bucket'
            ? newerGenerations(ctx.database.db, [r.id]).then((m) => m.get(r.id) ?? null)
            : null,
        (r.status === 'imported' || r.status === 'duplicate') && r.source === 'bucket' ? deadLetterOf(ctx, r.id) : null,
      ]);
      const operatorActions = audit.map((a) => ({ at: a.createdAt, action: a.action, actor: a.actor, reason: a.reason }));
      return {
        text: patientDetail(r, ctx.config.patientImport.retention, retry, audit, newerImport, deleteDeadLetter),
        json: { ...r, retry, operatorActions, newerImport, ...(r.status === 'discarded' && r.source === 'bucket' ? { bucketFile: newerImport ? 'replaced by a newer upload' : 'left in the bucket' } : {}), ...(deleteDeadLetter ? { deadLetter: { id: deleteDeadLetter.id, reason: deleteDeadLetter.reason, failedAt: deleteDeadLetter.failedAt } } : {}) },
      };
    },
    async discard(ctx, id, action) {
      const db = ctx.database.db;
      const r = await getLedgerRow(db, id);
      if (!r) throw new CliError(`no patient import record ${id}`, 3);
      if (r.status !== 'failed') throw new CliError(`import record ${id} is ${r.status}, not failed: nothing to discard`, 2);
      if (r.source !== 'file') {
        throw new CliError(`import record ${id} came from the bucket: discard its dead letter instead (fleet dlq discard patient-import.ledger.${id} --reason "...")`, 2);
      }
      await db.transaction(async (tx) => {
        if (!(await discardLedgerRow(tx, id, new Date(), { failedOnly: true }))) throw new CliError(`import record ${id} changed meanwhile; see fleet imports show ${id}`, 1);
        await recordAudit(tx, { actor: action.actor, action: 'imports.discard', target: `patient-import.ledger.${id}`, reason: action.reason, details: { source: r.source, code: r.errorCode } });
      });
      return `discarded import record ${id} (imported by hand: no dead letter or bucket object to clean up)`;
    },
  },
};

function kindOf(name: string): ImportKind {
  const kind = importKinds[name];
  if (!kind) throw new CliError(`unknown kind ${name}; kinds: ${Object.keys(importKinds).join(', ')}`, 2);
  return kind;
}

/** How long `fleet poll` lists a GCS bucket before it says it is still at it. */
const POLL_SLOW_NOTICE_MS = 5_000;

export function registerImports(program: Command): void {
  program
    .command('poll')
    .description('list the registration bucket now and enqueue new files (what the bucket poller does on its schedule)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withContext(async (ctx) => {
        // Redis first: a poll that lists and records while Redis is away fails only at its first
        // enqueue, and the files it recorded then waited for the next scheduled poll (an hour).
        await ctx.queues.queue('bucket-poll').waitUntilReady();
        // The storage client retries a call that got no answer (up to GCS_MAX_RETRIES times, with
        // backoff, within GCS_TOTAL_TIMEOUT_MS), which made an unreachable bucket 15-30 s of
        // silence: said once after a few seconds.
        const gcs = ctx.config.storage.gcs;
        // A large bucket takes longer than that with every call answered: then the pages so far.
        let soFar: Readonly<PollResult> | undefined;
        const slow =
          ctx.config.storage.driver === 'gcs'
            ? setTimeout(() => {
                if (soFar && soFar.pages > 0) {
                  process.stderr.write(`fleet: still listing the bucket after ${POLL_SLOW_NOTICE_MS / 1000} s: ${soFar.pages} page(s), ${soFar.listed} object(s) so far, ${soFar.recorded} new\n`);
                  return;
                }
                const then =
                  gcs.maxRetries > 0
                    ? `is tried again up to ${gcs.maxRetries} time(s) within ${Math.round((gcs.totalTimeoutMs ?? 60_000) / 1000)} s (GCS_MAX_RETRIES, GCS_TOTAL_TIMEOUT_MS)`
                    : `fails after ${Math.round(gcs.timeoutMs / 1000)} s (GCS_TIMEOUT_MS)`;
                process.stderr.write(`fleet: still listing the bucket after ${POLL_SLOW_NOTICE_MS / 1000} s (endpoint ${gcsEndpointHost(gcs.apiEndpoint)}): a call that gets no answer ${then}\n`);
              }, POLL_SLOW_NOTICE_MS).unref()
            : undefined;
        const r = await runPoll(ctx, { onPage: (p) => (soFar = p) }).finally(() => clearTimeout(slow));
        if (opts.json) return printJson(r);
        process.stdout.write(
          `listed ${r.listed} object(s) in ${r.pages} page(s): ${r.recorded} new file(s) enqueued` +
            `${r.inProgress ? `, ${r.inProgress} already being imported` : ''}` +
            `${r.leftFailed ? `, ${r.leftFailed} left as failed or discarded (see fleet imports list --status failed,discarded)` : ''}` +
            `${r.leftFinal ? `, ${r.leftFinal} imported but left in the bucket (see fleet imports list)` : ''}` +
            `${r.skipped ? `, ${r.skipped} folder placeholder(s) skipped` : ''}; ${r.reoffered} unfinished import(s) offered again` +
            `${r.unsettled ? `; ${r.unsettled} file(s) changed less than LOCAL_BUCKET_SETTLE_MS ago (still being copied in?) left for the next poll: run fleet poll again in a moment` : ''}` +
            `${r.deadLettersRestored ? `, ${r.deadLettersRestored} dead letter(s) restored for failed imports Redis had lost (fleet dlq list)` : ''}\n`,
        );
      });
    });

  const imports = program.command('imports').description('import records: what happened to each file');
  imports
    .command('list')
    .description('latest import records, newest first')
    .option('--kind <kind>', `import kind (${Object.keys(importKinds).join(', ')})`, 'patient')
    .option('--status <status>', 'only these statuses (comma-separated), e.g. failed')
    .option('--limit <n>', 'at most this many', '50')
    .option('--run <id>', 'only the files of this run (therapist imports: fleet imports runs)')
    .option('--json', 'print JSON')
    .action(async (opts: { kind: string; status?: string; limit: string; run?: string; json?: boolean }) => {
      const kind = kindOf(opts.kind);
      const status = opts.status?.split(',').map((s) => s.trim()).filter(Boolean);
      const bad = status?.filter((s) => !kind.statuses.includes(s));
      if (bad?.length) throw new CliError(`unknown status ${bad.join(', ')}; statuses: ${kind.statuses.join(', ')}`, 2);
      const limit = positiveInt('--limit', opts.limit);
      const runId = opts.run === undefined ? undefined : positiveInt('--run', opts.run);
      if (runId !== undefined && !kind.runExists) throw new CliError(`--run: ${opts.kind} imports have no runs (therapist imports do)`, 2);
      await withContext(async (ctx) => {
        // One more than asked: whether the limit cut the list off (said below, with how to see more).
        const fetched = await kind.list(ctx, { ...(status ? { status } : {}), limit: limit + 1, ...(runId !== undefined ? { runId } : {}) });
        const more = fetched.length > limit;
        const rows = more ? fetched.slice(0, limit) : fetched;
        // A run id that is not there is said so (a typo must not read as "the run has no such files").
        if (!rows.length && runId !== undefined && !(await kind.runExists!(ctx, runId))) {
          throw new CliError(`no ${opts.kind} import run ${runId} (fleet imports runs lists them)`, 3);
        }
        if (opts.json) return printJson(rows);
        const where = [status ? `with status ${status.join(', ')}` : '', runId !== undefined ? `in run ${runId}` : ''].filter(Boolean).join(' ');
        if (!rows.length) return void process.stdout.write(`no ${opts.kind} import records${where ? ` ${where}` : ''}\n`);
        const kindArg = opts.kind === 'patient' ? '' : ` --kind ${opts.kind}`;
        const count = more
          ? `${rows.length} record(s), the newest: the limit (--limit ${limit}) was reached and there are more; see more with --limit, e.g. ` +
            `fleet imports list${kindArg}${status ? ` --status ${status.join(',')}` : ''}${runId !== undefined ? ` --run ${runId}` : ''} --limit ${Math.max(100, limit * 2)}`
          : `${rows.length} record(s)`;
        const hidden = new Set(kind.listJsonOnly ?? []);
        const shown = rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !hidden.has(k))));
        const replaced = rows.filter((r) => r.replacedBy !== undefined && r.replacedBy !== null).length;
        const replacedNote = replaced ? `\n${replaced} of them replaced since by a later import of the same postcode (note "replaced by"): nothing to do for those.` : '';
        process.stdout.write(`${table(shown)}\n\n${count}. Details: fleet imports show <id>${kindArg}${replacedNote}\n`);
      });
    });

  imports
    .command('show')
    .description('the life story of one import record')
    .argument('<id>', 'import record id')
    .option('--kind <kind>', `import kind (${Object.keys(importKinds).join(', ')})`, 'patient')
    .option('--json', 'print JSON')
    .action(async (idText: string, opts: { kind: string; json?: boolean }) => {
      const kind = kindOf(opts.kind);
      const id = positiveInt('id', idText);
      await withContext(async (ctx) => {
        const r = await kind.show(ctx, id);
        if (!r) {
          // The kind is easily forgotten (patient is the default): a record of another kind with
          // this id is named, with the command that shows it.
          const others = Object.entries(importKinds).filter(([name]) => name !== opts.kind);
          const found = [];
          for (const [name, other] of others) if (await other.exists(ctx, id)) found.push(`${name} import record ${id} exists: fleet imports show ${id}${name === 'patient' ? '' : ` --kind ${name}`}`);
          throw new CliError([`no ${opts.kind} import record ${id}`, ...found].join('; '), 3);
        }
        if (opts.json) return printJson(r.json);
        process.stdout.write(`${r.text}\n`);
      });
    });

  imports
    .command('discard')
    .description('close a failed import record that has no dead letter (a file imported by hand) for good; audited')
    .argument('<id>', 'import record id')
    .option('--kind <kind>', `import kind (${Object.keys(importKinds).join(', ')})`, 'patient')
    .option('--reason <text>', 'why (required; written to the audit table)')
    .option('--actor <name>', 'who (default: $FLEET_OPERATOR, else the login name)')
    .option('--json', 'print JSON, as fleet dlq discard does: {outcome, kind, id}')
    .action(async (idText: string, opts: { kind: string; reason?: string; actor?: string; json?: boolean }) => {
      const kind = kindOf(opts.kind);
      const id = positiveInt('id', idText);
      const reason = requiredReason(opts.reason);
      const discard = kind.discard;
      if (!discard) throw new CliError(`${opts.kind} import records are not discarded here; dead letters: fleet dlq discard <id> --reason "..."`, 2);
      await withContext(async (ctx) => {
        const line = await discard(ctx, id, { actor: operatorName(opts.actor), reason });
        if (opts.json) return printJson({ outcome: 'discarded', kind: opts.kind, id });
        process.stdout.write(`${line}\n`);
      });
    });

  const importCmd = program.command('import').description('import a file by hand through the same pipeline');
  importCmd
    .command('patient-file')
    .description('import a local registration file (one staff got by other means) and print the outcome')
    .argument('<path>', 'the registration JSON file')
    .option('--json', 'print JSON')
    .action(async (filePath: string, opts: { json?: boolean }) => {
      const outcome = await withContext(async (ctx) => {
        try {
          // The hand import runs the same checks: say so when it takes signatures unchecked or with a short secret.
          const warning = signingWarning(ctx.config.patientImport);
          if (warning) process.stderr.write(`fleet: warning: ${warning.text}\n`);
          return await importLocalFile(ctx, argPath(filePath));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') throw new CliError(`cannot read ${shownPath(filePath)} (${code})`, 2);
          throw err;
        }
      });
      if (opts.json) printJson(outcome);
      else if (outcome.ok && outcome.result?.outcome === 'already-final' && outcome.result.status === 'discarded') {
        process.stdout.write(`not imported: this file (same name and content) was discarded by an operator: import record ${outcome.ledgerId}; nothing done\n`);
      } else if (outcome.ok && outcome.result?.outcome === 'already-final') {
        process.stdout.write(`already imported earlier: import record ${outcome.ledgerId} (status ${outcome.result.status}); nothing done\n`);
      } else if (outcome.ok && outcome.result?.outcome === 'moved-on') {
        process.stdout.write(`nothing done: this file was being imported at the same time (by the fleet or another person), which made import record ${outcome.ledgerId} ${outcome.result.status}; see fleet imports show ${outcome.ledgerId}\n`);
      } else if (outcome.ok && outcome.result?.outcome === 'replaced') {
        process.stdout.write(`not imported: replaced by a newer upload of the same name (import record ${outcome.ledgerId})\n`);
      } else if (outcome.ok && outcome.result && (outcome.result.outcome === 'imported' || outcome.result.outcome === 'duplicate')) {
        const r = outcome.result;
        process.stdout.write(
          r.outcome === 'imported'
            ? `imported: patient ${r.patientId} (import record ${r.ledgerId})${r.possibleDuplicateOf ? `; possible duplicate of patient ${r.possibleDuplicateOf} (same email, other name)` : ''}\n`
            : `not imported again: duplicate of patient ${r.patientId} (${r.duplicateKind === 'same_token' ? 'same registration token' : 'same email and name'}; import record ${r.ledgerId})\n` +
                (r.differingFields?.length
                  ? `its content differs ${r.comparedWith === 'import' ? 'from what the first import of this registration read' : 'from the patient record as it is now (which may hold corrections made since the import)'} in: ${r.differingFields.join(', ')}; the patient is not changed: update it by hand if the new values are right (staff were sent an email)\n`
                  : ''),
        );
      } else {
        process.stdout.write(`failed (${outcome.code}): ${outcome.reason}\nDetails: fleet imports show ${outcome.ledgerId}\n`);
      }
      // The failed bucket records of this registration (same token) now show this import as theirs
      // (imports show, dlq list, /ops): what is left of them is their dead letter to discard.
      if (!opts.json) {
        const byNameOnly = new Set(outcome.linkedByNameOnly ?? []);
        for (const id of outcome.failedBucketRecords ?? []) {
          process.stdout.write(
            byNameOnly.has(id)
              ? `import record ${id} (from the bucket, failed) is probably the same registration: the token in the two file names matches, its own content's token is not known (it failed before it was read); check it (fleet imports show ${id}), then close it: fleet dlq discard patient-import.ledger.${id} --reason "..."\n`
              : `import record ${id} (from the bucket, failed) is the same registration: nothing is left to import from it; close it: fleet dlq discard patient-import.ledger.${id} --reason "..."\n`,
          );
        }
      }
      if (!outcome.ok) process.exitCode = 1;
    });
}
