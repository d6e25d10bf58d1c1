import type { ScraperStatus, ScraperTherapist, ParsedLine } from './scraper-file.js';
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

/** A platform therapist as the matcher sees it. */
export interface ExistingTherapist extends TherapistFields {
  id: number;
  status: string;
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
  const street = [t.location.street, t.location.house_number].filter(Boolean).join(' ') || null;
  return {
    anrede: sal || null,
    geschlecht: sal === 'Herr' ? 'männlich' : sal === 'Frau' ? 'weiblich' : null,
    titel: t.basic_info.title,
    vorname: t.basic_info.first_name,
    nachname: t.basic_info.last_name,
    strasse: street,
    plz: t.location.postal_code,
    ort: t.location.city,
    telefon: t.contact.phone,
    fax: t.contact.fax,
    email: t.contact.email,
    telefonische_erreichbarkeit: t.telephone_hours,
    fremdsprachen: t.languages.length ? t.languages : null,
    psychotherapieverfahren: mapVerfahren(adultMethods(t.therapy_methods)),
  };
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

/**
 * The fields to write: only those whose value really changed, and never an empty value over
 * a non-empty one.
 */
export function diffFields(existing: TherapistFields, incoming: TherapistFields): Partial<TherapistFields> {
  const changes: Partial<Record<ImportField, unknown>> = {};
  for (const field of importFields) {
    const next = incoming[field];
    if (isEmptyValue(next)) continue;
    if (!sameValue(existing[field], next)) changes[field] = next;
  }
  return changes as Partial<TherapistFields>;
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

export const primaryKey = (f: Pick<TherapistFields, 'vorname' | 'nachname' | 'plz'>) => `${norm(f.vorname)}|${norm(f.nachname)}|${norm(f.plz)}`;
const secondaryKey = (f: Pick<TherapistFields, 'vorname' | 'plz' | 'ort' | 'strasse' | 'titel'>) =>
  [f.vorname, f.plz, f.ort, f.strasse, f.titel].map(norm).join('|');

/** Tombstone key for a deleted therapist that has no scraper id. */
export const nameTombstoneKey = (f: Pick<TherapistFields, 'vorname' | 'nachname' | 'plz'>) => `name:${primaryKey(f)}`;

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
}

export interface PlanInput {
  lines: ParsedLine[];
  candidates: ExistingTherapist[];
  /** Known external ids of this file's scope. */
  externalIds: Map<string, ExternalIdEntry>;
}

/** Decides, for every line of a file, what happens. Every line gets exactly one outcome. */
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
  const byPrimary = () => {
    if (!byPrimaryIndex) {
      byPrimaryIndex = new Map();
      for (const t of all) put(byPrimaryIndex, primaryKey(t), t);
    }
    return byPrimaryIndex;
  };
  const bySecondary = () => {
    if (!bySecondaryIndex) {
      bySecondaryIndex = new Map();
      for (const t of all) put(bySecondaryIndex, secondaryKey(t), t);
    }
    return bySecondaryIndex;
  };
  /** `keys`: the therapist's primary and secondary keys when the caller has them already. */
  const add = (t: ExistingTherapist, keys?: { primary: string; secondary: string }) => {
    byId.set(t.id, t);
    all.push(t);
    if (byPrimaryIndex) put(byPrimaryIndex, keys?.primary ?? primaryKey(t), t);
    if (bySecondaryIndex) put(bySecondaryIndex, keys?.secondary ?? secondaryKey(t), t);
  };
  for (const c of [...input.candidates].sort((a, b) => a.id - b.id)) add(c);

  const claimedBy = new Map<number, number>(); // therapist id -> line index that claimed it
  const plan: Plan = { lines: [], creates: [], updates: [], deactivations: [], mappings: [], tombstones: [] };
  let nextPlaceholder = -1;

