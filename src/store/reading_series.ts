/**
 * A device's readings over a time range, downsampled in the store: per bucket of equal length,
 * each sensor's minimum and maximum, the highest score and the anomalous readings. Two grouped
 * queries over the (device, ts) index, so a day of 1 Hz data leaves the store as at most
 * `buckets` rows per sensor, whatever the number of readings.
 */
import type { Client } from "@libsql/client";

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
  /** Start of each bucket that holds readings, ms since the epoch. */
  ts: number[];
  readings: number[];
  /** Highest score in the bucket (null while unscored) and the count of anomalous readings. */
  score: (number | null)[];
  anomalous: number[];
  sensors: Record<string, { min: (number | null)[]; max: (number | null)[] }>;
  truncated: boolean;
}

export async function readingSeries(client: Client, query: SeriesQuery): Promise<ReadingSeries> {
  const bucketMs = Math.max(1, Math.ceil((query.toTs - query.fromTs) / query.buckets));
  const range = [query.device, query.fromTs, query.toTs, bucketMs];
  const totals = await client.execute({
    sql: `SELECT CAST((ts - ?2) / ?4 AS INTEGER) AS bucket, count(*) AS n, max(score) AS score,
        coalesce(sum(anomaly), 0) AS anomalous
      FROM readings WHERE device = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY bucket ORDER BY bucket`,
    args: range,
  });
  const index = new Map<number, number>();
  const series: ReadingSeries = {
    bucketMs,
    ts: [],
    readings: [],
    score: [],
    anomalous: [],
    sensors: {},
    truncated: false,
  };
  for (const row of totals.rows) {
    index.set(Number(row.bucket), series.ts.length);
    series.ts.push(query.fromTs + Number(row.bucket) * bucketMs);
    series.readings.push(Number(row.n));
    series.score.push(row.score === null ? null : Number(row.score));
    series.anomalous.push(Number(row.anomalous));
  }
  if (series.ts.length === 0) return series;
  const names = await client.execute({
    sql: `SELECT DISTINCT j.key AS sensor FROM readings r, json_each(r.values_json) j
      WHERE r.device = ?1 AND r.ts >= ?2 AND r.ts < ?3 ORDER BY sensor LIMIT ?4`,
    args: [query.device, query.fromTs, query.toTs, query.maxSensors + 1],
  });
  const sensors = names.rows.map((row) => String(row.sensor));
  series.truncated = sensors.length > query.maxSensors;
  const kept = sensors.slice(0, query.maxSensors);
  for (const sensor of kept) {
    series.sensors[sensor] = { min: series.ts.map(() => null), max: series.ts.map(() => null) };
  }
  const values = await client.execute({
    sql: `SELECT CAST((r.ts - ?2) / ?4 AS INTEGER) AS bucket, j.key AS sensor,
        min(j.value) AS low, max(j.value) AS high
      FROM readings r, json_each(r.values_json) j
      WHERE r.device = ?1 AND r.ts >= ?2 AND r.ts < ?3 AND j.type IN ('integer', 'real') AND j.key <= ?5
      GROUP BY bucket, sensor`,
    args: [...range, kept[kept.length - 1]],
  });
  for (const row of values.rows) {
    const at = index.get(Number(row.bucket));
    const sensor = series.sensors[String(row.sensor)];
    if (at === undefined || !sensor) continue;
    sensor.min[at] = Number(row.low);
    sensor.max[at] = Number(row.high);
  }
  return series;
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
