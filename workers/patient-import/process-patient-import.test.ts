import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../libs/errors/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { fixedClock } from '../../libs/runtime/clock.js';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import type { CommitInput, ImportDeps, ImportRow, ImportStore } from './ports.js';
import { processPatientImport } from './process-patient-import.js';

/** In-memory fakes of the ports: one ledger row, a bucket object, folders. */
function setup(doc: unknown, name = objectNameFor(doc as Record<string, unknown>)) {
  const bytes = fileBytes(doc);
  const row: ImportRow = {
    id: 1, source: 'bucket', bucket: 'b', objectName: name, generation: '7', sourceUri: `gs://b/${name}`,
    md5Hash: createHash('md5').update(bytes).digest('base64'), status: 'received', attempts: 0,
    patientId: null, duplicateOfPatientId: null, backupPath: null, failedPath: null, receivedAt: new Date(),
  };
  const state = { patients: [] as CommitInput[], mails: new Set<string>(), sent: [] as string[], objects: new Map([[name, bytes]]), backups: new Map<string, Buffer>(), failed: new Map<string, Buffer>(), failures: [] as string[] };
  const store: ImportStore = {
    startAttempt: async () => {
      row.attempts++;
      return { ...row };
    },
    markBackedUp: async (_id, info) => {
      row.status = 'backed_up';
      row.backupPath = info.backupPath;
    },
    commit: async (input) => {
      if (row.status === 'imported') return { outcome: { kind: 'imported', patientId: row.patientId!, possibleDuplicateOf: null }, deliveryIds: [] };
      state.patients.push(input);
      row.status = 'imported';
      row.patientId = state.patients.length;
      const outcome = { kind: 'imported' as const, patientId: row.patientId, possibleDuplicateOf: null };
      const mail = input.staffMail(outcome);
      const ids = mail && !state.mails.has('staff') ? (state.mails.add('staff'), ['staff']) : [];
      return { outcome, deliveryIds: ids };
    },
    markFailed: async (input) => {
      row.status = 'failed';
      state.failures.push(input.reason);
      const created = !state.mails.has('failed');
      state.mails.add('failed');
      return { deliveryId: 'failed', created };
    },
    markFinished: async (_id, status) => void (row.status = status),
  };
  let failDeletes = 0;
  const deps: ImportDeps = {
    store,
    source: {
      download: async (r) => {
        const b = state.objects.get(r.objectName);
        if (!b) throw new PermanentError('object_not_found', 'object generation not found');
        return b;
      },
      delete: async (r) => {
        if (failDeletes-- > 0) throw new Error('storage unavailable');
        return state.objects.delete(r.objectName) ? 'deleted' : 'not_found';
      },
    },
    backups: { save: async (r, b) => (state.backups.set(`${r.id}`, b), `/backup/${r.id}`) },
    failed: { save: async (r, b) => (state.failed.set(`${r.id}`, b), `/failed/${r.id}`) },
    sendMail: async (id) => void state.sent.push(id),
    signing: { environment: 'production' },
    staffImportEmails: true,
    clock: fixedClock('2026-11-24T10:00:00Z'),
    log: silentLogger(),
  };
  return { row, state, deps, failDeletesTimes: (n: number) => (failDeletes = n) };
}

describe('processPatientImport (in-memory ports)', () => {
  it('imports, emails staff once, deletes the object; a second run does nothing', async () => {
    const t = setup(plainRegistration());
    const r = await processPatientImport(1, t.deps);
    expect(r).toMatchObject({ outcome: 'imported', status: 'deleted', patientId: 1 });
    expect(t.state.objects.size).toBe(0);
    expect(t.state.backups.size).toBe(1);
    expect(t.state.sent).toEqual(['staff']);
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'already-final' });
    expect(t.state.patients).toHaveLength(1);
  });

  it('a delete that fails after the commit is retried without a second patient or email', async () => {
    const t = setup(plainRegistration());
    t.failDeletesTimes(2);
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('storage unavailable');
    expect(t.row.status).toBe('imported');
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('storage unavailable');
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'imported', status: 'deleted' });
    expect(t.state.patients).toHaveLength(1);
    expect(t.state.sent).toEqual(['staff']);
    expect(t.row.attempts).toBe(3);
  });

  it('an invalid file fails permanently with the ledger id, field and rule; bytes kept; one email even when run again', async () => {
    const doc = plainRegistration({ patch: (r) => ((r.patient_data as Record<string, unknown>).symptome = 'Mobbing') });
    const t = setup(doc);
    const err = await processPatientImport(1, t.deps).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermanentError);
    // Logs and dead letters never see values from the file; the ledger reason (for staff) does.
    expect((err as PermanentError).message).toBe('ledger 1: patient_data.symptome: expected a list of 1 to 6 symptoms, got the string (value not shown)');
    expect(t.state.failures[0]).toBe('ledger 1: patient_data.symptome: expected a list of 1 to 6 symptoms, got the string "Mobbing"');
    expect(t.state.objects.size).toBe(1);
    expect(t.state.failed.get('1')).toEqual(fileBytes(doc));
    await processPatientImport(1, t.deps).catch(() => {});
    expect(t.state.sent).toEqual(['failed']);
    expect(t.state.patients).toHaveLength(0);
  });

  it('a wrong file name is rejected before anything is imported', async () => {
    const t = setup(plainRegistration(), 'registrations/anmeldung.json');
    await expect(processPatientImport(1, t.deps)).rejects.toMatchObject({ code: 'bad_file_name' });
    expect(t.state.patients).toHaveLength(0);
  });

  it('on the final attempt a transient error is recorded as failed for staff, then rethrown', async () => {
    const t = setup(plainRegistration());
    t.deps.store.commit = async () => {
      throw new Error('connection refused');
    };
    await expect(processPatientImport(1, t.deps, { finalAttempt: true })).rejects.toThrow('connection refused');
    expect(t.row.status).toBe('failed');
    expect(t.state.failures[0]).toMatch(/^ledger 1: gave up after 1 attempts: connection refused/);
  });
});
