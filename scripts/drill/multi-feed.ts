/**
 * Input for drills with several fleet processes (scripts/drill/multi-process.sh): registration
 * files into a local bucket folder and scraper files into a drop folder, made up, with distinct
 * names, tokens and emails.
 *
 *   npx tsx scripts/drill/multi-feed.ts registrations <bucket dir> <from> <count> [--invalid-every 20]
 *   npx tsx scripts/drill/multi-feed.ts scraper <drop dir> <date folder> <from> <count> [--variant base|changed] [--per-file 50]
 *
 * Registrations: every `--invalid-every`th file has a 4-digit plz (fails naming
 * `patient_data.plz`). Files are written to a temporary name and renamed, as an upload lands.
 * Scraper files: postcode 10000 + f * 223, `--per-file` therapists; `changed` gives ~5% a new
 * phone number (the same file with new content).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileBytes, objectNameFor, plainRegistration, registrationToken } from '../../workers/patient-import/fixtures.js';
import { scraperFile } from '../../workers/therapist-import/fixtures.js';
import { atomicWrite, drillTherapist, namePart } from './feed-names.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    'invalid-every': { type: 'string', default: '20' },
    variant: { type: 'string', default: 'base' },
    'per-file': { type: 'string', default: '50' },
  },
});

async function registrations(dir: string, from: number, count: number): Promise<void> {
  const invalidEvery = Number(values['invalid-every']);
  let invalid = 0;
  for (let i = from; i < from + count; i++) {
    const token = registrationToken();
    const bad = invalidEvery > 0 && i % invalidEvery === invalidEvery - 1;
    if (bad) invalid++;
    const reg = plainRegistration({
      vorname: `Vor${namePart(i)}`,
      nachname: `Nach${namePart(i * 7 + 3)}`,
      email: `drill.${token}@example.org`,
      token,
      ...(bad ? { patch: (r) => ((r.patient_data as Record<string, unknown>).plz = '5206') } : {}),
    });
    await atomicWrite(path.join(dir, objectNameFor(reg)), fileBytes(reg));
  }
  console.log(JSON.stringify({ written: count, invalid }));
}

function postcodeOf(f: number): string {
  return String(10000 + f * 223).padStart(5, '0');
}

async function scraper(dir: string, dateFolder: string, from: number, count: number): Promise<void> {
  const variant = values.variant === 'changed' ? 'changed' : 'base';
  const perFile = Number(values['per-file']);
  for (let f = from; f < from + count; f++) {
    const plz = postcodeOf(f);
    const lines = Array.from({ length: perFile }, (_, j) => {
      const changed = variant === 'changed' && j % 20 === 7;
      return drillTherapist(f, j, plz, { status: variant === 'base' ? 'new' : changed ? 'modified' : 'unchanged', phone: changed ? `0${plz} ${j}-neu` : `0${plz} ${j}` });
    });
    await atomicWrite(
      path.join(dir, dateFolder, `${plz}.json`),
      scraperFile(lines, { scrape_date: '2025-07-02T03:13:24.425211', postcode_area: `${plz.slice(0, 2)}XXX` }),
    );
  }
  console.log(JSON.stringify({ written: count, variant }));
}

const [what, dir, ...rest] = positionals;
if (what === 'registrations' && dir) await registrations(dir, Number(rest[0] ?? 0), Number(rest[1] ?? 100));
else if (what === 'scraper' && dir && rest[0]) await scraper(dir, rest[0], Number(rest[1] ?? 0), Number(rest[2] ?? 10));
else {
  console.error('usage: multi-feed.ts registrations <dir> <from> <count> | scraper <dir> <date folder> <from> <count>');
  process.exit(2);
}
