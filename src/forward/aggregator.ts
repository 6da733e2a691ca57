import type { Client, InStatement } from "@libsql/client";
import type { ForwardingConfig } from "../config/config.ts";
import type { Logger } from "../observability/log.ts";
import { cursorStatement, readCursor } from "../store/cursors.ts";
import { commitDerived } from "../store/derived_commit.ts";
import { type Outbox, PRIORITY } from "./outbox.ts";

const CURSOR = "aggregate";
/**
 * Small passes that yield in between: a pass blocks the event loop while libSQL runs (about
 * 35 µs a reading), and anomaly flags should not wait behind a long one.
 */
const READINGS_PER_PASS = 1_000;
/** 11 parameters a row: far below SQLite's 32,766. */
const ROWS_PER_UPSERT = 500;

/**
 * Folds committed readings into per-device, per-sensor windows of `aggregateSeconds` by reading
 * time, and moves closed windows into the outbox as `aggregate` items. A window closes once the
 * device has sent a reading past its end plus `graceSeconds` (so replayed history aggregates by
 * its own time), or after `idleCloseSeconds` without a reading. The windows, the outbox items
 * and the cursor over `readings` move in one transaction: a crash repeats nothing and loses nothing.
 */
export class Aggregator {
  readonly #client: Client;
  readonly #config: ForwardingConfig;
  readonly #outbox: Outbox;
  readonly #log: Logger;
  #running: Promise<number> | null = null;
  #again = false;

  constructor(client: Client, config: ForwardingConfig, deps: { outbox: Outbox; log: Logger }) {
    this.#client = client;
    this.#config = config;
    this.#outbox = deps.outbox;
    this.#log = deps.log;
  }

  /** Runs passes until the cursor has caught up; concurrent calls share the work. */
  catchUp(): Promise<number> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      let total = 0;
      try {
        do {
          this.#again = false;
          let folded: number;
          do {
            folded = await this.pass();
            total += folded;
            if (folded === READINGS_PER_PASS) await new Promise((resolve) => setTimeout(resolve, 0));
          } while (folded === READINGS_PER_PASS);
        } while (this.#again);
      } finally {
        this.#running = null;
      }
      return total;
    })();
    return this.#running;
  }

  /** One pass over up to 1,000 new readings; returns how many it folded. */
  async pass(nowMs = Date.now()): Promise<number> {
    const cursor = await readCursor(this.#client, CURSOR);
    const result = await this.#client.execute({
      sql: "SELECT id, device, ts, values_json FROM readings WHERE id > ? ORDER BY id LIMIT ?",
      args: [cursor, READINGS_PER_PASS],
    });
    const windowMs = this.#config.aggregateSeconds * 1000;
    const partials = new Map<string, Partial>();
    const watermarks = new Map<string, number>();
    let lastId = cursor;
    for (const row of result.rows) {
      const id = Number(row.id);
      const device = String(row.device);
      const ts = Number(row.ts);
      const start = Math.floor(ts / windowMs) * windowMs;
      lastId = id;
      watermarks.set(device, Math.max(watermarks.get(device) ?? ts, ts));
      for (const [sensor, value] of Object.entries(JSON.parse(String(row.values_json)) as Record<string, number>)) {
        const key = `${device}\u0000${sensor}\u0000${start}`;
        const partial = partials.get(key);
        if (!partial) {
          partials.set(key, {
            device,
            sensor,
            start,
            firstId: id,
            count: 1,
            min: value,
            max: value,
            sum: value,
            last: value,
            lastTs: ts,
          });
        } else {
          partial.count++;
          partial.min = Math.min(partial.min, value);
          partial.max = Math.max(partial.max, value);
          partial.sum += value;
          if (ts >= partial.lastTs) {
            partial.last = value;
            partial.lastTs = ts;
          }
        }
      }
    }
    const statements: InStatement[] = [];
    const windows = [...partials.values()];
    for (let start = 0; start < windows.length; start += ROWS_PER_UPSERT) {
      statements.push(upsertWindows(windows.slice(start, start + ROWS_PER_UPSERT), nowMs));
    }
    if (watermarks.size > 0) {
      statements.push({
        sql: `INSERT INTO device_watermarks (device, max_ts) VALUES ${"(?, ?),".repeat(watermarks.size).slice(0, -1)}
              ON CONFLICT (device) DO UPDATE SET max_ts = max(max_ts, excluded.max_ts)`,
        args: [...watermarks].flat(),
      });
    }
    statements.push(...this.#closeWindows(nowMs));
    statements.push(cursorStatement(CURSOR, lastId));
    const results = await commitDerived(this.#client, statements);
    const closed = results[results.length - 3].rowsAffected;
    if (closed > 0) {
      this.#log.debug("forward.aggregates_closed", { windows: closed });
      await this.#outbox.enforceBound();
    }
    return result.rows.length;
  }

  /** Moves closed windows into the outbox and deletes them (two statements, same transaction). */
  #closeWindows(nowMs: number): InStatement[] {
    const windowMs = this.#config.aggregateSeconds * 1000;
    const closing = `(w.start_ms + ? + ? <= (SELECT max_ts FROM device_watermarks d WHERE d.device = w.device)
                      OR w.updated_ms <= ?)`;
    const args = [windowMs, this.#config.graceSeconds * 1000, nowMs - this.#config.idleCloseSeconds * 1000];
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
          nowMs,
          nowMs + this.#config.ttlMs.aggregate,
          this.#outbox.pendingMask,
          this.#config.aggregateSeconds,
          ...args,
        ],
      },
      { sql: `DELETE FROM aggregate_windows AS w WHERE ${closing}`, args },
    ];
  }
}

interface Partial {
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

/** One multi-row upsert: the client re-prepares every statement, so fewer and larger is faster. */
function upsertWindows(partials: Partial[], nowMs: number): InStatement {
  const row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?),";
  return {
    sql: `INSERT INTO aggregate_windows
            (device, sensor, start_ms, first_reading_id, count, min, max, sum, last, last_ts, updated_ms)
          VALUES ${row.repeat(partials.length).slice(0, -1)}
          ON CONFLICT (device, sensor, start_ms) DO UPDATE SET
            count = count + excluded.count, min = min(min, excluded.min), max = max(max, excluded.max),
            sum = sum + excluded.sum,
            last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
            last_ts = max(last_ts, excluded.last_ts), updated_ms = excluded.updated_ms`,
    args: partials.flatMap((
      p,
    ) => [p.device, p.sensor, p.start, p.firstId, p.count, p.min, p.max, p.sum, p.last, p.lastTs, nowMs]),
  };
}
