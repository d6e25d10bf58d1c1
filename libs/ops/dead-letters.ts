import type { Db } from '../db/client.js';
import { errorMessage } from '../errors/index.js';
import { lastAuditOf, recordAudit } from '../db/repositories/audit.js';
import {
  DeadLetterNotFound,
  discardDeadLetter,
  findDeadLetter,
  listDeadLetters,
  requeueDeadLetter,
  type DeadLetterView,
  type JobName,
  type QueueSet,
} from '../queues/index.js';

/**
 * Domain bookkeeping when an operator acts on a dead letter (e.g. the import ledger row goes
 * back to `queued` or to `discarded`). Registered per job name by the worker families.
 */
export interface DeadLetterHook {
  /** May return a notice for the operator (shown with the result, kept in the audit row): ids only, no personal data. */
  onRequeue?(payload: unknown, db: Db): Promise<string | void>;
  /** May return details for the discard's audit row (ids and times only, no personal data). */
  onDiscard?(payload: unknown, db: Db): Promise<Record<string, unknown> | void>;
  /**
   * What a requeue of each entry would do, told before the operator decides, where that is not
   * simply "it runs again" (e.g. an email that may reach its recipient a second time); one per
   * payload, in order. Ids only, no personal data.
   */
  requeueAdvice?(payloads: unknown[], db: Db): Promise<Array<string | RequeueAdvice | undefined>>;
}

/**
 * Advice that may say a requeue cannot help (`futile`: the same job fails the same way, or there is
 * nothing left for it to do): such a requeue is refused unless forced, and a requeue-all skips it.
 */
export interface RequeueAdvice {
  text: string;
  futile: boolean;
}

/** A requeue refused because the entry's own advice says it cannot help (`force` overrides). */
export class FutileRequeue extends Error {
  override name = 'FutileRequeue';
  constructor(
    readonly id: string,
    readonly advice: string,
  ) {
    super(`${id}: not requeued: ${advice}`);
  }
}
export type DeadLetterHooks = Partial<Record<JobName, DeadLetterHook>>;

/**
 * A dead letter with what a requeue of it would do, when its family has something to say;
 * `requeueFutile`: that advice says a requeue cannot help (refused unless forced, skipped by a requeue-all).
 */
export type AdvisedDeadLetter = DeadLetterView & { requeueAdvice?: string; requeueFutile?: true };

/**
 * The entries with their families' requeue advice (DeadLetterHook.requeueAdvice). Best effort:
 * the dead letters come from Redis and must stay listable while PostgreSQL is away; the entries
 * of a family whose advice cannot be read then say so instead.
 */
export async function withRequeueAdvice(deps: Pick<OperatorDeps, 'db' | 'hooks'>, entries: DeadLetterView[]): Promise<AdvisedDeadLetter[]> {
  const out: AdvisedDeadLetter[] = [...entries];
  const byName = new Map<string, number[]>();
  entries.forEach((e, i) => {
    const at = byName.get(e.name);
    if (at) at.push(i);
    else byName.set(e.name, [i]);
  });
  for (const [name, at] of byName) {
    const advise = deps.hooks[name as JobName]?.requeueAdvice;
    if (!advise) continue;
    let advice: Array<string | RequeueAdvice | undefined>;
    try {
      advice = await advise(
        at.map((i) => entries[i]!.data),
        deps.db,
      );
    } catch (err) {
      // errorMessage: a query error without its statement and parameters.
      advice = at.map(() => `unknown: what a requeue would do could not be read (${errorMessage(err)}); look again before requeueing`);
    }
    at.forEach((i, k) => {
      const a = advice[k];
      if (!a) return;
      out[i] = typeof a === 'string' ? { ...entries[i]!, requeueAdvice: a } : { ...entries[i]!, requeueAdvice: a.text, ...(a.futile ? { requeueFutile: true as const } : {}) };
    });
  }
  return out;
}

export interface OperatorDeps {
  db: Db;
  queues: QueueSet;
  hooks: DeadLetterHooks;
}

export interface OperatorAction {
  actor: string;
  reason?: string | undefined;
  /** Requeue even where the entry's advice says it cannot help (audited as forced). */
  force?: boolean | undefined;
}

function hookFor(hooks: DeadLetterHooks, view: DeadLetterView): DeadLetterHook | undefined {
  return hooks[view.name as JobName];
}

/** `2026-12-07 13:51:43 UTC`: how the operator's messages give times. */
export function utcSeconds(d: Date): string {
  return `${d.toISOString().replace('T', ' ').slice(0, 19)} UTC`;
}

/**
 * A dead letter that is not there: when an operator acted on it already (another tab, a
 * colleague), says who did what and when, from the audit table; else the error as it was.
 */
