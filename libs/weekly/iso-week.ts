/**
 * ISO 8601 weeks ("2026-W48") as seen in a time zone: the week a moment falls into is the
 * week of its local calendar date there, and a week starts on Monday 00:00 local time.
 */

const ISO_WEEK = /^(\d{4})-W(\d{2})$/;

export class InvalidIsoWeekError extends Error {
  override name = 'InvalidIsoWeekError';
}

/** The local calendar date of a moment in a time zone. */
export function localDate(at: Date, timeZone: string): { year: number; month: number; day: number } {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(at);
  const get = (t: string) => Number(parts.find((p) => p.type === t)!.value);
  return { year: get('year'), month: get('month'), day: get('day') };
}

/** ISO week of a calendar date (proleptic Gregorian, computed in UTC arithmetic). */
export function isoWeekOfDate(year: number, month: number, day: number): string {
  const d = new Date(Date.UTC(year, month - 1, day));
  const weekday = d.getUTCDay() || 7; // Monday 1 .. Sunday 7
  d.setUTCDate(d.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const weekYear = d.getUTCFullYear();
  const week = Math.ceil(((d.getTime() - Date.UTC(weekYear, 0, 1)) / 86_400_000 + 1) / 7);
  return `${weekYear}-W${String(week).padStart(2, '0')}`;
}

/** The ISO week a moment falls into, in the given time zone. */
export function isoWeekOf(at: Date, timeZone: string): string {
  const { year, month, day } = localDate(at, timeZone);
  return isoWeekOfDate(year, month, day);
}

export function parseIsoWeek(week: string): { year: number; week: number } {
  const m = ISO_WEEK.exec(week);
  if (!m) throw new InvalidIsoWeekError(`not an ISO week (expected e.g. 2026-W48): ${JSON.stringify(week)}`);
  const year = Number(m[1]);
  const n = Number(m[2]);
  if (n < 1 || n > 53 || isoWeekOfDate(...mondayOf(year, n)) !== week) {
    throw new InvalidIsoWeekError(`no such ISO week: ${week}`);
  }
  return { year, week: n };
}

function mondayOf(year: number, week: number): [number, number, number] {
  // 4 January is always in week 1.
  const jan4 = new Date(Date.UTC(year, 0, 4));
  const monday = new Date(jan4.getTime() - ((jan4.getUTCDay() || 7) - 1) * 86_400_000 + (week - 1) * 7 * 86_400_000);
  return [monday.getUTCFullYear(), monday.getUTCMonth() + 1, monday.getUTCDate()];
}

/** Offset of a time zone from UTC at a moment, in ms (e.g. +3_600_000 for Berlin in winter). */
function offsetMs(at: Date, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  }).formatToParts(at);
  const get = (t: string) => Number(parts.find((p) => p.type === t)!.value);
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return asUtc - Math.floor(at.getTime() / 1000) * 1000;
}

/** The moment of local midnight of a calendar date in a time zone. */
export function zonedMidnight(year: number, month: number, day: number, timeZone: string): Date {
  const guess = Date.UTC(year, month - 1, day);
  let t = guess - offsetMs(new Date(guess), timeZone);
  t = guess - offsetMs(new Date(t), timeZone);
  return new Date(t);
}

/** [start, end) of an ISO week in a time zone: Monday 00:00 local to the next Monday 00:00 local. */
export function isoWeekRange(week: string, timeZone: string): { start: Date; end: Date } {
  const { year, week: n } = parseIsoWeek(week);
  const [y, m, d] = mondayOf(year, n);
  const next = new Date(Date.UTC(y, m - 1, d + 7));
  return {
    start: zonedMidnight(y, m, d, timeZone),
    end: zonedMidnight(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate(), timeZone),
  };
}

/** -1, 0 or 1 as week a is before, equal to or after week b. */
export function compareIsoWeeks(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
