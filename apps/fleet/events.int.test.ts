import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, startKafkaMock, type KafkaMock, type MessageCollector, fastRelaySettings } from '../../libs/testing/kafka-mock.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { outboxRelayComponents } from '../../workers/outbox-relay/index.js';
import { importLocalFile } from '../../workers/patient-import/index.js';
import { importTherapistFileNow } from '../../workers/therapist-import/index.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';

/**
 * Issue 6 acceptance: events of real patient and therapist imports reach Kafka (a real
 * kafkajs consumer against the mock broker) with the envelope, the entity id as key and the
 * event id header; with the broker down, 200 imports succeed and their events arrive later.
 */
let db: TestDatabase;
let kafka: KafkaMock;
let consumer: MessageCollector;
let ctx: FleetContext;
let relay: Component;
let dir: string;

/** Letters only (names in file names may not carry digits): 0 -> a, 27 -> bb, ... */
const letters = (n: number): string => (n < 26 ? String.fromCharCode(97 + n) : letters(Math.floor(n / 26) - 1) + String.fromCharCode(97 + (n % 26)));

/** A registration file as the registration site writes it (DOMAIN.md section 1). */
function registration(n: number, token: string): string {
  return JSON.stringify({
    patient_data: {
      anrede: 'Frau',
      geschlecht: 'weiblich',
      vorname: `Erika${letters(n)}`,
      nachname: `Musterfrau${letters(n)}`,
      strasse: 'Hauptstraße 1',
      plz: '52062',
      ort: 'Aachen',
      email: `erika.${token.slice(0, 10)}@example.org`,
      telefon: '+49 241 123456',
      hausarzt: 'Dr. Beispiel',
      krankenkasse: 'AOK',
      geburtsdatum: '1990-04-12',
      symptome: ['Schlafstörungen'],
      erfahrung_mit_psychotherapie: false,
      empfehler_der_unterstuetzung: 'Hausarzt',
      verkehrsmittel: 'ÖPNV',
      offen_fuer_gruppentherapie: true,
      zeitliche_verfuegbarkeit: { montag: ['09:00-12:00'] },
      raeumliche_verfuegbarkeit: { max_km: 30 },
      bevorzugtes_therapeutengeschlecht: 'Egal',
      bevorzugtes_therapieverfahren: 'Verhaltenstherapie',
    },
    consent_metadata: { ip_address: '127.0.0.1', user_agent: 'test', timestamp_utc: '2025-07-05T14:33:55Z', voucher_booking: false },
    registration_timestamp: '2025-07-05 14:33:55',
    registration_token: token,
  });
}

/** A scraper file with two new therapists (DOMAIN.md section 2). */
function scraperFile(): string {
  const therapist = (id: string, first: string, last: string, plz: string) => ({
    id,
    status: 'new',
    last_modified: '2025-07-02T03:13:24.425333',
    basic_info: { salutation: 'Herr', title: null, first_name: first, last_name: last, full_name: 'ignored', classification: 'Psychologischer Psychotherapeut' },
    location: { street: 'Hauptstraße', house_number: '15', postal_code: plz, city: 'Aachen' },
    contact: { phone: '0241 12345', email: `${id}@example.org`, fax: null },
    languages: ['Englisch'],
    therapy_methods: ['Verhaltenstherapie für Erwachsene in Einzeltherapie'],
    telephone_hours: { monday: ['10:00-12:00'] },
  });
  const therapists = [therapist('praxis-a', 'Thomas', 'Zeevaert', '52066'), therapist('praxis-b', 'Jonas', 'Keller', '52068')];
  return JSON.stringify({
    metadata: {
      scrape_id: '52XXX_20250702',
      scrape_date: '2025-07-02T03:13:24.425211',
      postcode_area: '52XXX',
      total_therapists: 2,
      new_therapists: 2,
      modified_therapists: 0,
      deleted_therapists: 0,
    },
    therapists,
  });
}

async function importPatient(n: number) {
  const token = randomBytes(16).toString('hex');
  const file = path.join(dir, 'in', `Musterfrau${letters(n)}_Erika${letters(n)}_20250705_${token.slice(0, 8)}.json`);
  await writeFile(file, registration(n, token));
  const outcome = await importLocalFile(ctx, file);
  if (!outcome.ok) throw new Error(`patient import failed: ${outcome.code} ${outcome.reason}`);
  return outcome;
}

const queuePrefix = testQueuePrefix();

