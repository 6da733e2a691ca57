/**
 * The scorer's columns of `readings` (`score`, `anomaly`, `flags`): written by statements that
 * commit with the scoring pass and its cursor, read back to rebuild a device's window and for
 * `GET /v1/readings`.
 */
import type { Client, InStatement } from "@libsql/client";

/** What scoring left on a reading: a score, or null with `flags` saying why not. */
export interface ReadingScore {
  score: number | null;
  anomaly: boolean | null;
  flags: string | null;
}

/** A reading with its score, as `GET /v1/readings` serves it. */
export interface ScoredReading extends ReadingScore {
  ts: number;
  valuesJson: string;
}

/** 4 parameters a row: far below SQLite's 32,766. */
const ROWS_PER_UPDATE = 300;

/** Statements that store the scores by reading id: one `UPDATE ... FROM (VALUES ...)` per 300 readings. */
export function scoreStatements(scores: Iterable<[number, ReadingScore]>): InStatement[] {
  const entries = [...scores];
  const statements: InStatement[] = [];
  for (let start = 0; start < entries.length; start += ROWS_PER_UPDATE) {
    const chunk = entries.slice(start, start + ROWS_PER_UPDATE);
    const args: (number | string | null)[] = [];
    for (const [id, result] of chunk) {
      args.push(id, result.score, result.anomaly === null ? null : result.anomaly ? 1 : 0, result.flags);
    }
    statements.push({
      sql: `UPDATE readings SET score = v.column2, anomaly = v.column3, flags = v.column4
            FROM (VALUES ${"(?,?,?,?),".repeat(chunk.length).slice(0, -1)}) AS v WHERE readings.id = v.column1`,
      args,
    });
  }
  return statements;
}

/**
 * Statement that flags the readings with ids in (`afterId`, `toId`] that have neither a score nor
 * flags yet (readings the scorer skips); its `rowsAffected` counts them.
 */
export function flagUnscoredStatement(flags: string, afterId: number, toId: number): InStatement {
  return {
    sql: "UPDATE readings SET flags = ? WHERE id > ? AND id <= ? AND score IS NULL AND flags IS NULL",
    args: [flags, afterId, toId],
  };
}

/** The last `limit` readings of `device` before id `beforeId`, oldest first, with their scores. */
export async function scoresBefore(
  client: Client,
  device: string,
  beforeId: number,
  limit: number,
): Promise<{ id: number; valuesJson: string; score: number | null }[]> {
  const result = await client.execute({
    sql: "SELECT id, values_json, score FROM readings WHERE device = ? AND id < ? ORDER BY id DESC LIMIT ?",
    args: [device, beforeId, limit],
  });
  return result.rows.map((row) => ({
    id: Number(row.id),
    valuesJson: String(row.values_json),
    score: row.score === null ? null : Number(row.score),
  })).reverse();
}

/** Up to `limit` readings of `device` with `fromTs <= ts < toTs` and `ts > afterTs`, in time order. */
export async function scoredReadings(
  client: Client,
  query: { device: string; fromTs: number; toTs: number; afterTs: number; limit: number; maxBytes: number },
): Promise<{ readings: ScoredReading[]; cut: boolean }> {
  // Up to `limit` readings, but no more of their values than `maxBytes` (at least one reading):
  // SQLite measures them, so readings that do not fit never reach JavaScript.
  const result = await client.execute({
    sql: `WITH page AS (
            SELECT id, ts, length(values_json) AS bytes FROM readings
            WHERE device = ?1 AND ts >= ?2 AND ts < ?3 AND ts > ?4 ORDER BY ts LIMIT ?5),
          kept AS (
            SELECT id FROM (SELECT id, sum(bytes) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) - bytes AS before FROM page)
            WHERE before < ?6)
          SELECT r.ts, r.values_json, r.score, r.anomaly, r.flags, (SELECT count(*) FROM page) AS paged
          FROM readings r JOIN kept USING (id) ORDER BY r.ts`,
    args: [query.device, query.fromTs, query.toTs, query.afterTs, query.limit, query.maxBytes],
  });
  const readings = result.rows.map((row) => ({
    ts: Number(row.ts),
    valuesJson: String(row.values_json),
    score: row.score === null ? null : Number(row.score),
    anomaly: row.anomaly === null ? null : Number(row.anomaly) === 1,
    flags: row.flags === null ? null : String(row.flags),
  }));
  return { readings, cut: readings.length > 0 && readings.length < Number(result.rows[0].paged) };
}
