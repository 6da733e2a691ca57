/**
 * The aggregation windows' storage: statements the aggregator commits with its cursor (the
 * outbox's statements-returning style), so windows, outbox items and the cursor move together.
 */
import type { InStatement } from "@libsql/client";
import { PRIORITY } from "./outbox.ts";

/** A window's fold of one pass, merged into the stored window by `upsertWindows`. */
export interface WindowPartial {
  device: string;
  sensor: string;
  start: number;
  firstId: number;
  count: number;
  min: number;
  max: number;
  sum: number;
  last: number;
  lastTs: number;
}

/** 11 parameters a row: far below SQLite's 32,766. */
const ROWS_PER_UPSERT = 500;

/** Multi-row upserts (the client re-prepares every statement, so fewer and larger is faster). */
export function upsertWindowsStatements(partials: readonly WindowPartial[], nowMs: number): InStatement[] {
  const statements: InStatement[] = [];
  for (let start = 0; start < partials.length; start += ROWS_PER_UPSERT) {
    const chunk = partials.slice(start, start + ROWS_PER_UPSERT);
    statements.push({
      sql: `INSERT INTO aggregate_windows
              (device, sensor, start_ms, first_reading_id, count, min, max, sum, last, last_ts, updated_ms)
            VALUES ${"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?),".repeat(chunk.length).slice(0, -1)}
            ON CONFLICT (device, sensor, start_ms) DO UPDATE SET
              count = count + excluded.count, min = min(min, excluded.min), max = max(max, excluded.max),
              sum = sum + excluded.sum,
              last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
              last_ts = max(last_ts, excluded.last_ts), updated_ms = excluded.updated_ms`,
      args: chunk.flatMap((p) => [
        p.device,
        p.sensor,
        p.start,
        p.firstId,
        p.count,
        p.min,
        p.max,
        p.sum,
        p.last,
        p.lastTs,
        nowMs,
      ]),
    });
  }
  return statements;
}

/** Raises each device's watermark (its latest reading time) to at least the given one. */
export function watermarkStatement(watermarks: ReadonlyMap<string, number>): InStatement | null {
  if (watermarks.size === 0) return null;
  return {
    sql: `INSERT INTO device_watermarks (device, max_ts) VALUES ${"(?, ?),".repeat(watermarks.size).slice(0, -1)}
          ON CONFLICT (device) DO UPDATE SET max_ts = max(max_ts, excluded.max_ts)`,
    args: [...watermarks].flat(),
  };
}

export interface CloseRule {
  windowMs: number;
  graceMs: number;
  /** Windows not updated since this time (store clock) close as idle. */
  idleBeforeMs: number;
  nowMs: number;
  ttlMs: number;
  pendingMask: number;
}

/**
 * Moves closed windows into the outbox as `aggregate` items and deletes them: two statements for
 * one transaction; the first one's `rowsAffected` counts the windows closed.
 */
export function closeWindowsStatements(rule: CloseRule): [InStatement, InStatement] {
  const closing = `(w.start_ms + ? + ? <= (SELECT max_ts FROM device_watermarks d WHERE d.device = w.device)
                    OR w.updated_ms <= ?)`;
  const args = [rule.windowMs, rule.graceMs, rule.idleBeforeMs];
  const body =
    `json_object('id', 'agg/' || w.device || '/' || w.sensor || '/' || w.start_ms || '/' || w.first_reading_id,
                  'kind', 'aggregate', 'device', w.device, 'sensor', w.sensor, 'start', w.start_ms,
                  'seconds', ?, 'count', w.count, 'min', w.min, 'max', w.max, 'mean', w.sum / w.count, 'last', w.last)`;
  return [
    {
      sql: `INSERT OR IGNORE INTO outbox (priority, kind, item_id, created_ms, expires_ms, pending_sinks, bytes, body)
            SELECT ?, 'aggregate', json_extract(b.body, '$.id'), ?, ?, ?, length(b.body), b.body
            FROM (SELECT ${body} AS body FROM aggregate_windows w WHERE ${closing} ORDER BY w.start_ms) b`,
      args: [
        PRIORITY.aggregate,
        rule.nowMs,
        rule.nowMs + rule.ttlMs,
        rule.pendingMask,
        rule.windowMs / 1000,
        ...args,
      ],
    },
    { sql: `DELETE FROM aggregate_windows AS w WHERE ${closing}`, args },
  ];
}
