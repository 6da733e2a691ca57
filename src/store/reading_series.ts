/**
 * A device's readings over a time range, downsampled in the store: per bucket, each sensor's
 * minimum and maximum, the readings, the highest score and the anomalous readings, so a day of
 * 1 Hz data leaves the store as at most `buckets` rows per sensor.
 *
 * Two ways, the same answer for the same buckets:
 *
 * - Short ranges (buckets shorter than a minute, and at most RAW_READINGS readings in the range):
 *   from the readings themselves, in buckets of exactly (to - from) / buckets.
 * - Otherwise from the per-minute rollups (src/store/reading_rollups.ts), in buckets of whole
 *   minutes counted from the minute `from` falls in (at most `buckets` of them; the first starts
 *   at `from`, the last ends at `to`), so that no minute straddles two buckets. Readings are read
 *   raw only where a rollup cannot answer: the minutes cut by `from` and `to`, readings above the
 *   rollups' cursor (not folded yet), and stale minutes (rule 1 there). Counts, scores and
 *   anomaly flags always come from the readings (the scorer writes them after the rollups may
 *   have been made): one pass over the (device, ts) index, about a tenth of the JSON's cost.
 */
import type { Client, InValue } from "@libsql/client";
import { compareText, forEachReading, ROLLUP_CURSOR_SQL, ROLLUP_MS, SensorFolds } from "./reading_rollups.ts";

/**
 * Readings a range may hold to be charted raw at a bucket length under a minute: about 0.15 s
 * here for 20,000 readings of 8 sensors (x4 on a Raspberry Pi 4), e.g. 5 h at 1 Hz.
 */
export const RAW_READINGS = 20_000;

export interface SeriesQuery {
  device: string;
  fromTs: number;
  toTs: number;
  buckets: number;
  /** Sensors returned at most (the first by name); more are reported as `truncated`. */
  maxSensors: number;
}

export interface ReadingSeries {
  bucketMs: number;
  /** Start of each bucket that holds readings (within the range), ms since the epoch. */
  ts: number[];
  readings: number[];
  /** Highest score in the bucket (null while unscored) and the count of anomalous readings. */
  score: (number | null)[];
  anomalous: number[];
  sensors: Record<string, { min: (number | null)[]; max: (number | null)[] }>;
  truncated: boolean;
}

export async function readingSeries(client: Client, query: SeriesQuery): Promise<ReadingSeries> {
  const asked = Math.max(1, Math.ceil((query.toTs - query.fromTs) / query.buckets));
  if (asked < ROLLUP_MS && !(await holdsMoreThan(client, query, RAW_READINGS))) {
    return rawSeries(client, query, asked);
  }
  return rolledUpSeries(client, query);
}

/** Buckets of `bucketMs` counted from `origin` (at or before `fromTs`). */
interface Grid {
  origin: number;
  bucketMs: number;
  fromTs: number;
}

/** Where min and max come from: readings in `ranges`, readings above `tail.afterId`, rollups. */
interface Sources {
  device: string;
  grid: Grid;
  /** [from, to) ranges of reading time read raw. */
  ranges: [number, number][];
  /** Readings of [fromTs, toTs) above the rollup cursor, read raw. */
  tail: { afterId: number; fromTs: number; toTs: number } | null;
  /** Rollups of minutes [first, end) except `stale`. */
  rollups: { first: number; end: number; stale: number[] } | null;
}

/** Buckets of exactly `bucketMs` from `fromTs`, every value from the readings. */
async function rawSeries(client: Client, query: SeriesQuery, bucketMs: number): Promise<ReadingSeries> {
  const grid = { origin: query.fromTs, bucketMs, fromTs: query.fromTs };
  const totals = await client.execute({
    sql: `SELECT CAST((ts - ?2) / ?4 AS INTEGER) AS bucket, count(*) AS n, max(score) AS score,
        coalesce(sum(anomaly), 0) AS anomalous
      FROM readings WHERE device = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY bucket ORDER BY bucket`,
    args: [query.device, query.fromTs, query.toTs, bucketMs],
  });
  const series = new SeriesBuilder(grid);
  for (const row of totals.rows) series.add(Number(row.bucket), row);
  const sources: Sources = {
    device: query.device,
    grid,
    ranges: [[query.fromTs, query.toTs]],
    tail: null,
    rollups: null,
  };
  return await series.fill(client, sources, query.maxSensors);
}

