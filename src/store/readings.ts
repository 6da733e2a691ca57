import type { Client, Row } from "@libsql/client";

/** A stored reading as the components behind the writer read it; `valuesJson` as stored. */
export interface StoredReading {
  id: number;
  device: string;
  ts: number;
  valuesJson: string;
  /** Arrival on the store's clock. */
  receivedMs: number;
}

/**
 * The readings one commit added, when it added every row it carried: ids (`afterId`, `afterId` +
 * `count`], in the order of `rows()` (built when asked).
 */
export interface CommittedReadings {
  afterId: number;
  count: number;
  rows(): StoredReading[];
}

function storedReading(row: Row): StoredReading {
  return {
    id: Number(row.id),
    device: String(row.device),
    ts: Number(row.ts),
    valuesJson: String(row.values_json),
    receivedMs: Number(row.received_ms),
  };
}

/**
 * Where a page of up to `limit` readings after `afterId` ends so that their values come to no more
 * than `maxBytes` (or it is the first reading alone), and whether that cut it short (`cut`); `end`
 * is null when no reading is waiting. SQLite measures the page (one row back) and, only when it is
 * over, finds the last reading that fits, so readings that do not fit never reach JavaScript.
 * Measuring costs a second scan of rows already in its cache (within the noise of a 2,000-row read).
 */
export async function pageEndWithin(
  client: Client,
  afterId: number,
  limit: number,
  maxBytes: number,
): Promise<{ end: number | null; cut: boolean }> {
  const measured = await client.execute({
    sql: `SELECT sum(length(values_json)), max(id) FROM (
            SELECT id, values_json FROM readings WHERE id > ? ORDER BY id LIMIT ?)`,
    args: [afterId, limit],
  });
  const bytes = measured.rows[0][0];
  const lastId = measured.rows[0][1];
  if (lastId === null) return { end: null, cut: false };
  if (Number(bytes) <= maxBytes) return { end: Number(lastId), cut: false };
  const fitting = await client.execute({
    sql: `SELECT max(id) FROM (
            SELECT id, length(values_json) AS own,
              sum(length(values_json)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS running
            FROM (SELECT id, values_json FROM readings WHERE id > ?1 ORDER BY id LIMIT ?2))
          WHERE running <= ?3 OR running = own`,
    args: [afterId, limit, maxBytes],
  });
  return { end: Number(fitting.rows[0][0]), cut: true };
}

/**
 * Up to `limit` readings with ids above `afterId`, in id order, whose values come to no more than
 * `maxBytes` (or the first reading alone, see `pageEndWithin`); `cut` tells that more are waiting.
 */
export async function readingsAfterWithin(
  client: Client,
  afterId: number,
  limit: number,
  maxBytes: number,
): Promise<{ readings: StoredReading[]; cut: boolean }> {
  const { end, cut } = await pageEndWithin(client, afterId, limit, maxBytes);
  if (end === null) return { readings: [], cut: false };
  // Up to the measured end, never past it: what was committed since has not been measured.
  const result = await client.execute({
    sql: "SELECT id, device, ts, values_json, received_ms FROM readings WHERE id > ? AND id <= ? ORDER BY id",
    args: [afterId, end],
  });
  return { readings: result.rows.map(storedReading), cut };
}

/** The highest reading id committed so far (0 when there is none). */
export async function maxReadingId(client: Client): Promise<number> {
  const result = await client.execute("SELECT coalesce(max(id), 0) AS id FROM readings");
  return Number(result.rows[0].id);
}

/** Up to `limit` readings of `device` with ids in (`afterId`, `toId`], in id order. */
export async function deviceReadingsBetween(
  client: Client,
  device: string,
  ids: { afterId: number; toId: number },
  limit: number,
): Promise<Pick<StoredReading, "ts" | "valuesJson">[]> {
  const result = await client.execute({
    sql: "SELECT ts, values_json FROM readings WHERE device = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
    args: [device, ids.afterId, ids.toId, limit],
  });
  return result.rows.map((row) => ({ ts: Number(row.ts), valuesJson: String(row.values_json) }));
}

/** How many readings of `device` have ids strictly between `afterId` and `beforeId`. */
export async function countDeviceReadings(
  client: Client,
  device: string,
  ids: { afterId: number; beforeId: number },
): Promise<{ count: number; firstTs: number | null }> {
  const result = await client.execute({
    sql: "SELECT count(*) AS n, min(ts) AS first_ts FROM readings WHERE device = ? AND id > ? AND id < ?",
    args: [device, ids.afterId, ids.beforeId],
  });
  const row = result.rows[0];
  return { count: Number(row.n), firstTs: row.first_ts === null ? null : Number(row.first_ts) };
}

/** Times of `device`'s readings with ids strictly between `afterId` and `beforeId`, in id order, at most `limit`. */
export async function deviceReadingTimes(
  client: Client,
  device: string,
  ids: { afterId: number; beforeId: number },
  limit: number,
): Promise<number[]> {
  const result = await client.execute({
    sql: "SELECT ts FROM readings WHERE device = ? AND id > ? AND id < ? ORDER BY id LIMIT ?",
    args: [device, ids.afterId, ids.beforeId, limit],
  });
  return result.rows.map((row) => Number(row.ts));
}

/**
 * `values_json` of the latest `limit` readings, oldest first: of every device by id (commit
 * order) when `device` is null, else of that device by reading time.
 */
export async function latestReadingValues(client: Client, device: string | null, limit: number): Promise<string[]> {
  const result = device === null
    ? await client.execute({ sql: "SELECT values_json FROM readings ORDER BY id DESC LIMIT ?", args: [limit] })
    : await client.execute({
      sql: "SELECT values_json FROM readings WHERE device = ? ORDER BY ts DESC LIMIT ?",
      args: [device, limit],
    });
  return result.rows.map((row) => String(row.values_json)).reverse();
}
