/** A time query parameter: RFC 3339 or epoch milliseconds; `fallback` when absent, null when invalid. */
export function parseTime(value: string | undefined, fallback: number): number | null {
  if (value === undefined || value === "") return fallback;
  if (/^\d+$/.test(value)) return Number(value);
  const parsed = Date.parse(value);
  return Number.isFinite(parsed) ? parsed : null;
}

/** A `limit` query parameter from 1 to `max`; `fallback` when absent, null when invalid. */
export function parseLimit(value: string | undefined, fallback: number, max: number): number | null {
  const limit = value === undefined ? fallback : Number(value);
  return Number.isInteger(limit) && limit >= 1 && limit <= max ? limit : null;
}
