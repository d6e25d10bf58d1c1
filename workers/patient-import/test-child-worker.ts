/**
 * A patient-import worker in a process of its own, for the crash test: started with the
 * harness environment as its first argument (JSON). With `crash-after-commit` as the second it kills itself with
 * SIGKILL right after the import transaction committed and before the bucket delete.
 */
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, workerComponent } from '../../libs/runtime/index.js';
import { patientImportHandlers } from './worker.js';

const env = JSON.parse(process.argv[2] ?? '{}') as Record<string, string>;
const crash = process.argv[3] === 'crash-after-commit';
const ctx = openContext(loadConfig(env), silentLogger());
const handlers = patientImportHandlers(ctx, crash ? { afterCommit: () => void process.kill(process.pid, 'SIGKILL') } : {});
// `bench`: production lock settings; otherwise short ones, so a killed worker's job is taken over fast.
const worker = workerComponent(ctx, 'patient-import', handlers, process.argv[3] === 'bench' ? {} : { lockDurationMs: 1_000, stalledIntervalMs: 500 });
await worker.start();
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void worker.stop(2_000).then(() => ctx.close()).then(() => process.exit(0));
});
