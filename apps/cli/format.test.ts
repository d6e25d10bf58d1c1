import { describe, expect, it } from 'vitest';
import { columns, displayTime, isoSeconds, table } from './format.js';

describe('CLI formatting', () => {
  it('prints times to the second in UTC, the same width with or without milliseconds', () => {
    expect(isoSeconds(new Date('2026-12-06T01:05:00.021Z'))).toBe('2026-12-06T01:05:00Z');
    expect(isoSeconds(new Date('2026-12-06T01:05:06.000Z'))).toBe('2026-12-06T01:05:06Z');
    expect(isoSeconds(null)).toBeNull();
    expect(isoSeconds(undefined)).toBeNull();
    expect(isoSeconds(new Date('not a time'))).toBeNull();
  });

  it("prints times for people in the staff's zone (as daily, the pages and the email) to the second, with the offset", () => {
    expect(displayTime(new Date('2026-12-06T17:28:27.400Z'), 'second')).toBe('2026-12-06 18:28:27 +01:00');
    expect(displayTime(new Date('2026-07-06T17:28:27Z'), 'second')).toBe('2026-07-06 19:28:27 +02:00');
    expect(displayTime(null, 'second')).toBeNull();
    expect(displayTime(new Date('not a time'), 'second')).toBeNull();
  });

  it("aligns the columns of a table under its keys: times to the second in the staff's zone, nothing for null, no trailing spaces", () => {
    const text = table([
      { id: 2, status: 'imported', finished: new Date('2026-12-06T01:05:06.000Z'), note: '' },
      { id: 10, status: 'partial', finished: new Date('2026-12-06T01:05:00.021Z'), note: '1 of 6 therapists failed' },
      { id: 11, status: 'queued', finished: null, note: null },
    ]);
    expect(text.split('\n')).toEqual([
      'id  status    finished                    note',
      '2   imported  2026-12-06 02:05:06 +01:00',
      '10  partial   2026-12-06 02:05:00 +01:00  1 of 6 therapists failed',
      '11  queued',
    ]);
  });

  it('aligns cells under a header', () => {
    expect(columns(['topic', 'n'], [['patient-events', '3'], ['x', '12']])).toBe('topic           n\npatient-events  3\nx               12');
  });
});

describe('displayTime', () => {
  // fleet status printed UTC (2026-12-07T17:31:28Z) next to fleet daily's 2026-12-07 18:31 +01:00.
  it("is the daily view's zone with its offset, to the minute or second; nothing for none", () => {
    expect(displayTime(new Date('2026-12-07T17:31:28Z'))).toBe('2026-12-07 18:31 +01:00');
    expect(displayTime(new Date('2026-12-07T17:31:28Z'), 'second')).toBe('2026-12-07 18:31:28 +01:00');
    expect(displayTime(new Date('2026-07-01T10:00:05Z'), 'second')).toBe('2026-07-01 12:00:05 +02:00');
    expect(displayTime(null)).toBeNull();
    expect(displayTime(new Date('x'))).toBeNull();
  });
});
