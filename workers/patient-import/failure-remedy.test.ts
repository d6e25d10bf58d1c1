import { describe, expect, it } from 'vitest';
import { failureNextStep, failureRemedy, requeueIsFutile } from './failure-remedy.js';

describe('failureNextStep (the next step on /imports)', () => {
  // It said `fleet imports discard 4.`, which fails when copied: the command refuses without
  // --reason (exit 2), as the staff email and `fleet imports show` say.
  it('a hand import names the discard command with its required --reason', () => {
    const step = failureNextStep({ id: 4, source: 'file', errorCode: 'validation_failed' });
    expect(step).toContain('fleet imports discard 4 --reason "..."');
    expect(step).not.toContain('dlq');
  });

  it('a bucket file whose content is wrong: a requeue does not help, its dead letter is discarded', () => {
    expect(failureNextStep({ id: 7, source: 'bucket', errorCode: 'validation_failed' })).toBe(
      'A requeue does not help (the content is wrong): have a corrected file uploaded, then discard patient-import.ledger.7.',
    );
  });

  // It fell to the default "requeue once the cause is fixed", but a requeue fails the same way every time.
  it('a payment reference another patient holds: a requeue does not help, resolve it by hand, then discard', () => {
    expect(failureRemedy('zahlungsreferenz_taken')).toBe('resolve-by-hand');
    expect(requeueIsFutile('resolve-by-hand')).toBe(true);
    const step = failureNextStep({ id: 52, source: 'bucket', errorCode: 'zahlungsreferenz_taken' });
    expect(step).toMatch(/^A requeue does not help: its payment reference \(the first 8 characters of its registration token\) is already used by the patient the reason names/);
    expect(step).toContain('resolve the registration by hand with the platform, then discard patient-import.ledger.52.');
    expect(step).not.toContain('Requeue');
  });
});
