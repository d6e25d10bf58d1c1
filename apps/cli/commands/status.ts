import type { Command } from 'commander';
import { queueNames, deadLetterQueueName } from '../../../libs/queues/index.js';
import { printJson, withContext } from '../context.js';

const STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('job counts per queue and state, and dead letters waiting for an operator')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withContext(async (ctx) => {
        const rows = [];
        for (const name of queueNames()) {
          const counts = await ctx.queues.queue(name).getJobCounts(...STATES);
          const dead = await ctx.queues.queue(deadLetterQueueName(name)).getJobCounts('waiting', 'prioritized', 'delayed');
          rows.push({ queue: name, waiting: counts.waiting ?? 0, active: counts.active ?? 0, delayed: counts.delayed ?? 0, completed: counts.completed ?? 0, failed: counts.failed ?? 0, dead: (dead.waiting ?? 0) + (dead.prioritized ?? 0) + (dead.delayed ?? 0) });
        }
        if (opts.json) return printJson(rows);
        const header = ['queue', 'waiting', 'active', 'delayed', 'completed', 'failed', 'dead'];
        const table = [header, ...rows.map((r) => [r.queue, r.waiting, r.active, r.delayed, r.completed, r.failed, r.dead].map(String))];
        const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
        for (const row of table) process.stdout.write(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ') + '\n');
        const totalDead = rows.reduce((a, r) => a + r.dead, 0);
        process.stdout.write(totalDead ? `\n${totalDead} dead letter(s) wait for an operator: fleet dlq list\n` : '\nno dead letters\n');
      });
    });
}
