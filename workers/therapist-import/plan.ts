import { hash } from 'node:crypto';
import type { LineName, ScraperStatus, ScraperTherapist, ParsedLine } from './scraper-file.js';
import type { StoredTherapist } from '../../libs/db/repositories/therapist-import.js';

/**
 * Pure logic of one file: map each scraper therapist to platform fields, match it against
 * what the platform has (external id, then primary, then secondary), compare field by field
 * and decide what to write. No I/O here: the store loads candidates and applies the plan.
 */

/** The platform columns an import writes (everything else is never touched). */
export const importFields = [
  'anrede',
  'geschlecht',
  'titel',
  'vorname',
  'nachname',
  'strasse',
  'plz',
  'ort',
  'telefon',
  'fax',
  'email',
  'telefonische_erreichbarkeit',
  'fremdsprachen',
  'psychotherapieverfahren',
] as const;
export type ImportField = (typeof importFields)[number];

/** The importable fields of a therapist row (the repository's row without id and status). */
export type TherapistFields = Omit<StoredTherapist, 'id' | 'status'>;

/**
 * The import's fields as the scraper gave them (stored compact: an empty field is left out). On
 * record, a field the last line left empty keeps the value an earlier line gave (empty never
 * overwrites, as on the platform row): the store merges them when it writes the record.
 */
export type ScrapedFields = Partial<Record<ImportField, unknown>>;

/** What is on record of a therapist's last scrape. */
export interface ScrapedRecord {
  /** `scrapedRecord(compactScraped(line)).digest` of the last line (its non-empty fields, not the ones carried over). */
  digest: string;
  /**
   * The fields; null when the platform row still holds them as the import left it (nothing
   * changed it since): it then says all the record would, and the fields are not read.
   */
  fields: ScrapedFields | null;
}

/** A platform therapist as the matcher sees it. */
export interface ExistingTherapist extends TherapistFields {
  id: number;
  status: string;
  /**
   * What the scraper last said of this therapist (null: nothing on record, e.g. imported before
   * this was kept, or entered by staff). A platform value that differs from it is a staff edit.
   */
  scraped?: ScrapedRecord | null;
}

export interface ExternalIdEntry {
  therapistId: number | null;
  deleted: boolean;
}

export const VERFAHREN = {
  vt: 'Verhaltenstherapie',
  tp: 'tiefenpsychologisch_fundierte_Psychotherapie',
  egal: 'egal',
} as const;

export function adultMethods(methods: string[]): string[] {
  return methods.filter((m) => /erwachsene/i.test(m));
}

/**
 * therapy_methods -> psychotherapieverfahren, from the adult methods only (only adults are
 * matched): "Verhaltenstherapie" -> VT, "tiefenpsychologisch" (any case) -> TP, both or neither -> egal.
 */
export function mapVerfahren(methods: string[]): string {
  const vt = methods.some((m) => /verhaltenstherapie/i.test(m));
  const tp = methods.some((m) => /tiefenpsychologisch/i.test(m));
  if (vt && !tp) return VERFAHREN.vt;
  if (tp && !vt) return VERFAHREN.tp;
  return VERFAHREN.egal;
}

/**
 * Maps one valid scraper therapist to platform fields. An empty salutation gives null here
 * (a new therapist then gets `Frau`/`weiblich`; an existing one keeps its own).
 */
export function mapTherapist(t: ScraperTherapist): TherapistFields {
  const sal = t.basic_info.salutation;
  // A house number without its street is no address: nothing to write.
  const street = t.location.street ? text(t.location.house_number ? `${t.location.street} ${t.location.house_number}` : t.location.street) : null;
  return {
    anrede: sal || null,
    geschlecht: sal === 'Herr' ? 'männlich' : sal === 'Frau' ? 'weiblich' : null,
    titel: text(t.basic_info.title),
    vorname: text(t.basic_info.first_name) ?? t.basic_info.first_name,
    nachname: text(t.basic_info.last_name) ?? t.basic_info.last_name,
    strasse: street,
    plz: t.location.postal_code,
    ort: text(t.location.city),
    telefon: text(t.contact.phone),
    fax: text(t.contact.fax),
    email: text(t.contact.email),
    telefonische_erreichbarkeit: textHours(t.telephone_hours),
    fremdsprachen: textList(t.languages),
    psychotherapieverfahren: mapVerfahren(adultMethods(t.therapy_methods)),
  };
}

