import { loadWeeklyFacts, type WeeklyFacts } from '../../libs/db/repositories/weekly-status.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { signUnsubscribeToken } from '../../libs/weekly/unsubscribe-token.js';
import { renderWeeklyEmail } from './template.js';

export function composeWeeklyEmail(ctx: FleetContext, facts: WeeklyFacts) {
  const w = ctx.config.weekly;
  const token = signUnsubscribeToken(w.unsubscribeSecret, facts.patientId);
  const rendered = renderWeeklyEmail(facts, {
    unsubscribeUrl: `${ctx.config.http.publicBaseUrl}/unsubscribe/${token}`,
    unsubscribeMailto: `mailto:${w.unsubscribeMailto}?subject=${encodeURIComponent(`Abmelden ${token}`)}`,
    contactEmail: w.contactEmail,
    contactPhone: w.contactPhone,
  });
  // Sent from MAIL_FROM (noreply@), but the email invites questions: a reply reaches staff.
  return { ...rendered, fromAddress: ctx.config.mail.from, replyToAddress: w.contactEmail };
}

/** The email a patient would get now (CLI preview); null when the patient does not exist. */
export async function previewWeeklyEmail(ctx: FleetContext, patientId: number) {
  const facts = await loadWeeklyFacts(ctx.database.db, patientId, ctx.clock.now());
  if (!facts) return null;
  return { facts, email: { to: facts.email, from: ctx.config.mail.from, ...composeWeeklyEmail(ctx, facts) } };
}
