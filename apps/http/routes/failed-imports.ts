import { Router } from 'express';
import { listLedger, newerImports } from '../../../libs/db/repositories/patient-import.js';
import { listFiles, skippedFilesNeedingAPerson, skippedKindOf, supersedingFiles, type SkippedKind } from '../../../libs/db/repositories/therapist-import.js';
import { failureNextStep, newerImportNextStep } from '../../../workers/patient-import/index.js';
import { html, page, pageTime as when } from '../html.js';
import type { HttpRouteDeps, HttpRouteModule } from './types.js';

const LIMIT = 100;

/** What a person does about a skipped file of each kind (it is imported once that is done). */
const SKIPPED_NEXT_STEP: Record<SkippedKind, string> = {
  misfit: 'rename or move it to <plz>.json, YYYYMMDD/<plz>.json or urgent/<plz>.json: it is imported then',
  tooLarge: 'check what the scraper wrote (a postcode file is ~0.1 MB); a smaller file, or a higher SCRAPER_FILE_MAX_MB and a restart, imports it',
  unreadable: "fix its permissions (the fleet's user must read it): it is imported at its next change or the next start",
};

const count = (shown: number, more: boolean) => (more ? `newest ${shown} of more than ${LIMIT}` : String(shown));

async function failedImports({ ctx }: HttpRouteDeps) {
  // One row more than shown tells whether the list is cut off (the page must not pass 100 off as all).
  const [patientRows, therapistRows, skippedRows] = await Promise.all([
    listLedger(ctx.database.db, { status: ['failed'], limit: LIMIT + 1 }),
    listFiles(ctx.database.db, { status: ['failed', 'partial'], limit: LIMIT + 1 }),
    skippedFilesNeedingAPerson(ctx.database.db, LIMIT + 1),
  ]);
  const patients = patientRows.slice(0, LIMIT);
  const therapists = therapistRows.slice(0, LIMIT);
  const [superseded, newer] = await Promise.all([
    supersedingFiles(ctx.database.db, therapists.map((r) => r.id)),
    newerImports(ctx.database.db, patients.filter((r) => r.source === 'bucket').map((r) => r.id)),
  ]);
  // Object names of registration files contain patient names: shown by id only
  // (`fleet imports show <id>` prints the rest to staff on the server).
  return {
    moreSkippedTherapistFiles: skippedRows.length > LIMIT,
    /** Skipped files a person must act on (a name that does not fit, too large, unreadable) that no later import replaced. */
    skippedTherapistFiles: skippedRows.slice(0, LIMIT).map((r) => {
      const kind = skippedKindOf(r) ?? 'misfit';
      return { id: r.id, path: r.path, kind, reason: r.reason, finishedAt: r.finishedAt?.toISOString() ?? null, nextStep: SKIPPED_NEXT_STEP[kind] };
    }),
    morePatientFiles: patientRows.length > LIMIT,
    moreTherapistFiles: therapistRows.length > LIMIT,
    // Reasons without the values quoted from the file (a birth date, a symptom): as on /ops;
    // the full text is for staff on the server (`fleet imports show`) and in the staff email.
    patientFiles: patients.map((r) => {
      const newerImport = newer.get(r.id) ?? null;
      return {
        id: r.id,
        status: r.status,
        reason: r.reasonWithheld ?? (r.reason === null ? null : `(not shown here: fleet imports show ${r.id})`),
        errorCode: r.errorCode,
        attempts: r.attempts,
        failedAt: r.failedAt?.toISOString() ?? null,
        /** A corrected re-upload under the same name imported since (then only the discard is left). */
        newerImport,
        /** What helps, by what failed (a requeue does not help a file whose content or name is wrong). */
        nextStep: newerImport ? newerImportNextStep(r, newerImport) : failureNextStep(r),
      };
    }),
    therapistFiles: therapists.map((r) => ({
      id: r.id,
      path: r.path,
      status: r.status,
      reason: r.reason,
      attempts: r.attempts,
      finishedAt: r.finishedAt?.toISOString() ?? null,
      /** A later file of the same postcode imported since: this one needs no look. */
      supersededBy: ((l) => (l ? { id: l.id, path: l.path, status: l.status, finishedAt: l.finishedAt?.toISOString() ?? null } : null))(superseded.get(r.id)),
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
  database: true,
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
<h2>Patient registration files <span class="muted">(${count(f.patientFiles.length, f.morePatientFiles)})</span></h2>
${f.morePatientFiles ? html`<p class="muted">More than ${LIMIT} failed: the newest ${LIMIT} are shown. All of them: <code>fleet imports list --status failed --limit 1000</code>.</p>` : ''}
${f.patientFiles.length
  ? html`<div class="scroll"><table><thead><tr><th>Record</th><th>Failed</th><th>Reason</th><th>Attempts</th></tr></thead><tbody>${f.patientFiles.map(
      (r) => html`<tr><td class="id"><code>${r.id}</code></td><td>${when(r.failedAt ? new Date(r.failedAt) : null)}</td><td class="reason">${r.reason ?? ''}${r.errorCode ? html`<div class="muted">code <code>${r.errorCode}</code></div>` : ''}<div class="muted">${r.nextStep}</div></td><td>${r.attempts}</td></tr>`,
    )}</tbody></table></div>`
  : html`<p class="muted">none</p>`}
<h2>Therapist scraper files <span class="muted">(${count(f.therapistFiles.length, f.moreTherapistFiles)})</span></h2>
${f.moreTherapistFiles ? html`<p class="muted">More than ${LIMIT} failed or partial: the newest ${LIMIT} are shown. All of them: <code>fleet imports list --kind therapist --status failed,partial --limit 1000</code>.</p>` : ''}
${f.therapistFiles.length
  ? html`<div class="scroll"><table><thead><tr><th>Record</th><th>File</th><th>Status</th><th>Reason</th><th>Finished</th></tr></thead><tbody>${f.therapistFiles.map(
      (r) =>
        html`<tr><td class="id"><a href="/therapist-imports/files/${r.id}"><code>${r.id}</code></a></td><td><code>${r.path}</code></td><td>${r.status}${
          r.supersededBy
            ? html`<div class="muted">replaced since by <a href="/therapist-imports/files/${r.supersededBy.id}">#${r.supersededBy.id}</a> <code>${r.supersededBy.path}</code> (${r.supersededBy.status}): nothing to do</div>`
            : ''
        }</td><td class="reason">${r.reason ?? ''}</td><td>${when(r.finishedAt ? new Date(r.finishedAt) : null)}</td></tr>`,
    )}</tbody></table></div>`
  : html`<p class="muted">none</p>`}
<h2>Therapist scraper files not imported that need a person <span class="muted">(${count(f.skippedTherapistFiles.length, f.moreSkippedTherapistFiles)})</span></h2>
<p class="muted">Skipped: a name that does not fit, too large, or not readable; not replaced since by an import of the same postcode (or, renamed, of the same content). All skipped files: <code>fleet imports list --kind therapist --status skipped</code>.</p>
${f.skippedTherapistFiles.length
  ? html`<div class="scroll"><table><thead><tr><th>Record</th><th>File</th><th>Reason</th><th>Seen</th></tr></thead><tbody>${f.skippedTherapistFiles.map(
      (r) =>
        html`<tr><td class="id"><a href="/therapist-imports/files/${r.id}"><code>${r.id}</code></a></td><td><code>${r.path}</code></td><td class="reason">${r.reason ?? ''}<div class="muted">${r.nextStep}</div></td><td>${when(r.finishedAt ? new Date(r.finishedAt) : null)}</td></tr>`,
    )}</tbody></table></div>`
  : html`<p class="muted">none</p>`}`;
      res.type('html').send(page('Failed imports · Curavani Fleet', body, { nav: true }));
    });
    return router;
  },
};
