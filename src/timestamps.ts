/**
 * The one definition of a valid time, shared by ingest and the query parameters of the API, so
 * that whatever ingest accepts, a query can name and return unchanged.
 *
 * - RFC 3339 with a real calendar date (2026-02-30 is refused, not moved to March 2), hours to
 *   23, seconds to 59 (no leap seconds), at most millisecond precision (digits past the third
 *   must be zero) and an offset of at most ±23:59; or an integer of epoch milliseconds.
 * - Within [MIN_EPOCH_MS, MAX_EPOCH_MS]: numbers below 1973-03-03 are almost certainly seconds.
 */
export const MIN_EPOCH_MS = 100_000_000_000;
/** 9999-12-31T23:59:59.999Z: the last instant RFC 3339's four-digit year can write. */
export const MAX_EPOCH_MS = 253_402_300_799_999;
export const TIME_RANGE_TEXT = "from 1973-03-03T09:46:40Z to 9999-12-31T23:59:59.999Z";

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

export type TimeResult = { ok: true; ms: number } | { ok: false; message: string };

/** Parses an RFC 3339 string or epoch milliseconds under the rules above. */
export function parseTimestamp(value: unknown): TimeResult {
  if (typeof value === "number") return epochMs(value);
  if (typeof value !== "string") return fail("must be an RFC 3339 string or epoch milliseconds");
  if (value.length > 40) return fail("is not an RFC 3339 time");
  const match = RFC3339.exec(value);
  if (!match) return fail("must be an RFC 3339 time such as 2026-11-22T10:00:00.000Z");
  const [, year, month, day, hour, minute, second, fraction = "", sign, offsetHour, offsetMinute] = match;
  const y = Number(year), mo = Number(month), d = Number(day);
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo)) return fail("is not a calendar date");
  if (Number(hour) > 23 || Number(minute) > 59 || Number(second) > 59) return fail("is not a valid time of day");
  if (/[1-9]/.test(fraction.slice(3))) return fail("is more precise than a millisecond");
  let offsetMs = 0;
  if (sign) {
    if (Number(offsetHour) > 23 || Number(offsetMinute) > 59) return fail("has an invalid UTC offset");
    offsetMs = (sign === "-" ? -1 : 1) * (Number(offsetHour) * 60 + Number(offsetMinute)) * 60_000;
  }
  const date = new Date(0);
  date.setUTCFullYear(y, mo - 1, d);
  date.setUTCHours(Number(hour), Number(minute), Number(second), Number(fraction.slice(0, 3).padEnd(3, "0")));
  return inRange(date.getTime() - offsetMs);
}

function epochMs(value: number): TimeResult {
  if (!Number.isInteger(value)) return fail("epoch milliseconds must be an integer");
  if (value > 0 && value < MIN_EPOCH_MS) return fail("epoch milliseconds expected (this looks like seconds)");
  return inRange(value);
}

function inRange(ms: number): TimeResult {
  return ms >= MIN_EPOCH_MS && ms <= MAX_EPOCH_MS ? { ok: true, ms } : fail(`is outside ${TIME_RANGE_TEXT}`);
}

function daysInMonth(year: number, month: number): number {
  return month === 2 ? (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28) : [4, 6, 9, 11]
      .includes(month)
    ? 30
    : 31;
}

function fail(message: string): TimeResult {
  return { ok: false, message };
}
