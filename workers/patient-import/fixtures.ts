import { randomBytes } from 'node:crypto';
import { signRegistration } from './signature.js';

/**
 * Registration files as the registration site writes them, for tests, benchmarks and
 * local drills (`fleet import patient-file`).
 */
export interface FixtureOptions {
  vorname?: string;
  nachname?: string;
  email?: string | null;
  token?: string;
  voucher?: boolean;
  patch?: (reg: Record<string, unknown>) => void;
}

export function registrationToken(): string {
  return randomBytes(16).toString('hex');
}

export function plainRegistration(o: FixtureOptions = {}): Record<string, unknown> {
  const token = o.token ?? registrationToken();
  const reg: Record<string, unknown> = {
    patient_data: {
      anrede: 'Herr',
      geschlecht: 'männlich',
      vorname: o.vorname ?? 'Max',
      nachname: o.nachname ?? 'Mustermann',
      strasse: 'Hauptstraße 1',
      plz: '52062',
      ort: 'Aachen',
      email: o.email === undefined ? `max.${token}@example.org` : o.email,
      telefon: '+49 241 123456',
      hausarzt: 'Dr. Beispiel',
      krankenkasse: 'AOK',
      geburtsdatum: '1990-04-12',
      symptome: ['Schlafstörungen', 'Ängste / Panikattacken'],
      erfahrung_mit_psychotherapie: false,
      empfehler_der_unterstuetzung: 'Hausarzt',
      verkehrsmittel: 'ÖPNV',
      offen_fuer_gruppentherapie: true,
      zeitliche_verfuegbarkeit: { montag: ['09:00-12:00'], mittwoch: ['14:00-18:00'] },
      raeumliche_verfuegbarkeit: { max_km: 30 },
      bevorzugtes_therapeutengeschlecht: 'Egal',
      bevorzugtes_therapieverfahren: 'Verhaltenstherapie',
    },
    consent_metadata: {
      ip_address: '37.201.29.143',
      user_agent: 'Mozilla/5.0 (X11; Linux x86_64)',
      timestamp_utc: '2025-07-05T14:33:55Z',
      voucher_booking: o.voucher ?? false,
    },
    registration_timestamp: '2025-07-05 14:33:55',
    registration_token: token,
  };
  o.patch?.(reg);
  return reg;
}

/** `registrations/{nachname}_{vorname}_{date}_{token}.json`, names percent-encoded. */
export function objectNameFor(reg: Record<string, unknown>, prefix = 'registrations/'): string {
  const p = reg.patient_data as Record<string, string> | undefined;
  const token = String(reg.registration_token ?? 'x').slice(0, 8);
  return `${prefix}${encodeURIComponent(p?.nachname ?? 'Unbekannt')}_${encodeURIComponent(p?.vorname ?? 'Unbekannt')}_20250705_${token}.json`;
}

export function signedRegistration(
  plain: Record<string, unknown>,
  opts: { secret: string; environment?: string; nested?: boolean },
): Record<string, unknown> {
  return signRegistration(plain, {
    secret: opts.secret,
    environment: opts.environment ?? 'production',
    timestamp: '2025-07-05T14:33:55+00:00',
    ...(opts.nested ? { nested: true } : {}),
  });
}

/** Bytes the way PHP writes them (compact, unescaped unicode and slashes). */
export function fileBytes(doc: unknown): Buffer {
  return Buffer.from(JSON.stringify(doc), 'utf8');
}