/** A list of text as stored (each item as `text` keeps it, empty ones left out); null when empty. The same array when nothing changes. */
function textList(xs: string[]): string[] | null {
  let out: string[] | null = null;
  for (let i = 0; i < xs.length; i++) {
    const t = text(xs[i]);
    if (t !== xs[i] && !out) out = xs.slice(0, i);
    if (out && t) out.push(t);
  }
  const list = out ?? xs;
  return list.length ? list : null;
}

/** Telephone hours as stored: every time slot as `text` keeps it. The same object when nothing changes. */
function textHours(h: Record<string, string[]> | null): Record<string, string[]> | null {
  if (!h) return null;
  let out: Record<string, string[]> | null = null;
  for (const day of Object.keys(h)) {
    const slots = textList(h[day]!);
    if (slots !== h[day] && !out) out = { ...h };
    if (out) {
      if (slots) out[day] = slots;
      else delete out[day];
    }
  }
  const hours = out ?? h;
  return Object.keys(hours).length ? hours : null;
}

/** The values a brand-new therapist gets (empty salutation -> Frau). */
export function fieldsForNew(f: TherapistFields): TherapistFields {
  return f.anrede ? f : { ...f, anrede: 'Frau', geschlecht: 'weiblich' };
}

export function isEmptyValue(v: unknown): boolean {
  if (v === null || v === undefined) return true;
  if (typeof v === 'string') return v.trim() === '';
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v).length === 0;
  return false;
}

