/** Helpers the drill feeders share (multi-feed.ts, soak.ts, gcs-drill.ts, crash-steps.ts in scripts/drill). */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ADULT_TP, ADULT_VT, CHILD_VT, therapistLine, type TherapistLine } from '../../workers/therapist-import/fixtures.js';

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

/** A made-up name part from a number: 0 -> "Aaaa", distinct for every number below 26^letters. */
export function namePart(n: number, letters = 4): string {
  let s = '';
  for (let i = 0; i < letters; i++) {
    s = LETTERS[n % 26] + s;
    n = Math.floor(n / 26);
  }
  return s[0]!.toUpperCase() + s.slice(1);
}

/** Writes to a temporary name beside the file and renames it, as an upload or a scraper lands. */
export async function atomicWrite(file: string, bytes: Buffer | string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  await writeFile(tmp, bytes);
  await rename(tmp, file);
}

/**
 * Therapist `j` of the drills' scraper file `f` for `plz` (multi-feed.ts, soak.ts): made-up names,
 * a phone of the postcode, every 33rd one for children only (skipped), the rest VT or TP.
 */
export function drillTherapist(f: number, j: number, plz: string, o: { status: 'new' | 'modified' | 'unchanged'; phone: string }): TherapistLine {
  return therapistLine({
    id: `p${j}`,
    status: o.status,
    salutation: j % 2 ? 'Frau' : 'Herr',
    first: `Vor${namePart(j)}`,
    last: `Nach${namePart(f * 1000 + j)}`,
    plz,
    street: `Straße ${j % 40}`,
    city: `Stadt ${f}`,
    phone: o.phone,
    email: `praxis${f}-${j}@example.org`,
    methods: j % 33 === 5 ? [CHILD_VT] : j % 2 ? [ADULT_VT] : [ADULT_TP],
  });
}
