import type { Command } from 'commander';
import { runNightlyRetention, type NightlyRetentionResult } from '../../producers/retention-schedule.js';
import { CliError, printJson, withContext } from '../context.js';

type Counts = NightlyRetentionResult['backup'];
type EmailCounts = NightlyRetentionResult['emails'];

function line(label: string, variable: string, c: Counts, dryRun: boolean): string {
  const kept = c.retentionDays > 0 ? `kept ${c.retentionDays} days after the row became final` : `kept forever: ${variable}=0`;
  const head = `  ${label} (${kept}): `;
  if (c.retentionDays <= 0) return `${head}nothing to do`;
  const leftAlone = `left alone (the recorded path is not the row's copy in the configured folder: was the folder moved?)`;
  if (dryRun) return `${head}${c.due ?? 0} past retention${c.notInFolder ? `, ${c.notInFolder} more would be ${leftAlone}` : ''}`;
  const parts = [`${c.removed} removed`];
  if (c.alreadyGone) parts.push(`${c.alreadyGone} already gone (recorded)`);
  if (c.notInFolder) parts.push(`${c.notInFolder} ${leftAlone}`);
  if (c.failed) parts.push(`${c.failed} could not be removed`);
  return head + parts.join(', ');
}

function emailLine(c: EmailCounts, dryRun: boolean): string {
  const kept = c.retentionDays > 0 ? `kept ${c.retentionDays} days after the email was sent, failed or dropped` : 'kept forever: EMAIL_RETENTION_DAYS=0';
  const head = `  email subjects, bodies and headers in fleet.deliveries (${kept}): `;
  if (c.retentionDays <= 0) return `${head}nothing to do`;
  const parts = [dryRun ? `${c.due ?? 0} past retention` : `${c.removed} removed`];
  if (c.keptForDeadLetters) parts.push(`${c.keptForDeadLetters} failed kept while their dead letter waits (fleet dlq list --queue email: requeue or discard)`);
  return head + parts.join(', ');
}

/** Files in the copy folders no record points to: never removed by the sweep, so said (with the records to look at). */
function unrecordedLines(u: NightlyRetentionResult['unrecorded']): string[] {
  return (['backup', 'failed'] as const)
    .filter((copy) => u[copy].files > 0)
    .map((copy) => {
      const { files, records } = u[copy];
      const which = records.length ? ` (record${records.length === 1 ? '' : 's'} ${records.slice(0, 20).join(', ')}${records.length > 20 ? ', …' : ''}: fleet imports show <id>)` : '';
      return `  ${copy === 'backup' ? 'BACKUP_DIR' : 'FAILED_DIR'}: ${files} file${files === 1 ? '' : 's'} no import record points to${which}; the sweep never removes these: check and remove by hand`;
    });
}

/** Temporary copies a crash while writing left: removed by the run (counted by the dry run). */
function staleTempLines(t: NightlyRetentionResult['staleTemps'], dryRun: boolean): string[] {
  return (['backup', 'failed'] as const)
    .filter((copy) => t[copy] > 0)
    .map((copy) => `  ${copy === 'backup' ? 'BACKUP_DIR' : 'FAILED_DIR'}: ${t[copy]} temporary cop${t[copy] === 1 ? 'y' : 'ies'} left by a process that died while writing ${dryRun ? 'would be removed' : 'removed'}`);
}

/**
 * `fleet retention run [--dry-run]`: the nightly retention run now (in this process, which
 * needs BACKUP_DIR and FAILED_DIR as the patient-import role has them). Counts only.
 */
export function registerRetention(program: Command): void {
  const retention = program
    .command('retention')
    .description('local copies of registration files (BACKUP_DIR, FAILED_DIR) and email contents (fleet.deliveries) past their retention');
  retention
    .command('run')
    .description('remove the copies past BACKUP_RETENTION_DAYS / FAILED_RETENTION_DAYS and the email contents past EMAIL_RETENTION_DAYS now (what the nightly job does) and print counts')
    .option('--dry-run', 'only count what would be removed')
    .option('--json', 'print JSON')
    .action(async (opts: { dryRun?: boolean; json?: boolean }) => {
      const r = await withContext((ctx) => runNightlyRetention(ctx, { dryRun: !!opts.dryRun }), { logLevel: 'error' });
      if (opts.json) printJson(r);
      else {
        process.stdout.write(
          [
            opts.dryRun ? 'retention sweep, dry run (nothing removed):' : 'retention sweep:',
            line('durable copies in BACKUP_DIR', 'BACKUP_RETENTION_DAYS', r.backup, r.dryRun),
            line('failed-folder copies in FAILED_DIR', 'FAILED_RETENTION_DAYS', r.failed, r.dryRun),
            emailLine(r.emails, r.dryRun),
            ...staleTempLines(r.staleTemps, r.dryRun),
            ...unrecordedLines(r.unrecorded),
          ].join('\n') + '\n',
        );
      }
      if (r.problems.length) throw new CliError(`${r.backup.failed + r.failed.failed} local copies could not be removed (${r.problems.join('; ')}); they are tried again on the next run`, 1);
    });
}
