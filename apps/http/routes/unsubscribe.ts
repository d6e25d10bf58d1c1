import express, { Router, type Request, type Response } from 'express';
import { optBackInToWeeklyUpdates, optOutOfWeeklyUpdates, weeklyOptOutState } from '../../../libs/db/repositories/weekly-status.js';
import { verifyUnsubscribeToken } from '../../../libs/weekly/unsubscribe-token.js';
import { escapeHtml, html, type SafeHtml } from '../html.js';
import type { HttpRouteDeps, HttpRouteModule } from './types.js';

/**
 * One-click unsubscribe from the weekly status emails (RFC 8058). The link in the email's
 * List-Unsubscribe header carries a signed token; no login, no cookies.
 * - POST /unsubscribe/:token: opts the patient out (mail clients post
 *   `List-Unsubscribe=One-Click`; the page's button posts too) and answers 200, also when
 *   already opted out. The opt-out that changes the patient is written to the audit table
 *   and as a `patient.updated` event (optOutOfWeeklyUpdates); a repeat writes neither.
 * - GET /unsubscribe/:token: a small German page with a button that posts. GET never
 *   changes anything (link scanners open links).
 * - POST /unsubscribe/:token/resubscribe: undoes the opt-out (a patient who clicked by
 *   mistake): the pages of an opted-out patient offer it as a button. Audited as
 *   `weekly.opt-in`, with the same event. GET on it shows the page of /unsubscribe/:token.
 * A forged or altered token gets 404 and changes nothing. When the database fails (away, a
 * restart), the patient gets a German page asking to try again later (503), not the app's
 * English JSON error.
 */
function germanPage(title: string, body: SafeHtml): string {
  return `<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2933;background:#f5f7fa;margin:0;line-height:1.5}
main{max-width:520px;margin:48px auto;background:#fff;border-radius:8px;padding:24px 28px}h1{font-size:20px;margin:0 0 12px}
button{font-size:16px;padding:10px 18px;border-radius:6px;border:1px solid #1f2933;background:#1f2933;color:#fff;cursor:pointer}
.muted{color:#616e7c;font-size:14px}</style></head>
<body><main>${String(body)}</main></body></html>`;
}

/** A bad, cut-off or unknown link: say how to reach staff (the patient cannot unsubscribe here). */
function invalidPage(contact: string): string {
  return germanPage(
    'Link ungültig',
    html`<h1>Dieser Link ist leider ungültig</h1>
<p>Bitte verwenden Sie den Link aus Ihrer letzten E-Mail von Curavani oder schreiben Sie uns an <a href="mailto:${contact}">${contact}</a>, dann melden wir Sie gerne ab.</p>`,
  );
}

/**
 * The page of a request that failed (PostgreSQL away or restarting): try again later, or write
 * to staff. Says nothing about the cause (the page is public) and changes nothing.
 */
function unavailablePage(contact: string): string {
  return germanPage(
    'Vorübergehend nicht möglich',
    html`<h1>Das hat gerade leider nicht geklappt</h1>
<p>Bitte versuchen Sie es in ein paar Minuten noch einmal. Sie können uns auch schreiben: <a href="mailto:${contact}">${contact}</a></p>`,
  );
}

/**
 * `List-Unsubscribe=One-Click` as a urlencoded form (parsed by express) or a multipart one
 * (raw bytes, parsed by the platform's own form-data parser).
 */
async function isOneClick(req: Request): Promise<boolean> {
  if (Buffer.isBuffer(req.body)) {
    const form = await new globalThis.Request('http://localhost/', { method: 'POST', headers: { 'content-type': req.get('content-type') ?? '' }, body: req.body })
      .formData()
      .catch(() => null);
    return form?.get('List-Unsubscribe') === 'One-Click';
  }
  return (req.body as Record<string, unknown> | undefined)?.['List-Unsubscribe'] === 'One-Click';
}

/**
 * The page of a patient who is opted out: what that means, and a button that undoes it
 * (`resubscribe` relative to the page's own address, /unsubscribe/:token or its /resubscribe).
 */
function optedOutPage(heading: string, text: string, resubscribeAction: string, contact: string): string {
  return germanPage(
    'Abgemeldet',
    html`<h1>${heading}</h1><p>${text}</p>
<form method="post" action="${resubscribeAction}"><p class="muted">Aus Versehen abgemeldet?</p><button type="submit">Doch wieder erhalten</button></form>
<p class="muted">Fragen? Schreiben Sie uns: <a href="mailto:${contact}">${contact}</a></p>`,
  );
}

/**
 * The undo button's action relative to the page's own address: `<token>/resubscribe` from
 * /unsubscribe/<token>, and `resubscribe` from /unsubscribe/<token>/ (a link opened with a
 * trailing slash, which the route matches too; the other would resolve to <token>/<token>/...).
 */
function resubscribeAction(req: Request): string {
  return req.path.endsWith('/') ? 'resubscribe' : `${String(req.params.token)}/resubscribe`;
}

function noStore(res: Response): void {
  res.setHeader('Cache-Control', 'no-store');
}

