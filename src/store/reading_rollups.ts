/**
 * Per-minute rollups of each device's readings, so that a chart over hours or days reads
 * O(minutes x sensors) small rows instead of parsing every reading's JSON
 * (src/store/reading_series.ts). Per device and minute of reading time: the readings folded and
 * their earliest arrival (`rollup_minutes`), each sensor's count, min and max (`rollup_sensors`).
 *
 * The rules they keep:
 *
 * 1. A minute's rollup is the fold of the readings of that minute with ids up to the `rollup`
 *    cursor, or it is stale and a reader can tell: its `readings` then differs from the count of
 *    those readings still stored. Readings are never changed, only deleted (retention), and new
 *    ids are always above every cursor (retention keeps the newest row), so the count matching
 *    means the set matches. Readers use raw readings for a stale minute and for those above the
 *    cursor: an answer never depends on how far the rollups are.
 * 2. Written behind the writer by src/store/rollup_pass.ts, on the derived-data connection, rollup
 *    rows and cursor in one commit: a crash between a reading's commit and its rollup only leaves
 *    the reading above the cursor, folded by the next pass; a power cut undoes rollups and cursor
 *    together. Nothing here touches `readings`.
 * 3. Retention's cuts are repaired: a minute whose earliest arrival is before the earliest
 *    arrival still stored has lost readings (retention deletes by arrival), and is rebuilt from
 *    what remains, or deleted with its last reading. So rollups exist only for minutes that hold
 *    readings.
 * 4. Values are folded in JavaScript from the JSON the writer stored, never by SQLite's JSON
 *    functions: SQLite 3.45's text-to-double conversion can miss the nearest double by one unit
 *    (5.953842401504517e-5 reads back as 5.9538424015045173e-5), and a chart must show the values
 *    that were sent. Stored as REAL, they come back bit for bit.
 * 5. Bounded per minute by the sensor limit (`spec.limits.sensorsPerDevice`): a minute keeps the
 *    first sensors by name (SQLite's order, as the series' names) and notes the limit in
 *    `dropped_above`. A series shows the first names of its range, and a name dropped from a
 *    minute sorts after that many names of the same minute, so it is never among those shown.
 */
import type { Client, InStatement, InValue } from "@libsql/client";
import { pageEndWithin } from "./readings.ts";

/** The rollups' resolution: a minute of reading time. */
export const ROLLUP_MS = 60_000;
/** The cursor (src/store/cursors.ts) below which every committed reading is folded. */
export const ROLLUP_CURSOR = "rollup";
/** SQL for the cursor's position (0 before the first pass). */
export const ROLLUP_CURSOR_SQL = `(SELECT coalesce(max(position), 0) FROM cursors WHERE name = '${ROLLUP_CURSOR}')`;

/** One device's readings of one minute, folded. */
export interface MinuteFold {
  readonly device: string;
  readonly minute: number;
  readings: number;
  minReceivedMs: number;
  readonly sensors: SensorFolds;
}

/** Readings folded per device and minute, ready to merge into the stored rollups. */
export interface RollupFold {
  readonly minutes: readonly MinuteFold[];
  /** Readings folded, and the highest id among them (where the cursor moves to). */
  readonly readings: number;
  readonly lastId: number;
  /** Readings were left out for their size (more are waiting); see `foldReadingsAfter`. */
  readonly cut?: boolean;
}

/**
 * Each sensor's count, min and max over the values added, for at most `limit` sensors: the first
 * by name (rule 5), whatever the order names arrive in, so that memory is bounded however many
 * names a device invents; `dropped` once a name was left out. O(limit) per name past the bound.
 */
export class SensorFolds {
  readonly byName = new Map<string, { count: number; min: number; max: number }>();
  dropped = false;
  readonly #limit: number;
  #largest: string | null = null;

  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  add(values: Record<string, unknown>): void {
    for (const sensor in values) {
      const value = values[sensor];
      if (typeof value !== "number") continue;
      const folded = this.byName.get(sensor);
      if (folded) {
        folded.count++;
        if (value < folded.min) folded.min = value;
        if (value > folded.max) folded.max = value;
        continue;
      }
      if (this.byName.size >= this.#limit) {
        this.dropped = true;
        const largest = this.#largest ??= this.#findLargest();
        if (compareText(sensor, largest) > 0) continue;
        this.byName.delete(largest);
      }
      this.#largest = null;
      this.byName.set(sensor, { count: 1, min: value, max: value });
    }
  }

  #findLargest(): string {
    let largest: string | null = null;
    for (const name of this.byName.keys()) if (largest === null || compareText(name, largest) > 0) largest = name;
    return largest!;
  }
}

/**
 * SQLite's order of TEXT (its bytes in UTF-8, which is code point order), which names are kept
 * and dropped by; JavaScript's `<` compares UTF-16 units, which differs past U+FFFF.
 */
