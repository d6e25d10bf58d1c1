import { describe, expect, it } from 'vitest';
import { emptyCounts } from '../../workers/therapist-import/report.js';
import { fileReportText } from './commands/therapists.js';

describe('fleet imports show --kind therapist', () => {
  it('says what a metadata disagreement counted: the entries with that status, not the therapists created', () => {
    const text = fileReportText({
      fileId: 12,
      runId: 7,
      path: '20250702/52074.json',
      status: 'partial',
      reason: null,
      counts: { ...emptyCounts(), total: 6, created: 4, updated: 1, unchanged: 1, metadataDisagreements: 3 },
      failures: [],
      statusMismatches: [],
      replacedCorrections: [],
      metadataDisagreements: [
        { field: 'total_therapists', stated: 5, found: 6 },
        { field: 'new_therapists', stated: 4, found: 5 },
        { field: 'postcode_area', stated: '53XXX', found: '52074' },
      ],
      fileErrors: [],
      durationMs: 40,
    });
    expect(text).toContain(
      [
        'metadata disagrees with the file:',
        '  metadata total_therapists says 5; the file has 6 entries',
        '  metadata new_therapists says 4; the file has 5 entries with status "new"',
        "  metadata postcode_area says 53XXX; the file's name has the postcode 52074",
      ].join('\n'),
    );
    expect(text).not.toContain('found');
  });

  it('a skipped file (superseded, too large, misnamed) was never read: "not read", not 0 therapists and 0 of 0 (–)', () => {
    const text = fileReportText({
      fileId: 13,
      runId: 7,
      path: '20250625/52074.json',
      status: 'skipped',
      reason: 'superseded by the newer folder 20250702/52074.json',
      counts: emptyCounts(),
      failures: [],
      statusMismatches: [],
      replacedCorrections: [],
      metadataDisagreements: [],
      fileErrors: [],
      durationMs: null,
    });
    expect(text).toMatch(/therapists in the file +not read \(the file was skipped: see the reason\)/);
    expect(text).not.toContain('0 of 0');
  });
});
