import { Router } from 'express';
import { listLedger } from '../../../libs/db/repositories/patient-import.js';
import { listFiles } from '../../../libs/db/repositories/therapist-import.js';
import { html, page, utcTime as when } from '../html.js';
import type { HttpRouteDeps, HttpRouteModule } from './types.js';

const LIMIT = 100;

async function failedImports({ ctx }: HttpRouteDeps) {
  const [patients, therapists] = await Promise.all([
    listLedger(ctx.database.db, { status: ['failed'], limit: LIMIT }),
    listFiles(ctx.database.db, { status: ['failed', 'partial'], limit: LIMIT }),
  ]);
  // Object names of registration files contain patient names: shown by id only
  // (`fleet imports show <id>` prints the rest to staff on the server).
  return {
    patientFiles: patients.map((r) => ({
      id: r.id,
      status: r.status,
      reason: r.reason,
      errorCode: r.errorCode,
      attempts: r.attempts,
      failedAt: r.failedAt?.toISOString() ?? null,
    })),
    therapistFiles: therapists.map((r) => ({
      id: r.id,
      path: r.path,
      status: r.status,
      reason: r.reason,
      attempts: r.attempts,
      finishedAt: r.finishedAt?.toISOString() ?? null,
    })),
  };
}

/**
 * Failed imports with their reasons, read from the import records (patient registration
 * ledger, therapist scraper files). A file that failed validation is an expected outcome,
 * not a dead letter, so it is listed here rather than on /ops.
 */
export const failedImportRoutes: HttpRouteModule = {
  name: 'failed-imports',
  path: '/imports',
  access: 'operator',
  router(deps) {
    const router = Router();
    router.get('/api/failed', async (_req, res) => {
      res.json(await failedImports(deps));
    });
    router.get('/', async (_req, res) => {
      const f = await failedImports(deps);
      const body = html`<h1>Failed imports</h1>
<p class="muted">The newest ${LIMIT} of each kind. Details: <code>fleet imports show &lt;id&gt;</code> (patient) or
<code>fleet imports show &lt;id&gt; --kind therapist</code> (or the record's link: its report on <a href="/therapist-imports">Therapist imports</a>). Jobs that failed for good are on <a href="/ops">Dead letters</a>.</p>
<h2>Patient registration files <span class="muted">(${f.patientFiles.length})</span></h2>
${f.patientFiles.length
  ? html`<table><thead><tr><th>Record</th><th>Failed</th><th>Reason</th><th>Attempts</th></tr></thead><tbody>${f.patientFiles.map(
      (r) => html`<tr><td class="id"><code>${r.id}</code></td><td>${when(r.failedAt ? new Date(r.failedAt) : null)}</td><td class="reason">${r.reason ?? ''}${r.errorCode ? html`<div class="muted">code <code>${r.errorCode}</code></div>` : ''}</td><td>${r.attempts}</td></tr>`,
    )}</tbody></table>`
  : html`<p class="muted">none</p>`}
<h2>Therapist scraper files <span class="muted">(${f.therapistFiles.length})</span></h2>
${f.therapistFiles.length
  ? html`<table><thead><tr><th>Record</th><th>File</th><th>Status</th><th>Reason</th><th>Finished</th></tr></thead><tbody>${f.therapistFiles.map(
      (r) => html`<tr><td class="id"><a href="/therapist-imports/files/${r.id}"><code>${r.id}</code></a></td><td><code>${r.path}</code></td><td>${r.status}</td><td class="reason">${r.reason ?? ''}</td><td>${when(r.finishedAt ? new Date(r.finishedAt) : null)}</td></tr>`,
    )}</tbody></table>`
  : html`<p class="muted">none</p>`}`;
      res.type('html').send(page('Failed imports · Curavani Fleet', body, { nav: true }));
    });
    return router;
  },
};