export function compareText(a: string, b: string): number {
  for (let i = 0, j = 0; i < a.length && j < b.length;) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(j)!;
    if (x !== y) return x - y;
    i += x > 0xffff ? 2 : 1;
    j += y > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/**
 * Folds up to `limit` readings with ids above `afterId` (in id order). SQLite groups them by
 * device and minute and hands over each group's values as one JSON array: the client's cost is
 * per row and column (about 17 µs for a reading's five), against about 1 µs to parse a reading
 * inside an array.
 */
export async function foldReadingsAfter(
  client: Client,
  afterId: number,
  limit: number,
  maxSensors: number,
  maxBytes = Number.MAX_SAFE_INTEGER,
): Promise<RollupFold> {
  // Values of no more than `maxBytes` (or one reading alone), measured by SQLite, up to the
  // measured end and never past it.
  const { end, cut } = await pageEndWithin(client, afterId, limit, maxBytes);
  if (end === null) return { minutes: [], readings: 0, lastId: afterId };
  const result = await client.execute({
    sql: `SELECT device, ts / ${ROLLUP_MS} AS minute, count(*) AS n, min(received_ms) AS received, max(id) AS last,
        '[' || group_concat(values_json, ',') || ']' AS values_array
      FROM (SELECT id, device, ts, values_json, received_ms FROM readings WHERE id > ? AND id <= ? ORDER BY id LIMIT ?)
      GROUP BY device, minute`,
    args: [afterId, end, limit],
  });
  const minutes: MinuteFold[] = [];
  let readings = 0;
  let lastId = afterId;
  for (const row of result.rows) {
    const fold: MinuteFold = {
      device: String(row.device),
      minute: Number(row.minute),
      readings: Number(row.n),
      minReceivedMs: Number(row.received),
      sensors: new SensorFolds(maxSensors),
    };
    for (const values of JSON.parse(String(row.values_array)) as Record<string, unknown>[]) fold.sensors.add(values);
    readings += fold.readings;
    lastId = Math.max(lastId, Number(row.last));
    minutes.push(fold);
  }
  return { minutes, readings, lastId, cut };
}

/** Readings handed over per page by `forEachReading`. */
const READINGS_PER_PAGE = 1_000;

/**
 * Visits the readings of `device` that `where` selects, a page of up to 1,000 at a time in
 * `order` (`ts` or `id`, which must be what the index walks), each page one row of JSON (see
 * foldReadingsAfter). `where` takes `args` and must not use other parameters.
 */
export async function forEachReading(
  client: Client,
  select: { where: string; args: InValue[]; order: "ts" | "id" },
  visit: (ts: number, values: Record<string, unknown>, receivedMs: number) => void,
): Promise<void> {
  let after = Number.MIN_SAFE_INTEGER;
  while (true) {
    const result = await client.execute({
      sql: `SELECT max(${select.order}) AS last, count(*) AS n,
          '[' || group_concat('[' || ts || ',' || received_ms || ',' || values_json || ']', ',') || ']' AS page
        FROM (SELECT id, ts, received_ms, values_json FROM readings
          WHERE ${select.where} AND ${select.order} > ? ORDER BY ${select.order} LIMIT ?)`,
      args: [...select.args, after, READINGS_PER_PAGE],
    });
    const row = result.rows[0];
    const count = Number(row.n);
    if (count === 0) return;
    for (
      const [ts, receivedMs, values] of JSON.parse(String(row.page)) as [number, number, Record<string, unknown>][]
    ) {
      visit(ts, values, receivedMs);
    }
    if (count < READINGS_PER_PAGE) return;
    after = Number(row.last);
  }
}

/**
 * Folds the listed minutes afresh from the readings they still hold up to the cursor at
 * `cursor` (none left: no fold for that minute).
 */
export async function foldMinutes(
  client: Client,
  minutes: readonly [string, number][],
  cursor: number,
  maxSensors: number,
): Promise<RollupFold> {
  const folds: MinuteFold[] = [];
  let readings = 0;
  for (const [device, minute] of minutes) {
    const fold: MinuteFold = {
      device,
      minute,
      readings: 0,
      minReceivedMs: Infinity,
      sensors: new SensorFolds(maxSensors),
    };
    await forEachReading(client, {
      where: "device = ? AND ts >= ? AND ts < ? AND id <= ?",
      args: [device, minute * ROLLUP_MS, (minute + 1) * ROLLUP_MS, cursor],
      order: "ts",
    }, (_ts, values, receivedMs) => {
      fold.readings++;
      if (receivedMs < fold.minReceivedMs) fold.minReceivedMs = receivedMs;
      fold.sensors.add(values);
    });
    readings += fold.readings;
    if (fold.readings > 0) folds.push(fold);
  }
  return { minutes: folds, readings, lastId: cursor };
}

/** Rows per multi-row upsert (6 parameters a row at most: far below SQLite's 32,766). */
const ROWS_PER_STATEMENT = 500;

/**
 * Statements that merge `fold` into the stored rollups and keep each touched minute within
 * `maxSensors` sensors; to commit with the cursor that covers the folded readings.
 */
export function mergeStatements(fold: RollupFold, maxSensors: number): InStatement[] {
  const { minutes } = fold;
  if (minutes.length === 0) return [];
  const statements: InStatement[] = [];
  for (let start = 0; start < minutes.length; start += ROWS_PER_STATEMENT) {
    const chunk = minutes.slice(start, start + ROWS_PER_STATEMENT);
    statements.push({
      sql: `INSERT INTO rollup_minutes (device, minute, readings, min_received_ms)
            VALUES ${"(?, ?, ?, ?),".repeat(chunk.length).slice(0, -1)}
            ON CONFLICT (device, minute) DO UPDATE SET readings = readings + excluded.readings,
              min_received_ms = min(min_received_ms, excluded.min_received_ms)`,
      args: chunk.flatMap((m) => [m.device, m.minute, m.readings, m.minReceivedMs]),
    });
  }
  const sensors = minutes.flatMap((m) =>
    [...m.sensors.byName].map(([sensor, s]) => [m.device, m.minute, sensor, s.count, s.min, s.max])
  );
  for (let start = 0; start < sensors.length; start += ROWS_PER_STATEMENT) {
    const chunk = sensors.slice(start, start + ROWS_PER_STATEMENT);
    statements.push({
      sql: `INSERT INTO rollup_sensors (device, minute, sensor, count, min, max)
            VALUES ${"(?, ?, ?, ?, ?, ?),".repeat(chunk.length).slice(0, -1)}
            ON CONFLICT (device, minute, sensor) DO UPDATE SET count = count + excluded.count,
              min = min(min, excluded.min), max = max(max, excluded.max)`,
      args: chunk.flat(),
    });
  }
  // A fold that left names out already (past the bound) says so for its minute.
  const dropped = minutes.filter((m) => m.sensors.dropped).map((m) => [m.device, m.minute]);
  if (dropped.length > 0) {
    statements.push({
      sql: `UPDATE rollup_minutes SET dropped_above = min(coalesce(dropped_above, ?2), ?2)
            WHERE (device, minute) IN (SELECT device, minute FROM (${TOUCHED}))`,
      args: [JSON.stringify(dropped), maxSensors],
    });
  }
  // Checked for the touched minutes only (a few rows each for an ordinary device).
  statements.push(...boundStatements(JSON.stringify(minutes.map((m) => [m.device, m.minute])), maxSensors));
  return statements;
}

/** `(device, minute)` pairs from a JSON array of `[device, minute]` bound as `?1`. */
const TOUCHED =
  "SELECT json_extract(value, '$[0]') AS device, json_extract(value, '$[1]') AS minute FROM json_each(?1)";

/**
 * Drops the sensors of each listed minute beyond the first `maxSensors` by name, noting the
 * limit in the minute's `dropped_above` (rule 5).
 */
function boundStatements(touchedJson: string, maxSensors: number): InStatement[] {
  const ranked = `WITH ranked AS (
      SELECT s.device, s.minute, s.sensor,
        row_number() OVER (PARTITION BY s.device, s.minute ORDER BY s.sensor) AS rank
      FROM (${TOUCHED}) t CROSS JOIN rollup_sensors s ON s.device = t.device AND s.minute = t.minute)`;
  const args = [touchedJson, maxSensors];
  return [
    {
      sql: `${ranked} UPDATE rollup_minutes SET dropped_above = min(coalesce(dropped_above, ?2), ?2)
            WHERE (device, minute) IN (SELECT device, minute FROM ranked WHERE rank > ?2)`,
      args,
    },
    {
      sql: `${ranked} DELETE FROM rollup_sensors
            WHERE (device, minute, sensor) IN (SELECT device, minute, sensor FROM ranked WHERE rank > ?2)`,
      args,
    },
  ];
}

/**
 * Minutes that lost readings to retention (rule 3), earliest arrival first, at most `limit`:
 * their earliest arrival is before the earliest arrival still stored.
 */
export async function cutMinutes(client: Client, limit: number): Promise<[string, number][]> {
  const result = await client.execute({
    sql: `SELECT device, minute FROM rollup_minutes
          WHERE min_received_ms < (SELECT min(received_ms) FROM readings) ORDER BY min_received_ms LIMIT ?`,
    args: [limit],
  });
  return result.rows.map((row) => [String(row.device), Number(row.minute)]);
}

/**
 * Statements that replace the listed minutes' rollups with `fold` (see foldMinutes), for one
 * commit.
 */
export function rebuildStatements(
  minutes: readonly [string, number][],
  fold: RollupFold,
  maxSensors: number,
): InStatement[] {
  const touched = JSON.stringify(minutes);
  return [
    // Row values from a table (not from json_extract) let SQLite look each one up by primary key.
    {
      sql: `DELETE FROM rollup_sensors WHERE (device, minute, sensor) IN (SELECT s.device, s.minute, s.sensor
              FROM (${TOUCHED}) t CROSS JOIN rollup_sensors s ON s.device = t.device AND s.minute = t.minute)`,
      args: [touched],
    },
    {
      sql: `DELETE FROM rollup_minutes WHERE (device, minute) IN (SELECT m.device, m.minute
              FROM (${TOUCHED}) t CROSS JOIN rollup_minutes m ON m.device = t.device AND m.minute = t.minute)`,
      args: [touched],
    },
    ...mergeStatements(fold, maxSensors),
  ];
}