export function unsubscribeRouter({ ctx }: HttpRouteDeps): Router {
  const router = Router();
  // The current secret, then earlier ones (UNSUBSCRIBE_SECRET_PREVIOUS): links sent before a rotation keep working.
  const secrets = [ctx.config.weekly.unsubscribeSecret, ...ctx.config.weekly.previousUnsubscribeSecrets];
  const contact = ctx.config.weekly.contactEmail;
  const patientOf = (req: Request) => verifyUnsubscribeToken(secrets, String(req.params.token ?? ''));
  const invalid = invalidPage(contact);
  const unavailable = unavailablePage(contact);
  /** A handler failed: logged by route pattern (the path carries the token), answered with the German page. */
  const failed = (res: Response, route: string, err: unknown) => {
    ctx.log.error({ err, route }, 'unsubscribe request failed');
    if (res.headersSent) return;
    res.status(503).setHeader('Retry-After', '60');
    res.type('html').send(unavailable);
  };
  /** The token's patient for a change (POST), or null once answered 404 and logged (without the token). */
  const patientToChange = (req: Request, res: Response, what: string, path: string): number | null => {
    const patientId = patientOf(req);
    if (patientId === null) {
      ctx.log.warn({ path }, `${what} with an invalid token refused`);
      res.status(404).type('html').send(invalid);
    }
    return patientId;
  };

  // A link cut off before its token (a mail client wrapping the plain-text URL) gets the same
  // German page as a bad token, not the app's English 404.
  router.all('/', (_req, res) => {
    noStore(res);
    res.status(404).type('html').send(invalid);
  });

  router.get('/:token', async (req, res) => {
    try {
      noStore(res);
      const patientId = patientOf(req);
      const state = patientId === null ? null : await weeklyOptOutState(ctx.database.db, patientId);
      if (patientId === null || state === null) return void res.status(404).type('html').send(invalid);
      if (state.optedOut) {
        return void res
          .status(200)
          .type('html')
          .send(optedOutPage('Sie sind bereits abgemeldet', 'Sie erhalten keine wöchentlichen Zwischenstände mehr.', resubscribeAction(req), contact));
      }
      res.status(200).type('html').send(
        germanPage(
          'Wöchentliche Nachricht abbestellen',
          html`<h1>Wöchentliche Nachricht abbestellen</h1>
<p>Möchten Sie den wöchentlichen Zwischenstand zu Ihrer Platzsuche nicht mehr per E-Mail erhalten?</p>
<form method="post"><button type="submit">Ja, abmelden</button></form>
<p class="muted">Ihre Platzsuche läuft unverändert weiter. Wichtige Nachrichten zu Ihrer Suche erhalten Sie weiterhin.</p>`,
        ),
      );
    } catch (err) {
      failed(res, 'GET /unsubscribe/:token', err);
    }
  });

  // RFC 8058 allows the one-click body as a form (its own example is multipart/form-data).
  const forms = [express.urlencoded({ extended: false, limit: '2kb' }), express.raw({ type: 'multipart/form-data', limit: '16kb' })];
  router.post('/:token', ...forms, async (req, res) => {
    try {
      noStore(res);
      const patientId = patientToChange(req, res, 'unsubscribe', '/unsubscribe');
      if (patientId === null) return;
      const oneClick = await isOneClick(req);
      const r = await optOutOfWeeklyUpdates(ctx.database.db, patientId, { actor: `patient/${patientId}`, via: oneClick ? 'one-click' : 'unsubscribe-page', source: 'unsubscribe' });
      if (!r.found) return void res.status(404).type('html').send(invalid);
      ctx.log.info({ patientId, changed: r.changed, oneClick }, 'weekly status opt-out');
      res
        .status(200)
        .type('html')
        .send(
          optedOutPage(
            'Sie wurden abgemeldet',
            // Not "no planned message is sent any more": an email already in a batch being handed
            // to the provider cannot be called back (docs/email.md, "Sending, at most once").
            'Sie erhalten keine wöchentlichen Zwischenstände mehr. Eine Nachricht, die bereits unterwegs war, kann Sie noch ein letztes Mal erreichen.',
            resubscribeAction(req),
            contact,
          ),
        );
    } catch (err) {
      failed(res, 'POST /unsubscribe/:token', err);
    }
  });

  // GET never changes anything: the page of the token, with its buttons.
  router.get('/:token/resubscribe', (req, res) => {
    noStore(res);
    res.redirect(303, `../${encodeURIComponent(String(req.params.token))}`);
  });

  router.post('/:token/resubscribe', ...forms, async (req, res) => {
    try {
      noStore(res);
      const patientId = patientToChange(req, res, 'resubscribe', '/unsubscribe/resubscribe');
      if (patientId === null) return;
      const r = await optBackInToWeeklyUpdates(ctx.database.db, patientId, { actor: `patient/${patientId}`, via: 'unsubscribe-page', source: 'unsubscribe' });
      if (!r.found) return void res.status(404).type('html').send(invalid);
      ctx.log.info({ patientId, changed: r.changed }, 'weekly status opt-out undone');
      res.status(200).type('html').send(
        germanPage(
          'Wieder angemeldet',
          html`<h1>Sie erhalten den Zwischenstand wieder</h1><p>Wir schicken Ihnen wieder einmal pro Woche den Zwischenstand zu Ihrer Platzsuche.</p>
<p class="muted">Abmelden können Sie sich jederzeit über den Link in jeder dieser E-Mails. Fragen? Schreiben Sie uns: <a href="mailto:${contact}">${contact}</a></p>`,
        ),
      );
    } catch (err) {
      failed(res, 'POST /unsubscribe/:token/resubscribe', err);
    }
  });
  return router;
}

export const unsubscribeRoutes: HttpRouteModule = {
  name: 'unsubscribe',
  path: '/unsubscribe',
  access: 'public',
  router: unsubscribeRouter,
};