beforeAll(async () => {
  db = await createTestDatabase();
  kafka = await startKafkaMock();
  consumer = await collectMessages(kafka.brokers);
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-events-'));
  await mkdir(path.join(dir, 'in'), { recursive: true });
  await mkdir(path.join(dir, 'scraper'), { recursive: true });
  ctx = openContext(
    loadConfig({
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: queuePrefix.prefix,
      BACKUP_DIR: path.join(dir, 'backup'),
      FAILED_DIR: path.join(dir, 'failed'),
      MAIL_OUTBOX_DIR: path.join(dir, 'mail'),
      SCRAPER_DROP_DIR: path.join(dir, 'scraper'),
      STORAGE_DRIVER: 'local',
      ...fastRelaySettings(kafka.brokers),
    }),
    silentLogger(),
  );
  relay = outboxRelayComponents(ctx)[0]!;
  await relay.start();
});

afterAll(async () => {
  await relay?.stop(2000).catch(() => {});
  await consumer?.close().catch(() => {});
  await ctx?.close().catch(() => {});
  await kafka?.close();
  await db?.drop();
  await queuePrefix.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('domain events of real imports on Kafka', () => {
  it('a patient import and a therapist import publish their events with envelope, key and event id header', async () => {
    const patient = await importPatient(1);
    const [row] = await db.sql<{ key: string; event_id: string }[]>`select key, event_id from fleet.outbox where event_type = 'patient.created'`;
    expect(row).toBeDefined();
    const patientMsg = (await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === row!.event_id))).find((x) => x.headers['event-id'] === row!.event_id)!;
    expect(patientMsg.topic).toBe('patient-events');
    expect(patientMsg.key).toBe(row!.key);
    expect(patientMsg.headers['event-type']).toBe('patient.created');
    const envelope = JSON.parse(patientMsg.value!);
    expect(envelope).toMatchObject({ eventId: row!.event_id, eventType: 'patient.created', version: 1, producer: 'curavani-fleet' });
    expect(new Date(envelope.timestamp).toISOString()).toBe(envelope.timestamp);
    // Ids only: no name, email or health data in the event.
    expect(patientMsg.value).not.toMatch(/Erika|Musterfrau|example\.org|Schlafstörungen/);
    expect(patient.ok).toBe(true);

    const scraper = path.join(dir, 'scraper', '52XXX_20250702.json');
    await writeFile(scraper, scraperFile());
    await importTherapistFileNow(ctx, scraper);
    const therapistRows = await db.sql<{ key: string; event_id: string; event_type: string }[]>`
      select key, event_id, event_type from fleet.outbox where topic <> 'patient-events' order by id`;
    expect(therapistRows.filter((r) => r.event_type === 'therapist.created')).toHaveLength(2);
    expect(therapistRows.some((r) => r.event_type === 'therapist_import.completed')).toBe(true);
    const ids = new Set(therapistRows.map((r) => r.event_id));
    const got = await consumer.waitFor((m) => m.filter((x) => ids.has(x.headers['event-id']!)).length === ids.size);
    for (const r of therapistRows) {
      const msg = got.find((x) => x.headers['event-id'] === r.event_id)!;
      expect(msg.key).toBe(r.key);
      expect(msg.topic).toBe(r.event_type.startsWith('therapist.') ? 'therapist-events' : 'import-events');
      expect(JSON.parse(msg.value!)).toMatchObject({ eventId: r.event_id, eventType: r.event_type });
      expect(msg.value).not.toMatch(/Zeevaert|Keller|example\.org/);
    }
  });

  it('broker down: 200 patient imports all succeed without waiting for Kafka; after the restart all 200 events arrive', async () => {
    await kafka.stop();
    const before = Date.now();
    const outcomes = [];
    for (let i = 0; i < 200; i += 10) outcomes.push(...(await Promise.all(Array.from({ length: 10 }, (_, j) => importPatient(1000 + i + j)))));
    const importMs = Date.now() - before;
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const rows = await db.sql<{ event_id: string; published_at: Date | null }[]>`
      select event_id, published_at from fleet.outbox where event_type = 'patient.created' order by id desc limit 200`;
    expect(rows).toHaveLength(200);
    const ids = new Set(rows.map((r) => r.event_id));
    expect(consumer.messages.filter((m) => ids.has(m.headers['event-id']!))).toHaveLength(0);
    let ready = await relay.ready!();
    for (let i = 0; ready.ok && i < 400; i++) {
      await new Promise((r) => setTimeout(r, 50));
      ready = await relay.ready!();
    }
    expect(ready.ok).toBe(false);
    expect(ready.detail).toMatch(/kafka down/);

    await kafka.start();
    await consumer.waitFor((m) => new Set(m.filter((x) => ids.has(x.headers['event-id']!)).map((x) => x.headers['event-id'])).size === 200, 40_000);
    for (let i = 0; ; i++) {
      const left = await db.sql`select 1 from fleet.outbox where published_at is null`;
      if (left.length === 0) break;
      if (i > 200) throw new Error(`${left.length} events still unpublished`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await relay.ready!()).toMatchObject({ ok: true });
    expect(importMs).toBeLessThan(45_000); // they wait for PostgreSQL only, never for Kafka
  });
});
