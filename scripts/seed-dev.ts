/**
 * Seeds a realistic development database for the weekly status emails: patients in every
 * state, searches (aktiv, pausiert, erfolgreich, abgebrochen) with requests to therapists
 * and answers, so `fleet weekly preview <id>` and `fleet weekly run --dry-run` show
 * something real on a fresh machine.
 *
 *   npm run seed            # migrate, replace earlier seed rows, print the patients
 *
 * Seed rows are recognised by zahlungsreferenz `SEED-...` and therapists by the email
 * domain seed.invalid; running it again replaces them and touches nothing else.
 */
import { inArray, like, sql } from 'drizzle-orm';
import { loadConfig } from '../libs/config/index.js';
import { openDatabase } from '../libs/db/client.js';
import { runMigrations } from '../libs/db/migrate.js';
import { patienten, platzsuche, therapeutAnfragePatient, therapeuten, therapeutenanfrage, type PatientStatus } from '../libs/db/schema/index.js';

const config = loadConfig();
if (config.env === 'production') {
  console.error('seed-dev: refusing to seed a production database (NODE_ENV=production)');
  process.exit(2);
}
await runMigrations(config.db.url, { platform: config.db.platformMigrations });
const database = openDatabase({ ...config.db, applicationName: 'curavani-fleet:seed' });
const db = database.db;
const now = new Date();
const daysAgo = (d: number) => new Date(now.getTime() - d * 86_400_000);

type Answer = 'angenommen' | 'abgelehnt' | 'keine_antwort' | 'anstehend';
interface SeedPatient {
  vorname: string;
  nachname: string;
  anrede: 'Herr' | 'Frau';
  status: PatientStatus;
  email: string | null;
  optOut?: boolean;
  lastSentDaysAgo?: number;
  /** One entry per search: its status and its requests (days since sent, answer). */
  searches: Array<{ status: 'aktiv' | 'erfolgreich' | 'pausiert' | 'abgebrochen'; requests: Array<[sentDaysAgo: number | null, answer: Answer]> }>;
  note: string;
}

const seed: SeedPatient[] = [
  { vorname: 'Anna', nachname: 'Beispiel', anrede: 'Frau', status: 'auf_der_Suche', email: 'anna.beispiel@example.org', note: 'first email: 8 requests, 2 answers',
    searches: [{ status: 'aktiv', requests: [[20, 'abgelehnt'], [18, 'keine_antwort'], [15, 'anstehend'], [12, 'abgelehnt'], [9, 'anstehend'], [5, 'anstehend'], [3, 'anstehend'], [1, 'anstehend']] }] },
  { vorname: 'Ben', nachname: 'Schäfer', anrede: 'Herr', status: 'auf_der_Suche', email: 'ben.schaefer@example.org', lastSentDaysAgo: 7, note: 'sent last week, 2 new requests, an acceptance',
    searches: [{ status: 'aktiv', requests: [[30, 'abgelehnt'], [25, 'abgelehnt'], [10, 'angenommen'], [4, 'anstehend'], [2, 'anstehend']] }] },
  { vorname: 'Clara', nachname: 'Neumann', anrede: 'Frau', status: 'auf_der_Suche', email: 'clara.neumann@example.org', note: 'active search, no requests yet',
    searches: [{ status: 'aktiv', requests: [[null, 'anstehend']] }] },
  { vorname: 'Lena', nachname: 'Zwei-Suchen', anrede: 'Frau', status: 'auf_der_Suche', email: 'lena.zwei@example.org', lastSentDaysAgo: 8, note: 'two active searches -> one email',
    searches: [{ status: 'aktiv', requests: [[14, 'abgelehnt'], [6, 'anstehend']] }, { status: 'aktiv', requests: [[3, 'anstehend'], [2, 'anstehend']] }] },
  { vorname: 'Max <script>alert(1)</script>', nachname: 'Müller-Lüdenscheidt & Söhne', anrede: 'Herr', status: 'auf_der_Suche', email: 'max.mueller@example.org', note: 'name needing escaping',
    searches: [{ status: 'aktiv', requests: [[2, 'anstehend']] }] },
  { vorname: 'David', nachname: 'Abgemeldet', anrede: 'Herr', status: 'auf_der_Suche', email: 'david@example.org', optOut: true, note: 'skipped: opted out',
    searches: [{ status: 'aktiv', requests: [[5, 'anstehend']] }] },
  { vorname: 'Emma', nachname: 'Ohnemail', anrede: 'Frau', status: 'auf_der_Suche', email: null, note: 'skipped: no email',
    searches: [{ status: 'aktiv', requests: [[5, 'anstehend']] }] },
  { vorname: 'Felix', nachname: 'Pausiert', anrede: 'Herr', status: 'auf_der_Suche', email: 'felix@example.org', note: 'not a candidate: search paused',
    searches: [{ status: 'pausiert', requests: [[10, 'abgelehnt']] }] },
  { vorname: 'Greta', nachname: 'Offen', anrede: 'Frau', status: 'offen', email: 'greta@example.org', note: 'not a candidate: status offen', searches: [] },
  { vorname: 'Hans', nachname: 'Gefunden', anrede: 'Herr', status: 'in_Therapie', email: 'hans@example.org', note: 'not a candidate: in therapy',
    searches: [{ status: 'erfolgreich', requests: [[40, 'abgelehnt'], [30, 'angenommen']] }] },
  { vorname: 'Ida', nachname: 'Fertig', anrede: 'Frau', status: 'Therapie_abgeschlossen', email: 'ida@example.org', note: 'not a candidate: therapy finished',
    searches: [{ status: 'erfolgreich', requests: [[200, 'angenommen']] }] },
  { vorname: 'Jonas', nachname: 'Abbruch', anrede: 'Herr', status: 'Suche_abgebrochen', email: 'jonas@example.org', note: 'not a candidate: search cancelled',
    searches: [{ status: 'abgebrochen', requests: [[50, 'keine_antwort']] }] },
  { vorname: 'Karl', nachname: 'Therapieabbruch', anrede: 'Herr', status: 'Therapie_abgebrochen', email: 'karl@example.org', note: 'not a candidate: therapy broken off', searches: [] },
];

