import { describe, expect, it } from 'vitest';
import { assertCountsAddUp, countWithShare, emptyCounts, formatShare, metadataDisagreements, metadataDisagreementText, metadataFoundText } from './report.js';

describe('therapist import report', () => {
  it('never rounds a failure away nor up to 100%, and never divides by zero', () => {
    expect(formatShare(1, 8262)).toBe('<0,1%');
    expect(formatShare(8261, 8262)).toBe('>99,9%');
    expect(formatShare(1, 8262, 'en-GB')).toBe('<0.1%');
    expect(formatShare(1, 3, 'en-GB')).toBe('33.3%');
    expect(formatShare(8262, 8262)).toBe('100%');
    expect(formatShare(0, 8262)).toBe('0%');
    expect(formatShare(0, 0)).toBe('–');
    expect(formatShare(1, 3)).toBe('33,3%');
    expect(formatShare(1, 999)).toBe('0,1%');
    expect(countWithShare(1, 8262)).toBe('1 von 8.262 (<0,1%)');
  });

  it('asserts that the categories add up to the therapists in the file', () => {
    const c = { ...emptyCounts(), total: 3, created: 1, failed: 1, skipped: 1 };
    expect(() => assertCountsAddUp(c, 'f')).not.toThrow();
    expect(() => assertCountsAddUp({ ...c, total: 4 }, 'file 52074.json')).toThrow(/add up to 3, but the file holds 4/);
  });

  it('reports metadata counts that disagree, and a postcode area that does not fit the file name', () => {
    const d = metadataDisagreements({ total_therapists: 3, new_therapists: 1, deleted_therapists: 0, postcode_area: '53XXX' }, ['new', 'new', 'deleted'], '52074');
    expect(d).toEqual([
      { field: 'new_therapists', stated: 1, found: 2 },
      { field: 'deleted_therapists', stated: 0, found: 1 },
      { field: 'postcode_area', stated: '53XXX', found: '52074' },
    ]);
    expect(metadataDisagreements({ total_therapists: 1, postcode_area: '52XXX' }, ['new'], '52074')).toEqual([]);
  });

  it('says what a metadata disagreement counted: lines by their status, not what the import did', () => {
    const text = (field: string, stated: unknown, found: unknown) => metadataDisagreementText({ field, stated, found });
    expect(text('new_therapists', 4, 5)).toBe('metadata new_therapists says 4; the file has 5 entries with status "new"');
    expect(text('modified_therapists', 0, 1)).toBe('metadata modified_therapists says 0; the file has 1 entry with status "modified"');
    expect(text('deleted_therapists', 2, 0)).toBe('metadata deleted_therapists says 2; the file has 0 entries with status "deleted"');
    expect(text('total_therapists', 5, 4)).toBe('metadata total_therapists says 5; the file has 4 entries');
    expect(text('postcode_area', '53XXX', '52074')).toBe("metadata postcode_area says 53XXX; the file's name has the postcode 52074");
    expect(metadataFoundText({ field: 'new_therapists', stated: 4, found: 5 })).toBe('5 entries with status "new"');
    expect(metadataFoundText({ field: 'postcode_area', stated: '53XXX', found: '52074' })).toBe('the postcode 52074 in its name');
  });
});
