import type { FileOutcome } from '../../libs/db/repositories/therapist-import.js';
/** Builders of scraper files for tests and the benchmark (DOMAIN.md section 2 format). */

export interface TherapistLine {
  id?: string | null;
  status?: string;
  last_modified?: string;
  basic_info?: Record<string, unknown>;
  location?: Record<string, unknown>;
  contact?: Record<string, unknown> | null;
  languages?: string[];
  therapy_methods?: string[];
  telephone_hours?: Record<string, string[]>;
  [k: string]: unknown;
}

export const ADULT_TP = 'Tiefenpsychologisch fundierte Psychotherapie für Erwachsene in Einzeltherapie';
export const ADULT_VT = 'Verhaltenstherapie für Erwachsene in Einzeltherapie';
export const CHILD_VT = 'Verhaltenstherapie für Kinder und Jugendliche in Einzeltherapie';

export function therapistLine(over: {
  id?: string | null;
  status?: string;
  salutation?: string | null;
  title?: string | null;
  first?: string;
  last?: string | null;
  street?: string | null;
  house?: string | null;
  plz?: string;
  city?: string | null;
  phone?: string | null;
  email?: string | null;
  fax?: string | null;
  languages?: string[];
  methods?: string[];
  hours?: Record<string, string[]>;
  lastModified?: string;
} = {}): TherapistLine {
  const basic: Record<string, unknown> = {
    title: over.title === undefined ? null : over.title,
    first_name: over.first ?? 'Thomas',
    full_name: 'ignored',
    classification: 'Psychologischer Psychotherapeut',
  };
  if (over.salutation !== undefined) basic.salutation = over.salutation;
  else basic.salutation = 'Herr';
  if (over.last !== null) basic.last_name = over.last ?? 'Zeevaert';
  return {
    ...(over.id === null ? {} : { id: over.id ?? 'praxis1' }),
    status: over.status ?? 'new',
    last_modified: over.lastModified ?? '2025-07-02T03:13:24.425333',
    basic_info: basic,
    location: {
      street: over.street === undefined ? 'Hauptstraße' : over.street,
      house_number: over.house === undefined ? '15' : over.house,
      postal_code: over.plz ?? '52066',
      city: over.city === undefined ? 'Aachen' : over.city,
    },
    contact: {
      phone: over.phone === undefined ? '0241 12345' : over.phone,
      email: over.email === undefined ? 'praxis@example.org' : over.email,
      fax: over.fax === undefined ? null : over.fax,
    },
    languages: over.languages ?? ['Englisch'],
    therapy_methods: over.methods ?? [ADULT_TP],
    telephone_hours: over.hours ?? { monday: ['10:00-12:00'] },
  };
}

export function scraperFile(
  therapists: TherapistLine[],
  meta: Partial<{ scrape_id: string; scrape_date: string; postcode_area: string; total_therapists: number; new_therapists: number; modified_therapists: number; deleted_therapists: number }> = {},
): string {
  const count = (s: string) => therapists.filter((t) => t.status === s).length;
  return JSON.stringify(
    {
      metadata: {
        scrape_id: '52XXX_20250702',
        scrape_date: '2025-07-02T03:13:24.425211',
        postcode_area: '52XXX',
        total_therapists: therapists.length,
        new_therapists: count('new'),
        modified_therapists: count('modified'),
        deleted_therapists: count('deleted'),
        ...meta,
      },
      therapists,
    },
    null,
    2,
  );
}

/**
 * A file with an outcome of every kind: p1 created, p2 skipped (children only), p3 failed
 * (no last name), p4 `modified` but new (created, a status mismatch), and metadata that says 5
 * therapists where there are 4.
 */
export function everyOutcomeFile(): string {
  return scraperFile(
    [
      therapistLine({ id: 'p1', first: 'Anna', last: 'Adler' }),
      therapistLine({ id: 'p2', first: 'Bernd', last: 'Berg', methods: [CHILD_VT] }),
      therapistLine({ id: 'p3', first: 'Clara', last: null }),
      therapistLine({ id: 'p4', first: 'Dora', last: 'Dach', status: 'modified' }),
    ],
    { total_therapists: 5 },
  );
}

/** A file's outcome as the import records it when the file is not imported (`errorCode` `gave_up`: out of retries). */
export function notImportedOutcome(errorCode: string, reason: string): FileOutcome {
  return {
    status: 'failed',
    reason,
    counts: null,
    fileErrors: [reason],
    metadataDisagreements: [],
    failures: [],
    statusMismatches: [],
    replacedCorrections: [],
    finishedAt: new Date(),
    durationMs: 3,
    errorCode,
  };
}