/** Buckets of whole minutes, min and max from the rollups wherever they can answer. */
async function rolledUpSeries(client: Client, query: SeriesQuery): Promise<ReadingSeries> {
  const { device, fromTs, toTs, maxSensors } = query;
  const origin = Math.floor(fromTs / ROLLUP_MS) * ROLLUP_MS;
  const grid = { origin, bucketMs: Math.ceil((toTs - origin) / query.buckets / ROLLUP_MS) * ROLLUP_MS, fromTs };
  // Whole minutes of the range; those cut by `from` or `to` are read raw.
  const first = Math.ceil(fromTs / ROLLUP_MS);
  const end = Math.max(first, Math.floor(toTs / ROLLUP_MS));
  // One snapshot: the cursor, how many readings of each minute are at or below it, and the
  // rollups, so that a stale minute is told apart exactly (rule 1 of reading_rollups.ts).
  const [position, totals, rolled] = await client.batch([
    `SELECT ${ROLLUP_CURSOR_SQL} AS cursor`,
    {
      sql: `SELECT ts / ${ROLLUP_MS} AS minute, count(*) AS n, sum(id <= ${ROLLUP_CURSOR_SQL}) AS folded,
          max(score) AS score, coalesce(sum(anomaly), 0) AS anomalous
        FROM readings WHERE device = ? AND ts >= ? AND ts < ? GROUP BY minute ORDER BY minute`,
      args: [device, fromTs, toTs],
    },
    {
      sql: "SELECT minute, readings, dropped_above FROM rollup_minutes WHERE device = ? AND minute >= ? AND minute < ?",
      args: [device, first, end],
    },
  ], "read");
  const rollups = new Map(rolled.rows.map((row) => [Number(row.minute), row]));
  const series = new SeriesBuilder(grid);
  const stale: number[] = [];
  let unfolded = false;
  for (const row of totals.rows) {
    const minute = Number(row.minute);
    series.add(Math.floor((minute * ROLLUP_MS - origin) / grid.bucketMs), row);
    if (minute < first || minute >= end) continue;
    const rollup = rollups.get(minute);
    rollups.delete(minute);
    const dropped = rollup?.dropped_above ?? null;
    if (Number(rollup?.readings ?? 0) !== Number(row.folded) || (dropped !== null && Number(dropped) < maxSensors)) {
      stale.push(minute);
      continue;
    }
    if (Number(row.n) > Number(row.folded)) unfolded = true;
    if (dropped !== null) series.series.truncated = true;
  }
  // Rollups of minutes that no longer hold a folded reading (retention cut, not yet rebuilt).
  stale.push(...rollups.keys());
  const ranges: [number, number][] = [];
  const addRange = (from: number, to: number) => {
    if (from >= to) return;
    const last = ranges[ranges.length - 1];
    if (last && last[1] === from) last[1] = to;
    else ranges.push([from, to]);
  };
  addRange(fromTs, Math.min(first * ROLLUP_MS, toTs));
  for (const minute of stale.sort((a, b) => a - b)) addRange(minute * ROLLUP_MS, (minute + 1) * ROLLUP_MS);
  addRange(Math.max(end * ROLLUP_MS, fromTs), toTs);
  return await series.fill(client, {
    device,
    grid,
    ranges,
    tail: unfolded
      ? { afterId: Number(position.rows[0].cursor), fromTs: first * ROLLUP_MS, toTs: end * ROLLUP_MS }
      : null,
    rollups: end > first ? { first, end, stale } : null,
  }, maxSensors);
}

/** Whether `query`'s range holds more than `limit` readings (reading at most limit + 1 index entries). */
async function holdsMoreThan(client: Client, query: SeriesQuery, limit: number): Promise<boolean> {
  const result = await client.execute({
    sql: "SELECT count(*) AS n FROM (SELECT 1 FROM readings WHERE device = ? AND ts >= ? AND ts < ? LIMIT ?)",
    args: [query.device, query.fromTs, query.toTs, limit + 1],
  });
  return Number(result.rows[0].n) > limit;
}

class SeriesBuilder {
  readonly #grid: Grid;
  readonly #index = new Map<number, number>();
  readonly series: ReadingSeries;

  constructor(grid: Grid) {
    this.#grid = grid;
    this.series = {
      bucketMs: grid.bucketMs,
      ts: [],
      readings: [],
      score: [],
      anomalous: [],
      // No prototype: a sensor named "constructor" or "valueOf" is a sensor, not a method.
      sensors: Object.create(null),
      truncated: false,
    };
  }