// Replace earlier seed rows (and only those).
const old = await db.select({ id: patienten.id }).from(patienten).where(like(patienten.zahlungsreferenz, 'SEED-%'));
if (old.length) {
  const oldIds = old.map((r) => r.id);
  const oldSearches = await db.select({ id: platzsuche.id }).from(platzsuche).where(inArray(platzsuche.patientId, oldIds));
  if (oldSearches.length) await db.delete(therapeutAnfragePatient).where(inArray(therapeutAnfragePatient.platzsucheId, oldSearches.map((s) => s.id)));
  await db.delete(platzsuche).where(inArray(platzsuche.patientId, oldIds));
  await db.delete(patienten).where(inArray(patienten.id, oldIds));
}
const oldTherapists = await db.select({ id: therapeuten.id }).from(therapeuten).where(like(therapeuten.email, '%@seed.invalid'));
if (oldTherapists.length) {
  await db.delete(therapeutenanfrage).where(inArray(therapeutenanfrage.therapistId, oldTherapists.map((t) => t.id)));
  await db.delete(therapeuten).where(inArray(therapeuten.id, oldTherapists.map((t) => t.id)));
}

const therapists = await db
  .insert(therapeuten)
  .values(
    Array.from({ length: 12 }, (_, i) => ({
      anrede: i % 2 ? 'Herr' : 'Frau',
      geschlecht: i % 2 ? 'männlich' : 'weiblich',
      vorname: `Praxis${i + 1}`,
      nachname: `Seed`,
      plz: `1040${i % 10}`,
      ort: 'Berlin',
      email: `praxis${i + 1}@seed.invalid`,
    })),
  )
  .returning({ id: therapeuten.id });

const printed: Array<{ id: number; status: string; searches: string; note: string }> = [];
let t = 0;
for (const [i, p] of seed.entries()) {
  const [row] = await db
    .insert(patienten)
    .values({
      anrede: p.anrede,
      geschlecht: p.anrede === 'Herr' ? 'männlich' : 'weiblich',
      vorname: p.vorname,
      nachname: p.nachname,
      email: p.email,
      plz: '10405',
      ort: 'Berlin',
      zahlungsreferenz: `SEED-${String(i + 1).padStart(3, '0')}`,
      status: p.status,
      weeklyUpdateOptOut: p.optOut ?? false,
      weeklyUpdateLastSent: p.lastSentDaysAgo === undefined ? null : daysAgo(p.lastSentDaysAgo),
      createdAt: daysAgo(60),
    })
    .returning({ id: patienten.id });
  for (const s of p.searches) {
    const [search] = await db.insert(platzsuche).values({ patientId: row!.id, status: s.status, createdAt: daysAgo(45) }).returning({ id: platzsuche.id });
    for (const [sent, answer] of s.requests) {
      const answered = answer === 'angenommen' || answer === 'abgelehnt';
      const antworttyp = answer === 'angenommen' ? 'teilweise_Annahme' : answer === 'abgelehnt' ? 'vollstaendige_Ablehnung' : answer === 'keine_antwort' ? 'keine_Antwort' : null;
      const [req] = await db
        .insert(therapeutenanfrage)
        .values({
          therapistId: therapists[t++ % therapists.length]!.id,
          gesendetDatum: sent === null ? null : daysAgo(sent),
          antwortDatum: answered && sent !== null ? daysAgo(Math.max(0, sent - 2)) : null,
          antworttyp,
        })
        .returning({ id: therapeutenanfrage.id });
      await db.insert(therapeutAnfragePatient).values({ therapeutenanfrageId: req!.id, platzsucheId: search!.id, status: answer });
    }
  }
  printed.push({ id: row!.id, status: p.status, searches: p.searches.map((s) => s.status).join('+') || '-', note: p.note });
}
const [{ n }] = (await db.execute<{ n: number }>(sql`select count(*)::int as n from patient_service.patienten`)) as unknown as [{ n: number }];
await database.close();

console.log(`seeded ${printed.length} patients and ${therapists.length} therapists (database now holds ${n} patients)\n`);
for (const p of printed) console.log(`  ${String(p.id).padStart(5)}  ${p.status.padEnd(22)} ${p.searches.padEnd(12)} ${p.note}`);
console.log(`\ntry: npm run -s fleet -- weekly preview ${printed[0]!.id}\n     npm run -s fleet -- weekly run --dry-run`);