async function explainNotFound<T>(deps: OperatorDeps, id: string, queue: string | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof DeadLetterNotFound)) throw err;
    const last = await lastAuditOf(deps.db, { actions: ['dlq.requeue', 'dlq.discard'], jobId: id, queue });
    if (!last) throw err;
    const what = last.action === 'dlq.discard' ? 'discarded' : 'requeued';
    throw new DeadLetterNotFound(`${id} is no longer a dead letter: ${what} by ${last.actor} at ${utcSeconds(last.createdAt)}${last.reason ? ` (reason: ${last.reason})` : ''}`);
  }
}

/**
 * Requeues one dead letter and writes the action to the audit table. Where the entry's own advice
 * says a requeue cannot help (a file whose content is wrong fails the same way again, and each
 * failure adds an `import.failed` event), throws FutileRequeue unless `action.force`.
 */
export async function requeueOne(deps: OperatorDeps, id: string, action: OperatorAction, queue?: string) {
  // Checked before the requeue touches anything (it removes a failed job of the same id first).
  const { view } = await explainNotFound(deps, id, queue, () => findDeadLetter(deps.queues, id, queue));
  const [entry] = await withRequeueAdvice(deps, [view]);
  return requeueAdvised(deps, entry!, action, queue);
}

/** requeueOne of an entry whose advice has been read (withRequeueAdvice): refused where it says a requeue cannot help, unless forced. */
async function requeueAdvised(deps: OperatorDeps, entry: AdvisedDeadLetter, action: OperatorAction, queue: string | undefined) {
  const forcedPast = entry.requeueFutile ? entry.requeueAdvice : undefined;
  if (forcedPast && !action.force) throw new FutileRequeue(entry.id, forcedPast);
  // The bookkeeping goes first: the job must find its row open when a worker takes it.
  let notice: string | undefined;
  const requeued = await explainNotFound(deps, entry.id, queue, () =>
    requeueDeadLetter(deps.queues, entry.id, entry.originalQueue, {
      beforeRequeue: async (view) => {
        notice = (await hookFor(deps.hooks, view)?.onRequeue?.(view.data, deps.db)) ?? undefined;
      },
    }),
  );
  const result = { ...requeued, ...(notice ? { notice } : {}) };
  await recordAudit(deps.db, {
    actor: action.actor,
    action: 'dlq.requeue',
    target: `${result.view.originalQueue}/${result.view.originalJobId}`,
    reason: action.reason,
    details: {
      outcome: result.state,
      code: result.view.code,
      failedReason: result.view.reason,
      attemptsMade: result.view.attemptsMade,
      ...(notice ? { notice } : {}),
      ...(forcedPast ? { forced: true, advice: forcedPast } : {}),
    },
  });
  return result;
}

/**
 * Requeues every dead letter (of `queue`) listed at the start, their advice read once for all of
 * them (one call per family, as the list shows it). An entry gone by the time its turn comes was
 * handled meanwhile (another operator's requeue-all, a requeue or discard on /ops): it is left to
 * that action, not counted, and the rest go on (it used to stop the whole run with "no longer a
 * dead letter", /ops answering 500 with the remaining entries left waiting). An entry whose advice
 * says a requeue cannot help is skipped (`skipped`, with that advice) unless `force`.
 */
export async function requeueAll(deps: OperatorDeps, action: OperatorAction, queue?: string) {
  const entries = await withRequeueAdvice(deps, await listDeadLetters(deps.queues, queue ? { queue } : {}));
  const results: Array<Awaited<ReturnType<typeof requeueOne>>> = [];
  const skipped: FutileRequeue[] = [];
  for (const entry of entries) {
    try {
      results.push(await requeueAdvised(deps, entry, action, entry.originalQueue));
    } catch (err) {
      if (err instanceof FutileRequeue) skipped.push(err);
      else if (!(err instanceof DeadLetterNotFound)) throw err;
    }
  }
  return Object.assign(results, { skipped });
}

/**
 * Discards one dead letter for good and writes the action to the audit table. The audit row is
 * written under the entry's lock, before the entry is gone: whatever gives lost dead letters back
 * (the email sweep reads the discards from the audit table) never sees the entry gone without it.
 */
export async function discardOne(deps: OperatorDeps, id: string, action: OperatorAction, queue?: string) {
  const { view } = await explainNotFound(deps, id, queue, () =>
    discardDeadLetter(deps.queues, id, queue, {
      beforeDiscard: async (v) => {
        const extra = (await hookFor(deps.hooks, v)?.onDiscard?.(v.data, deps.db)) ?? {};
        await recordAudit(deps.db, {
          actor: action.actor,
          action: 'dlq.discard',
          target: `${v.originalQueue}/${v.originalJobId}`,
          reason: action.reason,
          details: { code: v.code, failedReason: v.reason, attemptsMade: v.attemptsMade, ...extra },
        });
      },
    }),
  );
  return view;
}
