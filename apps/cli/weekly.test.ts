import { describe, expect, it } from 'vitest';
import { alreadyRecordedText, dropReasonOf, refusalMessage, thisWeekState } from './commands/weekly.js';

describe('fleet weekly run: why a fan-out queued nothing, or stopped', () => {
  it('a past or future week queues nothing and says so', () => {
    expect(refusalMessage({ isoWeek: '2026-W10', queued: 0, refused: 'past_week' })).toBe(
      'week 2026-W10 is not the current week (past weeks are never sent): nothing queued; use --dry-run to count',
    );
    expect(refusalMessage({ isoWeek: '2027-W10', queued: 0, refused: 'future_week' })).toBe(
      'week 2027-W10 is not the current week (not started yet): nothing queued; use --dry-run to count',
    );
  });

  it('a week that ended while the fan-out ran names the jobs it queued before, not "nothing queued"', () => {
    const says = refusalMessage({ isoWeek: '2026-W48', queued: 2000, refused: 'past_week' });
    expect(says).toBe(
      "week 2026-W48 ended while the fan-out ran: it stopped after queueing 2000 email job(s); any of them not sent by the week's end is skipped (past weeks are never sent)",
    );
    expect(says).not.toContain('nothing queued');
  });
});

describe('fleet weekly run: the emails of the week already recorded', () => {
  it('names only the kinds there are, and a bare 0 when there are none', () => {
    const none = { sent: 0, pending: 0, failed: 0, dropped: 0 };
    expect(alreadyRecordedText({ skippedAlreadySent: 0, skippedAlreadyRecorded: none })).toBe('0');
    expect(alreadyRecordedText({ skippedAlreadySent: 3, skippedAlreadyRecorded: { ...none, sent: 2, dropped: 1 } })).toBe('3: 2 sent, 1 dropped');
    expect(alreadyRecordedText({ skippedAlreadySent: 5, skippedAlreadyRecorded: { sent: 2, pending: 1, failed: 1, dropped: 1 } })).toBe('5: 2 sent, 1 pending, 1 failed, 1 dropped');
  });
});

describe("what became of this week's email (fleet weekly preview, opt-out, opt-in)", () => {
  const at = new Date('2026-12-07T08:00:03Z');
  it('names a drop by its recorded code, and says an earlier unanswered request may have carried it by the row flag, not by the sentence', () => {
    const says = thisWeekState({ status: 'dropped', sentAt: null, updatedAt: at, dropReason: 'address_changed', outcomeUnknown: false }, false);
    expect(says).toMatch(/^dropped \(address changed\) at .+, not sent$/);
    expect(thisWeekState({ status: 'dropped', sentAt: null, updatedAt: at, dropReason: 'opted_out', outcomeUnknown: true }, false)).toMatch(
      /^dropped \(opted out\) at .+, not sent \(an earlier request may have carried it\)$/,
    );
    // Dropped before the code was recorded: no reason made up from the text.
    expect(thisWeekState({ status: 'dropped', sentAt: null, updatedAt: at, dropReason: null }, false)).toMatch(/^dropped at .+, not sent$/);
    expect(dropReasonOf('week_over')).toBe('its week ended before it went out');
    expect(dropReasonOf(null)).toBeNull();
  });
});