  /** Adds a row of totals (`n`, `score`, `anomalous`) to `bucket`; buckets come in ascending order. */
  add(bucket: number, row: Record<string, unknown>): void {
    const { series } = this;
    let at = this.#index.get(bucket);
    if (at === undefined) {
      at = series.ts.length;
      this.#index.set(bucket, at);
      series.ts.push(Math.max(this.#grid.origin + bucket * this.#grid.bucketMs, this.#grid.fromTs));
      series.readings.push(0);
      series.score.push(null);
      series.anomalous.push(0);
    }
    series.readings[at] += Number(row.n);
    if (row.score !== null) series.score[at] = Math.max(series.score[at] ?? -Infinity, Number(row.score));
    series.anomalous[at] += Number(row.anomalous);
  }

  /** Fills each sensor's min and max per bucket from `sources`: the first `maxSensors` by name. */
  async fill(client: Client, sources: Sources, maxSensors: number): Promise<ReadingSeries> {
    const { series } = this;
    if (series.ts.length === 0) return series;
    // Raw readings first, folded per bucket (in JavaScript: see rule 4 of reading_rollups.ts),
    // each bucket keeping the first `maxSensors` names: those shown are among them.
    const raw = new Map<number, SensorFolds>();
    const { origin, bucketMs } = sources.grid;
    const visit = (ts: number, values: Record<string, unknown>) => {
      const bucket = Math.floor((ts - origin) / bucketMs);
      let folded = raw.get(bucket);
      if (!folded) raw.set(bucket, folded = new SensorFolds(maxSensors));
      folded.add(values);
    };
    const device = sources.device;
    for (const [from, to] of sources.ranges) {
      await forEachReading(client, {
        where: "device = ? AND ts >= ? AND ts < ?",
        args: [device, from, to],
        order: "ts",
      }, visit);
    }
    if (sources.tail) {
      const { afterId, fromTs, toTs } = sources.tail;
      // `+ts`: walk the (device, id) index from the cursor on, not the whole range by time.
      await forEachReading(client, {
        where: "device = ? AND id > ? AND +ts >= ? AND +ts < ?",
        args: [device, afterId, fromTs, toTs],
        order: "id",
      }, visit);
    }
    const names = new Set<string>();
    for (const folded of raw.values()) {
      for (const sensor of folded.byName.keys()) names.add(sensor);
      if (folded.dropped) series.truncated = true;
    }
    const rollups = sources.rollups ? rollupRows(sources.rollups, device) : null;
    if (rollups) {
      const stored = await client.execute({
        sql: `SELECT DISTINCT sensor ${rollups.sql} ORDER BY sensor LIMIT ?`,
        args: [...rollups.args, maxSensors + 1],
      });
      for (const row of stored.rows) names.add(String(row.sensor));
    }
    const sensors = [...names].sort(compareText);
    if (sensors.length > maxSensors) series.truncated = true;
    const kept = sensors.slice(0, maxSensors);
    if (kept.length === 0) return series;
    for (const sensor of kept) {
      series.sensors[sensor] = { min: series.ts.map(() => null), max: series.ts.map(() => null) };
    }
    const merge = (bucket: number, name: string, low: number, high: number) => {
      const at = this.#index.get(bucket);
      const sensor = series.sensors[name];
      if (at === undefined || !sensor) return;
      if (sensor.min[at] === null || low < sensor.min[at]!) sensor.min[at] = low;
      if (sensor.max[at] === null || high > sensor.max[at]!) sensor.max[at] = high;
    };
    for (const [bucket, folded] of raw) {
      for (const [name, { min, max }] of folded.byName) merge(bucket, name, min, max);
    }
    if (rollups) {
      // A row per sensor with "bucket min max ..." as text: the client's cost is per row (about
      // 5 µs for four columns), more than the query's for a day's 3,840 cells; 17 significant
      // digits give back every double exactly.
      const cells = await client.execute({
        sql: `SELECT sensor,
            group_concat(bucket || ' ' || printf('%!.17g', low) || ' ' || printf('%!.17g', high), ' ') AS cells
          FROM (SELECT CAST((minute * ${ROLLUP_MS} - ?) / ? AS INTEGER) AS bucket, sensor, min(min) AS low,
              max(max) AS high ${rollups.sql} AND sensor <= ? GROUP BY bucket, sensor)
          GROUP BY sensor`,
        args: [origin, bucketMs, ...rollups.args, kept[kept.length - 1]],
      });
      for (const row of cells.rows) {
        const values = String(row.cells).split(" ");
        for (let i = 0; i + 2 < values.length; i += 3) {
          merge(Number(values[i]), String(row.sensor), Number(values[i + 1]), Number(values[i + 2]));
        }
      }
    }
    return series;
  }
}

/** `FROM ... WHERE ...` of the rollup rows of the whole minutes that `rollups` answers for. */
function rollupRows(rollups: NonNullable<Sources["rollups"]>, device: string): { sql: string; args: InValue[] } {
  return {
    sql: `FROM rollup_sensors WHERE device = ? AND minute >= ? AND minute < ?
      AND minute NOT IN (SELECT value FROM json_each(?))`,
    args: [device, rollups.first, rollups.end, JSON.stringify(rollups.stale)],
  };
}

/** Episodes of `device` that overlap [fromTs, toTs), oldest first, at most `limit`. */
export async function eventsOverlapping(
  client: Client,
  query: { device: string; fromTs: number; toTs: number; limit: number },
): Promise<{ id: number; startTs: number; endTs: number | null; peakScore: number; topSensors: string[] }[]> {
  const result = await client.execute({
    sql: `SELECT id, start_ts, end_ts, peak_score, top_sensors FROM events
      WHERE device = ? AND start_ts < ? AND (end_ts IS NULL OR end_ts >= ?) ORDER BY start_ts LIMIT ?`,
    args: [query.device, query.toTs, query.fromTs, query.limit],
  });
  return result.rows.map((row) => ({
    id: Number(row.id),
    startTs: Number(row.start_ts),
    endTs: row.end_ts === null ? null : Number(row.end_ts),
    peakScore: Number(row.peak_score),
    topSensors: JSON.parse(String(row.top_sensors)) as string[],
  }));
}
