import type { Command } from 'commander';
import { discardOne, FutileRequeue, requeueAll, requeueOne, withRequeueAdvice } from '../../../libs/ops/dead-letters.js';
import { DeadLetterNotFound, listDeadLetters, queueNames } from '../../../libs/queues/index.js';
import { deadLetterHooks } from '../../fleet/roles.js';
import { CliError, operatorName, printJson, requiredReason, withContext } from '../context.js';
import { displayTime } from '../format.js';
import { noFleetWarning, queueSource, sourceLine } from '../queue-source.js';

function checkQueue(queue?: string): void {
  // An empty --queue ("$QUEUE" unset) is refused like a misspelt one: read as "no filter", it made
  // `dlq requeue --all --queue ""` requeue the dead letters of every queue.
  if (queue !== undefined && !queueNames().includes(queue)) {
    // The name Bull Board shows for the dead letters: say which one is meant instead of listing them all.
    const of = queue.endsWith('-dlq') ? queue.slice(0, -'-dlq'.length) : null;
    if (of && queueNames().includes(of)) throw new CliError(`unknown queue ${queue}: --queue takes the queue the job belongs to (--queue ${of}), not its dead-letter queue`, 2);
    throw new CliError(`unknown queue ${queue || '""'}; queues: ${queueNames().join(', ')}`, 2);
  }
}

/**
 * A dead letter that is not there (exit 3). A bare number is what staff emails call the import
 * (`Import-Nr. 1`): the message names the dead-letter id of that import record instead of guessing
 * it, since a requeue or discard is audited and a bare number could also be another queue's job id.
 */
async function notFoundAsCliError<T>(id: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof DeadLetterNotFound) {
      const hint = /^\d+$/.test(id) ? `; a patient import record's dead letter is patient-import.ledger.${id} (see fleet dlq list)` : '';
      throw new CliError(`${err.message}${hint}`, 3);
    }
    if (err instanceof FutileRequeue) throw new CliError(`${err.message} To requeue it anyway: add --force.`, 2);
    throw err;
  }
}