  for (const line of input.lines) {
    if (!line.ok) {
      plan.lines.push({ index: line.index, externalId: line.externalId, outcome: 'failed', rule: null, therapistId: null, changedFields: [], reason: line.reason });
      continue;
    }
    const t = line.therapist;
    const stated = t.status;
    const extId = line.externalId;
    const result: LineResult = { index: line.index, externalId: extId, outcome: 'unchanged', rule: null, therapistId: null, changedFields: [] };

    if (stated !== 'deleted' && adultMethods(t.therapy_methods).length === 0) {
      plan.lines.push({ ...result, outcome: 'skipped', reason: 'no therapy method for adults (Erwachsene)' });
      continue;
    }

    const incoming = mapTherapist(t);
    const ext = extId ? input.externalIds.get(extId) : undefined;

    // 1. external id, 2. primary (vorname + nachname + plz), 3. secondary (name change).
    let match: ExistingTherapist | undefined;
    let rule: MatchRule = null;
    let vanished = false;
    if (ext?.therapistId != null) {
      match = byId.get(ext.therapistId);
      if (match) rule = 'external_id';
      else vanished = true; // mapped therapist no longer on the platform: never re-created
    }
    let pk: string | undefined;
    let sk: string | undefined;
    if (!match && !vanished) {
      pk = primaryKey(incoming);
      const sameName = byPrimary().get(pk);
      match = sameName?.find((c) => !claimedBy.has(c.id)) ?? sameName?.[0];
      if (match) rule = 'primary';
    }
    if (!match && !vanished) {
      sk = secondaryKey(incoming);
      const found = bySecondary().get(sk) ?? [];
      match =
        found.find((c) => !claimedBy.has(c.id) && (incoming.email === null || norm(c.email) === norm(incoming.email))) ??
        found.find((c) => incoming.email === null || norm(c.email) === norm(incoming.email));
      if (match) rule = 'secondary';
    }

    if (match && claimedBy.has(match.id)) {
      plan.lines.push({
        ...result,
        outcome: 'failed',
        rule,
        therapistId: match.id > 0 ? match.id : null,
        reason: `same therapist as therapists[${claimedBy.get(match.id)}] of this file (duplicate line)`,
      });
      continue;
    }

    if (match) {
      claimedBy.set(match.id, line.index);
      result.rule = rule;
      result.therapistId = match.id;
      if (extId && (!ext || ext.therapistId !== match.id)) plan.mappings.push({ externalId: extId, therapistId: match.id });
      if (stated === 'deleted') {
        if (match.status !== 'inaktiv') {
          plan.deactivations.push(match.id);
          result.outcome = 'deactivated';
        }
        if (extId) plan.tombstones.push({ key: extId, therapistId: match.id });
        plan.lines.push(result);
        continue;
      }
      if (stated === 'new') result.mismatch = { stated, found: 'already on the platform' };
      const changes = diffFields(match, incoming);
      const changed = Object.keys(changes);
      if (changed.length) {
        plan.updates.push({ therapistId: match.id, changes });
        result.outcome = 'updated';
        result.changedFields = changed;
      }
      plan.lines.push(result);
      continue;
    }

    // No match.
    const nameKey = nameTombstoneKey(incoming);
    if (stated === 'deleted') {
      result.mismatch = { stated, found: vanished ? 'no longer on the platform' : 'not on the platform' };
      plan.tombstones.push({ key: extId ?? nameKey, therapistId: null });
      plan.lines.push(result);
      continue;
    }
    const tomb = vanished || (extId ? ext?.deleted === true : false) || input.externalIds.get(nameKey)?.deleted === true;
    if (tomb) {
      result.mismatch = { stated, found: vanished ? 'removed from the platform earlier: not re-created' : 'deleted by the scraper earlier: not re-created' };
      plan.lines.push(result);
      continue;
    }
    const placeholder = nextPlaceholder--;
    const fields = fieldsForNew(incoming);
    plan.creates.push({ placeholder, index: line.index, externalId: extId, fields });
    if (extId) plan.mappings.push({ externalId: extId, therapistId: placeholder });
    // Same keys as `incoming`: a new therapist differs from it only in salutation and gender.
    add({ ...fields, id: placeholder, status: 'aktiv' }, pk !== undefined && sk !== undefined ? { primary: pk, secondary: sk } : undefined);
    claimedBy.set(placeholder, line.index);
    result.outcome = 'created';
    result.therapistId = placeholder;
    if (stated !== 'new') result.mismatch = { stated, found: 'not on the platform: created' };
    plan.lines.push(result);
  }
  return plan;
}
