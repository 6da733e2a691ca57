import { parseTimestamp } from "../timestamps.ts";

/**
 * A time query parameter: RFC 3339 or epoch milliseconds, under the same rules as ingest
 * (src/timestamps.ts); `fallback` when absent, null when invalid (including numbers that look
 * like seconds and anything outside the supported range).
 */
export function parseTime(value: string | undefined, fallback: number): number | null {
  if (value === undefined || value === "") return fallback;
  if (/^-?\d{1,20}$/.test(value)) {
    const result = parseTimestamp(Number(value));
    return result.ok ? result.ms : null;
  }
  const result = parseTimestamp(value);
  return result.ok ? result.ms : null;
}

/** A `limit` query parameter from 1 to `max`; `fallback` when absent, null when invalid. */
export function parseLimit(value: string | undefined, fallback: number, max: number): number | null {
  if (value === undefined) return fallback;
  if (!/^\d{1,9}$/.test(value)) return null;
  const limit = Number(value);
  return limit >= 1 && limit <= max ? limit : null;
}