function canonical(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export function sameValue(a: unknown, b: unknown): boolean {
  // Cheap answers first (most fields are plain strings); same results as the general rule below.
  if (a === b) return true;
  if (a === null || a === undefined || b === null || b === undefined) return isEmptyValue(a) && isEmptyValue(b);
  if (typeof a === 'string' && typeof b === 'string') return a.trim() === '' && b.trim() === '';
  if (isEmptyValue(a) && isEmptyValue(b)) return true;
  return sameCanonical(a, b);
}

/** `canonical(a) === canonical(b)` without building the strings (the jsonb fields of every line). */
function sameCanonical(a: unknown, b: unknown): boolean {
  const aNull = a === null || a === undefined || (typeof a === 'number' && !Number.isFinite(a));
  const bNull = b === null || b === undefined || (typeof b === 'number' && !Number.isFinite(b));
  if (aNull || bNull) return aNull && bNull;
  if (typeof a !== 'object' || typeof b !== 'object') {
    if (typeof a === 'object' || typeof b === 'object') return canonical(a) === canonical(b);
    return a === b || JSON.stringify(a) === JSON.stringify(b);
  }
  const aArr = Array.isArray(a);
  if (aArr !== Array.isArray(b)) return false;
  if (aArr) {
    const x = a as unknown[];
    const y = b as unknown[];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!sameCanonical(x[i], y[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  for (const k of keys) {
    if (!Object.prototype.hasOwnProperty.call(y, k) || !sameCanonical(x[k], y[k])) return false;
  }
  return true;
}

/** `sameValue`, except that emails differing only in case are the same (as matching compares them). */
function sameField(field: ImportField, a: unknown, b: unknown): boolean {
  if (sameValue(a, b)) return true;
  return field === 'email' && typeof a === 'string' && typeof b === 'string' && a.toLowerCase() === b.toLowerCase();
}

/**
 * The fields to write: only those whose value really changed (an email only in case is not), and never an empty value over
 * a non-empty one. With what the scraper said last time (`scraped`), a field the scraper has
 * not changed since is not written either: a platform value that differs from it is a staff
 * correction, and it stays. A field the scraper changed is written (its news is newer than
 * the correction).
 */
export function diffFields(existing: TherapistFields, incoming: TherapistFields, scraped?: ScrapedFields | null): Partial<TherapistFields> {
  const changes: Partial<Record<ImportField, unknown>> = {};
  for (const field of importFields) {
    const next = incoming[field];
    if (isEmptyValue(next)) continue;
    if (sameField(field, existing[field], next)) continue;
    if (scraped && sameField(field, scraped[field], next)) continue;
    if (field === 'strasse' && dropsHouseNumber(existing.strasse, next as string)) continue;
    changes[field] = next;
  }
  return changes as Partial<TherapistFields>;
}

/** The scraper's fields as stored: empty ones left out. */
export function compactScraped(incoming: TherapistFields): ScrapedFields {
  const out: ScrapedFields = {};
  for (const field of importFields) if (!isEmptyValue(incoming[field])) out[field] = incoming[field];
  return out;
}

/** A record as written: its fields as JSON and their digest (the same fields in the same order give the same digest). */
export function scrapedRecord(fields: ScrapedFields): { json: string; digest: string } {
  const json = JSON.stringify(fields);
  return { json, digest: hash('sha1', json, 'base64') };
}

/**
 * Whether the platform row, with `changes` written, holds the record's fields: every non-empty
 * one, or a longer form of the street the import keeps ("Marktplatz 3" for "Marktplatz"). Then
 * the row says all the record would until something else changes it.
 */
export function holdsScraped(existing: TherapistFields, changes: Partial<TherapistFields>, incoming: TherapistFields): boolean {
  for (const field of importFields) {
    const s = incoming[field];
    if (isEmptyValue(s)) continue;
    if (!heldAsScraped(field, field in changes ? changes[field] : existing[field], s)) return false;
  }
  return true;
}

/** Whether the platform row holds the record's values of the fields the line leaves empty (which the record keeps). */
function holdsCarried(existing: TherapistFields, onRecord: ScrapedFields, incoming: TherapistFields): boolean {
  for (const field of importFields) {
    const s = onRecord[field];
    if (!isEmptyValue(incoming[field]) || isEmptyValue(s)) continue;
    if (!heldAsScraped(field, existing[field], s)) return false;
  }
  return true;
}

/** Whether a platform value is the scraper's non-empty value `s` as the import leaves it (the same, or the street with the number kept). */
function heldAsScraped(field: ImportField, p: unknown, s: unknown): boolean {
  if (sameField(field, p, s)) return true;
  return field === 'strasse' && typeof s === 'string' && dropsHouseNumber(p as string | null, s);
}

/** The therapist as the scraper last gave it (its matching keys before staff corrected a name or address). */
function asScraped(t: ExistingTherapist): TherapistFields | null {
  const s = t.scraped?.fields;
  if (!s) return null;
  // A field left out of the record was empty (names and postcode are never empty in a record).
  return Object.fromEntries(importFields.map((f) => [f, s[f] ?? null])) as TherapistFields;
}

/**
 * The file gives the street without the house number the platform has ("Marktplatz" over
 * "Marktplatz 3"): an empty house number is no reason to lose it.
 */
function dropsHouseNumber(existing: string | null, next: string): boolean {
  if (!existing || /\d/.test(next)) return false;
  const e = text(existing)!;
  return e.length > next.length + 1 && e.startsWith(next) && e[next.length] === ' ' && /^\d/.test(e.slice(next.length + 1));
}

/**
 * Words of printable characters below U+0300 (ASCII and precomposed Latin: Müller, Straße)
 * separated by single spaces: NFC and whitespace folding change nothing, so they are skipped
 * (a test checks this character by character against the full rule).
 */
const PLAIN = /^[!-~\u00a1-\u02ff]+(?: [!-~\u00a1-\u02ff]+)*$/;

/** Name key part: NFC, trimmed, inner whitespace folded to one space, lower case. */
export const norm = (s: string | null | undefined): string => {
  if (!s) return '';
  if (PLAIN.test(s)) return s.toLowerCase();
  return normFull(s);
};

export const normFull = (s: string): string => s.normalize('NFC').trim().replace(/\s+/g, ' ').toLowerCase();

/**
 * A text value as stored: NFC, trimmed, inner whitespace (also no-break spaces and tabs)
 * folded to one space; null when nothing is left. Two spellings that differ only in their
 * Unicode form or spacing are the same value, so neither counts as a change.
 */
export const text = (s: string | null | undefined): string | null => {
  if (!s) return null;
  const t = PLAIN.test(s) ? s : s.normalize('NFC').trim().replace(/\s+/g, ' ');
  return t || null;
};

export const primaryKey = (f: Pick<TherapistFields, 'vorname' | 'nachname' | 'plz'>) => `${norm(f.vorname)}|${norm(f.nachname)}|${norm(f.plz)}`;
const secondaryKey = (f: Pick<TherapistFields, 'vorname' | 'plz' | 'ort' | 'strasse' | 'titel'>) =>
  [f.vorname, f.plz, f.ort, f.strasse, f.titel].map(norm).join('|');

/** Tombstone key for a deleted therapist that has no scraper id. */
export const nameTombstoneKey = (f: Pick<TherapistFields, 'vorname' | 'nachname' | 'plz'>) => tombstoneOfPrimary(primaryKey(f));
const tombstoneOfPrimary = (primary: string) => `name:${primary}`;

/** The fields that tell therapists of one name and postcode apart, in the order they count. */
const TELLING: readonly ImportField[] = ['strasse', 'email', 'titel', 'ort', 'telefon', 'fax', 'anrede'];

/** Whether a therapist's value (on the platform or on record) is the line's non-empty value `v`. */
function agrees(field: ImportField, value: unknown, v: unknown): boolean {
  if (isEmptyValue(value)) return false;
  if (typeof value === 'string' && typeof v === 'string') return norm(value) === norm(v) || (field === 'strasse' && dropsHouseNumber(value, v));
  return sameValue(value, v);
}

/**
 * Of several therapists of the line's name and postcode, the one whose other fields agree with
 * the line best (the street first, then the email, the title, ...); null when two agree equally well.
 */
function closest(candidates: ExistingTherapist[], incoming: TherapistFields): ExistingTherapist | null {
  const score = (c: ExistingTherapist) =>
    TELLING.map((f) => !isEmptyValue(incoming[f]) && (agrees(f, c[f], incoming[f]) || (c.scraped?.fields != null && agrees(f, c.scraped.fields[f], incoming[f]))));
  const ranked = candidates.map((c) => ({ c, s: score(c) }));
  const cmp = (a: boolean[], b: boolean[]) => {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] ? -1 : 1;
    return 0;
  };
  ranked.sort((a, b) => cmp(a.s, b.s));
  return cmp(ranked[0]!.s, ranked[1]!.s) < 0 ? ranked[0]!.c : null;
}

/**
 * What a status mismatch says was found: every text the planner writes is here (a test checks
 * that the staff summary words each in German).
 */
export const MISMATCH_FOUND = {
  alreadyThere: 'already on the platform',
  created: 'not on the platform: created',
  absent: 'not on the platform',
  noLonger: 'no longer on the platform',
  staysInactive: 'deleted by the scraper earlier: stays inactive',
  deletedNotRecreated: 'deleted by the scraper earlier: not re-created',
  removedNotRecreated: 'removed from the platform earlier: not re-created',
} as const;
/** A `deleted` line for a therapist staff gave another status than active (`gesperrt`). */
export const statusKept = (status: string) => `${status} on the platform: status kept`;

export type LineOutcome = 'created' | 'updated' | 'unchanged' | 'deactivated' | 'skipped' | 'failed';
export type MatchRule = 'external_id' | 'primary' | 'secondary' | null;

export interface LineResult {
  index: number;
  externalId: string | null;
  outcome: LineOutcome;
  rule: MatchRule;
  /** Platform id (a negative placeholder for a therapist to be created, resolved by the store). */
  therapistId: number | null;
  changedFields: string[];
  reason?: string;
  mismatch?: { stated: ScraperStatus; found: string };
  /** Fields where the scraper's new value replaced a correction staff made on the platform. */
  replacedCorrections?: string[];
}

export interface PlannedCreate {
  placeholder: number;
  index: number;
  externalId: string | null;
  fields: TherapistFields;
}

export interface PlannedUpdate {
  therapistId: number;
  changes: Partial<TherapistFields>;
}

export interface Plan {
  lines: LineResult[];
  creates: PlannedCreate[];
  updates: PlannedUpdate[];
  deactivations: number[];
  /** External id -> therapist (placeholder ids for creates). */
  mappings: Array<{ externalId: string; therapistId: number }>;
  /** Keys (external id, or `name:` key) never to be created again; therapistId when known. */
  tombstones: Array<{ key: string; therapistId: number | null }>;
  /**
   * What the scraper now says of a therapist, where it changed (or was not on record;
   * placeholder ids for creates). `held`: the platform row holds it once the plan is written.
   */
  scraped: Array<{ therapistId: number; json: string; digest: string; held: boolean }>;
}

export interface PlanInput {
  lines: ParsedLine[];
  candidates: ExistingTherapist[];
  /** Known external ids of this file's scope. */
  externalIds: Map<string, ExternalIdEntry>;
}

/** What matching by scraper id needs of a line. */
interface IdLine {
  pos: number;
  index: number;
  stated: ScraperStatus;
  externalId: string | null;
  ext: ExternalIdEntry | undefined;
}

/** A line that reached matching (valid, adult or `deleted`). */
interface MatchLine extends IdLine {
  incoming: TherapistFields;
  /** Its external id names a therapist no longer on the platform: never re-created. */
  vanished: boolean;
  /** A `deleted` line that failed validation, known by its name and postcode only (`incoming` holds nothing else): the primary rule only. */
  nameOnly?: true;
  pk?: string;
  sk?: string;
}

/**
 * Decides, for every line of a file, what happens. Every line gets exactly one outcome.
 *
 * Matching runs over the whole file in rounds, so the order of the lines does not matter:
 * first every line with a known scraper id takes its therapist, then the primary rule, then
 * the secondary rule and creation. A therapist another line of the file has taken is not
 * matched again: by the secondary rule never (its owner is still listed, so this line is not
 * its name change: two colleagues of one practice stay two); by the primary rule it is a
 * duplicate line, unless both lines carry different scraper ids (two people of the same name
 * in one postcode area). Nor by the secondary rule a therapist a line names that takes none
 * (invalid, or not for adults: by its known scraper id, or else its name): listed still.
 * A scraper id on two lines of different people fails them all.
 */
export function planFile(input: PlanInput): Plan {
  const byId = new Map<number, ExistingTherapist>();
  // The name indexes are built on first use, in the order therapists were added (candidates by
  // id, then creates): a re-import that matches every line by external id never needs them.
  const all: ExistingTherapist[] = [];
  let byPrimaryIndex: Map<string, ExistingTherapist[]> | null = null;
  let bySecondaryIndex: Map<string, ExistingTherapist[]> | null = null;
  const put = (index: Map<string, ExistingTherapist[]>, key: string, t: ExistingTherapist) => {
    const list = index.get(key);
    if (list) list.push(t);
    else index.set(key, [t]);
  };
  // A therapist is found by its platform values and, where staff corrected them, by what the
  // scraper last said: a line that still gives the old name is the same therapist, not a new one.
  const index = (key: (f: TherapistFields) => string) => {
    const built = new Map<string, ExistingTherapist[]>();
    for (const t of all) {
      const own = key(t);
      put(built, own, t);
      const s = asScraped(t);
      if (s) {
        const old = key(s);
        if (old !== own) put(built, old, t);
      }
    }
    return built;
  };
  const byPrimary = () => (byPrimaryIndex ??= index(primaryKey));
  const bySecondary = () => (bySecondaryIndex ??= index(secondaryKey));
  /** `keys`: the therapist's primary and secondary keys when the caller has them already. */
  const add = (t: ExistingTherapist, keys?: { primary: string; secondary: string }) => {
    byId.set(t.id, t);
    all.push(t);
    if (byPrimaryIndex) put(byPrimaryIndex, keys?.primary ?? primaryKey(t), t);
    if (bySecondaryIndex) put(bySecondaryIndex, keys?.secondary ?? secondaryKey(t), t);
  };
  for (const c of [...input.candidates].sort((a, b) => a.id - b.id)) add(c);

  /** Therapist id -> the line that took it (its index and scraper id). */
  const claimedBy = new Map<number, { index: number; externalId: string | null }>();
  /**
   * Therapists a line of the file names that takes none (invalid, or not for adults): still
   * listed, so never another line's name change (the secondary rule passes them over).
   */
  const listed = new Set<number>();
  const listedById = (extId: string | null) => {
    const id = extId === null ? null : input.externalIds.get(extId)?.therapistId;
    if (id != null) listed.add(id);
    return id != null;
  };
  /**
   * Lines that take no therapist (invalid, or not for adults) without a known scraper id: listed
   * by their name and postcode, looked up before the secondary rule. An invalid line without
   * them names nobody.
   */
  const listedByName: LineName[] = [];
  const plan: Plan = { lines: [], creates: [], updates: [], deactivations: [], mappings: [], tombstones: [], scraped: [] };
  const results: LineResult[] = new Array<LineResult>(input.lines.length);
  let nextPlaceholder = -1;
  const base = (l: { index: number; externalId: string | null }): LineResult => ({
    index: l.index,
    externalId: l.externalId,
    outcome: 'unchanged',
    rule: null,
    therapistId: null,
    changedFields: [],
  });
  const duplicateOf = (l: IdLine, rule: MatchRule, therapistId: number, claimer: number) => {
    results[l.pos] = {
      ...base(l),
      outcome: 'failed',
      rule,
      therapistId: therapistId > 0 ? therapistId : null,
      reason: `same therapist as therapists[${claimer}] of this file (duplicate line)`,
    };
  };

  /** The line takes `match`; a `deleted` line needs nothing else of its own. Returns its result. */
  const take = (l: IdLine | MatchLine, match: ExistingTherapist, rule: MatchRule): LineResult => {
    claimedBy.set(match.id, { index: l.index, externalId: l.externalId });
    const result: LineResult = { ...base(l), rule, therapistId: match.id };
    results[l.pos] = result;
    const extId = l.externalId;
    if (extId && (!l.ext || l.ext.therapistId !== match.id)) plan.mappings.push({ externalId: extId, therapistId: match.id });
    if (l.stated === 'deleted') {
      // Only an active therapist is deactivated: one staff blocked (gesperrt) keeps that status.
      if (match.status === 'aktiv') {
        plan.deactivations.push(match.id);
        result.outcome = 'deactivated';
      } else if (match.status !== 'inaktiv') {
        // Staff see that the scraper no longer lists a therapist they set to this status.
        result.mismatch = { stated: l.stated, found: statusKept(match.status) };
      }
      if (extId) plan.tombstones.push({ key: extId, therapistId: match.id });
      // Without a scraper id, by name: a later line of that name finds it was deleted (a status mismatch).
      else if ('incoming' in l) plan.tombstones.push({ key: tombstoneOfPrimary((l.pk ??= primaryKey(l.incoming))), therapistId: match.id });
    }
    return result;
  };

  /** A `deleted` line without a scraper id deactivated this therapist by its name (the line's name) earlier. */
  const deletedByName = (l: MatchLine, therapistId: number): boolean => {
    const tomb = input.externalIds.get(tombstoneOfPrimary((l.pk ??= primaryKey(l.incoming))));
    return tomb?.deleted === true && tomb.therapistId === therapistId;
  };

  /** The line takes `match`: deactivate, update or nothing. */
  const matched = (l: MatchLine, match: ExistingTherapist, rule: MatchRule) => {
    const result = take(l, match, rule);
    if (l.stated === 'deleted') return;
    // Listed again after the scraper deleted it (by its scraper id, or a line without one by its
    // name): it stays inactive (staff decide), and staff are told.
    if (match.status === 'inaktiv' && (l.ext?.deleted === true || deletedByName(l, match.id))) result.mismatch = { stated: l.stated, found: MISMATCH_FOUND.staysInactive };
    else if (l.stated === 'new') result.mismatch = { stated: l.stated, found: MISMATCH_FOUND.alreadyThere };
    const { json, digest } = scrapedRecord(compactScraped(l.incoming));
    const record = match.scraped;
    // The scraper says what it said last time: nothing to write (a platform value that differs is a staff correction).
    if (record && record.digest === digest) return;
    // With the fields on record, a field the scraper has not changed is left alone; without
    // them (the row still holds them, or nothing is on record) the row's values are compared.
    const changes = diffFields(match, l.incoming, record?.fields);
    // The record keeps what earlier lines gave where this one is empty (the store merges it): the
    // row holds it only if it holds those values too. Without the record's fields the row held
    // them before, and the line, empty there, changes none of them.
    const held = holdsScraped(match, changes, l.incoming) && (!record?.fields || holdsCarried(match, record.fields, l.incoming));
    plan.scraped.push({ therapistId: match.id, json, digest, held });
    const changed = Object.keys(changes);
    // The platform held something else than the scraper said last time (a staff correction of a
    // scraped value) and the scraper now says something new: its value is written, and staff
    // are told. (Where the scraper gave nothing, the platform's value cannot be told apart from
    // one it had before the import: written as any new value.)
    const onRecord = record?.fields;
    if (onRecord) {
      const replaced = changed.filter((f) => {
        const s = onRecord[f as ImportField];
        return !isEmptyValue(s) && !heldAsScraped(f as ImportField, match[f as ImportField], s);
      });
      if (replaced.length) result.replacedCorrections = replaced;
    }
    if (changed.length) {
      plan.updates.push({ therapistId: match.id, changes });
      result.outcome = 'updated';
      result.changedFields = changed;
    }
  };

  /** Nobody on the platform: remember a deletion, or create (unless deleted earlier). */
  const unmatched = (l: MatchLine) => {
    const result = base(l);
    results[l.pos] = result;
    const stated = l.stated;
    // The primary key, computed once per line (a first import creates every line here).
    const nameKey = tombstoneOfPrimary((l.pk ??= primaryKey(l.incoming)));
    if (stated === 'deleted') {
      result.mismatch = { stated, found: l.vanished ? MISMATCH_FOUND.noLonger : MISMATCH_FOUND.absent };
      // By name too: the same person under another scraper id is not created later either.
      if (l.externalId) plan.tombstones.push({ key: l.externalId, therapistId: null });
      plan.tombstones.push({ key: nameKey, therapistId: null });
      return;
    }
    const tomb = l.vanished || l.ext?.deleted === true || input.externalIds.get(nameKey)?.deleted === true;
    if (tomb) {
      result.mismatch = { stated, found: l.vanished ? MISMATCH_FOUND.removedNotRecreated : MISMATCH_FOUND.deletedNotRecreated };
      return;
    }
    const placeholder = nextPlaceholder--;
    const fields = fieldsForNew(l.incoming);
    plan.creates.push({ placeholder, index: l.index, externalId: l.externalId, fields });
    if (l.externalId) plan.mappings.push({ externalId: l.externalId, therapistId: placeholder });
    plan.scraped.push({ therapistId: placeholder, ...scrapedRecord(compactScraped(l.incoming)), held: true });
    // Same keys as `incoming`: a new therapist differs from it only in salutation and gender.
    add({ ...fields, id: placeholder, status: 'aktiv' }, l.pk !== undefined && l.sk !== undefined ? { primary: l.pk, secondary: l.sk } : undefined);
    claimedBy.set(placeholder, { index: l.index, externalId: l.externalId });
    result.outcome = 'created';
    result.therapistId = placeholder;
    if (stated !== 'new') result.mismatch = { stated, found: MISMATCH_FOUND.created };
  };

  /**
   * The primary rule: true when the line is decided (matched, or a duplicate of a line that
   * took the same therapist). Taken therapists are passed over only when both lines have
   * (different) scraper ids.
   */
  const primary = (l: MatchLine): boolean => {
    l.pk ??= primaryKey(l.incoming);
    const sameName = byPrimary().get(l.pk);
    if (!sameName) return false;
    const free = sameName.filter((c) => !claimedBy.has(c.id));
    if (free.length) {
      const match = free.length === 1 ? free[0]! : closest(free, l.incoming);
      if (match) matched(l, match, 'primary');
      else {
        // Nobody can tell which one the line is: staff decide; nothing is written for it, and
        // no other line's name change takes any of them.
        for (const c of free) listed.add(c.id);
        results[l.pos] = {
          ...base(l),
          outcome: 'failed',
          rule: 'primary',
          reason: `name and postcode match several therapists (ids ${free.map((c) => c.id).join(', ')}) and nothing else tells them apart: not imported, staff must resolve which one this line is`,
        };
      }
      return true;
    }
    const taken = sameName.find((c) => l.externalId === null || claimedBy.get(c.id)!.externalId === null);
    if (!taken) return false;
    duplicateOf(l, 'primary', taken.id, claimedBy.get(taken.id)!.index);
    return true;
  };

  // Round 1: lines decided on their own, scraper ids given twice, matches by scraper id.
  const toMatch: MatchLine[] = [];
  const withId = new Map<string, MatchLine[]>();
  /** `deleted` lines whose details are missing or unusable, with a known scraper id: it is enough. */
  const deletedById: Array<{ pos: number; line: ParsedLine & { ok: false }; externalId: string; ext: ExternalIdEntry }> = [];
  const addToMatch = (l: MatchLine) => {
    toMatch.push(l);
    if (l.externalId !== null) {
      const same = withId.get(l.externalId);
      if (same) same.push(l);
      else withId.set(l.externalId, [l]);
    }
  };
  input.lines.forEach((line, pos) => {
    if (!line.ok) {
      const result: LineResult = { ...base(line), outcome: 'failed', reason: line.reason };
      results[pos] = result;
      if (!listedById(line.externalId) && line.name) listedByName.push(line.name);
      if (line.statedStatus !== 'deleted') return;
      // A `deleted` line needs only what names its therapist: a known scraper id, else its name
      // and postcode; its other details are not used, so missing or unusable ones (a line of
      // just id and status, a bad email) do not keep a therapist active.
      const extId = line.externalId;
      const ext = extId === null ? undefined : input.externalIds.get(extId);
      if (ext) deletedById.push({ pos, line, externalId: extId!, ext });
      else if (line.name) {
        const incoming = Object.fromEntries(importFields.map((f) => [f, null])) as unknown as TherapistFields;
        incoming.vorname = text(line.name.vorname)!;
        incoming.nachname = text(line.name.nachname)!;
        incoming.plz = line.name.plz;
        addToMatch({ pos, index: line.index, stated: 'deleted', externalId: extId, ext: undefined, incoming, vanished: false, nameOnly: true });
      } else if (extId !== null) {
        result.reason = `${line.reason}; status deleted: id "${extId}" is not known in this postcode area, so the therapist can only be found by name and postcode`;
      } else result.reason = `${line.reason}; status deleted: not applied (no scraper id, and no name and postcode to find the therapist by)`;
      return;
    }
    const t = line.therapist;
    if (t.status !== 'deleted' && adultMethods(t.therapy_methods).length === 0) {
      results[pos] = { ...base(line), outcome: 'skipped', reason: 'no therapy method for adults (Erwachsene)' };
      if (!listedById(line.externalId)) listedByName.push({ vorname: t.basic_info.first_name, nachname: t.basic_info.last_name, plz: t.location.postal_code });
      return;
    }
    const extId = line.externalId;
    const ext = extId ? input.externalIds.get(extId) : undefined;
    addToMatch({ pos, index: line.index, stated: t.status, externalId: extId, ext, incoming: mapTherapist(t), vanished: false });
  });
  // One id on several lines: the same person listed twice (same name and postcode) is imported
  // once; different people under one id cannot be told apart, so none of them is imported.
  const repeated = new Set<MatchLine>();
  for (const [extId, same] of withId) {
    if (same.length < 2) continue;
    const keys = new Set(same.map((l) => (l.pk ??= primaryKey(l.incoming))));
    const where = same.map((l) => `therapists[${l.index}]`).join(', ');
    for (const [i, l] of same.entries()) {
      if (keys.size === 1 && i === 0) continue;
      repeated.add(l);
      listedById(l.externalId);
      results[l.pos] = {
        ...base(l),
        outcome: 'failed',
        reason:
          keys.size === 1
            ? `same therapist as therapists[${same[0]!.index}] of this file (duplicate line with the same id)`
            : `id: "${extId}" is given to different therapists in this file (${where}): none of them is imported`,
      };
    }
  }
  const byName: MatchLine[] = [];
  for (const l of toMatch) {
    if (repeated.has(l)) continue;
    if (l.ext?.therapistId != null) {
      const match = byId.get(l.ext.therapistId);
      if (!match) l.vanished = true;
      else if (claimedBy.has(match.id)) {
        duplicateOf(l, 'external_id', match.id, claimedBy.get(match.id)!.index);
        continue;
      } else {
        matched(l, match, 'external_id');
        continue;
      }
    }
    byName.push(l);
  }
  // A `deleted` line names its therapist by scraper id; its other details are not used, so
  // missing or unusable ones (a line of just id and status) do not keep a therapist active.
  for (const { pos, line, externalId, ext } of deletedById) {
    const l: IdLine = { pos, index: line.index, stated: 'deleted', externalId, ext };
    const match = ext.therapistId === null ? undefined : byId.get(ext.therapistId);
    if (match && claimedBy.has(match.id)) duplicateOf(l, 'external_id', match.id, claimedBy.get(match.id)!.index);
    else if (match) take(l, match, 'external_id');
    else {
      // Nothing left to deactivate: deleted before, or no longer on the platform.
      results[pos] = { ...base(l), mismatch: { stated: 'deleted', found: ext.therapistId === null ? MISMATCH_FOUND.absent : MISMATCH_FOUND.noLonger } };
      plan.tombstones.push({ key: externalId, therapistId: null });
    }
  }

  // Round 2: the primary rule (vorname + nachname + plz) among the therapists left.
  const rest: MatchLine[] = [];
  for (const l of byName) {
    if (l.vanished) unmatched(l);
    else if (!primary(l)) rest.push(l);
  }

  // Round 3, in file order: the primary rule again (a therapist created by an earlier line of
  // this round), the secondary rule (a name change), else a new therapist.
  if (rest.length) for (const n of listedByName) for (const c of byPrimary().get(primaryKey(n)) ?? []) listed.add(c.id);
  for (const l of rest) {
    if (primary(l)) continue;
    if (l.nameOnly) {
      unmatched(l);
      continue;
    }
    l.sk ??= secondaryKey(l.incoming);
    const email = l.incoming.email;
    const match = bySecondary()
      .get(l.sk)
      ?.find((c) => !claimedBy.has(c.id) && !listed.has(c.id) && (email === null || norm(c.email) === norm(email) || (c.scraped?.fields != null && norm(c.scraped.fields.email as string | undefined) === norm(email))));
    if (match) matched(l, match, 'secondary');
    else unmatched(l);
  }
  plan.lines = results;
  return plan;
}