export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('dead letters: jobs that failed for good and wait for an operator');

  dlq
    .command('list')
    .description('list dead letters with their reasons')
    .option('--queue <queue>', 'only this queue')
    .option('--json', 'print JSON: the queue prefix and Redis read (source) and the dead letters (deadLetters)')
    .action(async (opts: { queue?: string; json?: boolean }) => {
      checkQueue(opts.queue);
      await withContext(async (ctx) => {
        const source = await queueSource(ctx);
        const entries = await withRequeueAdvice({ db: ctx.database.db, hooks: deadLetterHooks }, await listDeadLetters(ctx.queues, opts.queue ? { queue: opts.queue } : {}));
        // "No dead letters" read under a prefix no fleet uses is no all-clear: exit 1 (after the
        // output), so a script or cron job checking for dead letters does not take it for one.
        const noFleet = async () => {
          if (!source.fleetSeen) throw new CliError(`warning: ${await noFleetWarning(ctx, source)}`, 1);
        };
        if (opts.json) {
          printJson({ source, deadLetters: entries });
          return noFleet();
        }
        process.stdout.write(`${sourceLine(source)}\n\n`);
        if (!entries.length) {
          process.stdout.write('no dead letters\n');
          return noFleet();
        }
        for (const e of entries) {
          process.stdout.write(
            `${e.id}\n  queue ${e.originalQueue}  failed ${displayTime(new Date(e.failedAt), 'second') ?? e.failedAt}  attempts since last queued ${e.attemptsMade}${e.code ? `  code ${e.code}` : ''}\n  reason: ${e.reason}\n` +
              `${e.requeueAdvice ? `  before a requeue${e.requeueFutile ? ' (refused without --force; skipped by --all)' : ''}: ${e.requeueAdvice}\n` : ''}  payload: ${JSON.stringify(e.data)}\n`,
          );
        }
        process.stdout.write(`\n${entries.length} dead letter(s). Requeue: fleet dlq requeue <id> --reason "..."; discard: fleet dlq discard <id> --reason "..."\n`);
      });
    });

  dlq
    .command('requeue')
    .description('put a dead letter (or all of them) back on its queue with fresh attempts')
    .argument('[id]', 'dead-letter id (as shown by fleet dlq list)')
    .option('--all', 'requeue every dead letter (of --queue, if given)')
    .option('--queue <queue>', 'the queue the job belongs to')
    .option('--reason <text>', 'why (required; written to the audit table)')
    .option('--actor <name>', 'who (default: $FLEET_OPERATOR, else the login name)')
    .option('--force', 'requeue also where the entry says a requeue cannot help (fleet dlq list: before a requeue)')
    .option('--json', 'print JSON, as the /ops API answers: {outcome, id, queue, jobId, notice?}; with --all {outcome, queue, count, requeued, skipped}')
    .action(async (id: string | undefined, opts: { all?: boolean; queue?: string; reason?: string; actor?: string; force?: boolean; json?: boolean }) => {
      checkQueue(opts.queue);
      if (!id && !opts.all) throw new CliError('name a dead-letter id or pass --all', 2);
      if (id && opts.all) throw new CliError('pass either an id or --all, not both', 2);
      const reason = requiredReason(opts.reason);
      await withContext(async (ctx) => {
        const deps = { db: ctx.database.db, queues: ctx.queues, hooks: deadLetterHooks };
        const action = { actor: operatorName(opts.actor), reason, force: opts.force === true };
        if (opts.all) {
          const results = await requeueAll(deps, action, opts.queue);
          if (opts.json) {
            return printJson({
              outcome: 'requeued',
              queue: opts.queue ?? null,
              count: results.length,
              requeued: results.map((r) => ({ id: r.view.id, queue: r.view.originalQueue, jobId: r.view.originalJobId, outcome: r.state, ...('notice' in r ? { notice: r.notice } : {}) })),
              skipped: results.skipped.map((f) => ({ id: f.id, advice: f.advice })),
            });
          }
          for (const r of results) if ('notice' in r) process.stdout.write(`${r.view.originalJobId}: ${r.notice}\n`);
          const { skipped } = results;
          process.stdout.write(
            `requeued ${results.length} dead letter(s)` +
              (skipped.length
                ? `; skipped ${skipped.length} whose own advice says a requeue cannot help (e.g. a file whose content is wrong fails the same way again): ${skipped.map((f) => f.id).join(', ')}; see fleet dlq list (before a requeue), or requeue them anyway with --force`
                : '') +
              '\n',
          );
          return;
        }
        const r = await notFoundAsCliError(id!, () => requeueOne(deps, id!, action, opts.queue));
        if (opts.json) return printJson({ outcome: r.state, id: r.view.id, queue: r.view.originalQueue, jobId: r.view.originalJobId, ...('notice' in r ? { notice: r.notice } : {}) });
        process.stdout.write(
          r.state === 'requeued'
            ? `requeued ${r.view.originalJobId} on ${r.view.originalQueue}\n`
            : `${r.view.originalJobId} was already queued again; dead letter removed\n`,
        );
        if ('notice' in r) process.stdout.write(`note: ${r.notice}\n`);
      });
    });

  dlq
    .command('discard')
    .description('remove a dead letter for good (the action is audited)')
    .argument('<id>', 'dead-letter id (as shown by fleet dlq list)')
    .option('--queue <queue>', 'the queue the job belongs to')
    .option('--reason <text>', 'why (required; written to the audit table)')
    .option('--actor <name>', 'who (default: $FLEET_OPERATOR, else the login name)')
    .option('--json', 'print JSON, as the /ops API answers: {outcome, id, queue, jobId}')
    .action(async (id: string, opts: { queue?: string; reason?: string; actor?: string; json?: boolean }) => {
      checkQueue(opts.queue);
      const reason = requiredReason(opts.reason);
      await withContext(async (ctx) => {
        const deps = { db: ctx.database.db, queues: ctx.queues, hooks: deadLetterHooks };
        const view = await notFoundAsCliError(id, () => discardOne(deps, id, { actor: operatorName(opts.actor), reason }, opts.queue));
        if (opts.json) return printJson({ outcome: 'discarded', id: view.id, queue: view.originalQueue, jobId: view.originalJobId });
        process.stdout.write(`discarded ${view.originalJobId} from ${view.deadLetterQueue}\n`);
      });
    });
}
