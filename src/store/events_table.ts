/**
 * Storage of anomaly episodes (`events`). Starting, updating and ending one are statements,
 * committed with the scoring pass that saw it (src/detect/episodes.ts); the scorer numbers new
 * events itself, after `maxEventId`, so ids increase with their start. `GET /v1/events` reads
 * pages of them newest first (`eventsPage`).
 */
import type { Client, InStatement } from "@libsql/client";

/** Why an episode ended: it cleared, or the baseline or model moved under it. */
export type EventEndReason = "cleared" | "rebaselined" | "false_alarm" | "accepted" | "recalibrated" | "forgotten";

/** An operator's verdict on an event, and when it was given (epoch ms). */
export interface EventVerdict {
  kind: "false_alarm";
  ts: number;
}

/** An `events` row; `endTs` and `endReason` are null while the episode is open. */
export interface StoredEvent {
  id: number;
  device: string;
  startTs: number;
  endTs: number | null;
  peakScore: number;
  /** `name@version` of the model that scored it. */
  model: string;
  topSensors: string[];
  /** Anomalous readings in the episode. */
  readings: number;
  endReason: EventEndReason | null;
  verdict: EventVerdict | null;
}

/** Records an episode's start (an open event). */
export function eventStartStatement(event: Omit<StoredEvent, "endTs" | "endReason" | "verdict">): InStatement {
  return {
    sql: `INSERT INTO events (id, device, start_ts, end_ts, peak_score, model, top_sensors, readings)
          VALUES (?, ?, ?, NULL, ?, ?, ?, ?)`,
    args: [
      event.id,
      event.device,
      event.startTs,
      event.peakScore,
      event.model,
      JSON.stringify(event.topSensors),
      event.readings,
    ],
  };
}

/** Updates an open episode's live figures (an ended one keeps its final figures). */
export function eventProgressStatement(
  event: Pick<StoredEvent, "id" | "peakScore" | "topSensors" | "readings">,
): InStatement {
  return {
    sql: "UPDATE events SET peak_score = ?, top_sensors = ?, readings = ? WHERE id = ? AND end_ts IS NULL",
    args: [event.peakScore, JSON.stringify(event.topSensors), event.readings, event.id],
  };
}

/** Records an episode's end and why, with its final peak, sensors and reading count. */
export function eventEndStatement(
  event: Pick<StoredEvent, "id" | "peakScore" | "topSensors" | "readings"> & {
    endTs: number;
    endReason: EventEndReason;
  },
): InStatement {
  return {
    sql: "UPDATE events SET end_ts = ?, end_reason = ?, peak_score = ?, top_sensors = ?, readings = ? WHERE id = ?",
    args: [
      event.endTs,
      event.endReason,
      event.peakScore,
      JSON.stringify(event.topSensors),
      event.readings,
      event.id,
    ],
  };
}

/** Records an operator's verdict on an event at `ts` (epoch ms); a later verdict replaces it. */
export function eventVerdictStatement(id: number, verdict: EventVerdict["kind"], ts: number): InStatement {
  return { sql: "UPDATE events SET verdict = ?, verdict_ts = ? WHERE id = ?", args: [verdict, ts, id] };
}

/** The highest event id committed so far (0 when there is none). */
export async function maxEventId(client: Client): Promise<number> {
  const result = await client.execute("SELECT coalesce(max(id), 0) AS id FROM events");
  return Number(result.rows[0].id);
}

export async function readEvent(client: Client, id: number): Promise<StoredEvent | null> {
  const row = (await client.execute({ sql: `SELECT ${COLUMNS} FROM events WHERE id = ?`, args: [id] })).rows[0];
  return row ? toStoredEvent(row) : null;
}

export interface EventsQuery {
  device: string | null;
  /** Open events only, closed ones only, or both (null). */
  state: "open" | "closed" | null;
  /** Events that started in [fromTs, toTs). */
  fromTs: number;
  toTs: number;
  /** Events with lower ids only (the previous page's last id), or from the newest (null). */
  beforeId: number | null;
  limit: number;
}

/**
 * Up to `limit` events, newest (highest id) first, and whether there are more.
 */
export async function eventsPage(
  client: Client,
  query: EventsQuery,
): Promise<{ events: StoredEvent[]; more: boolean }> {
  const result = await client.execute(eventsPageStatement(query));
  const events = result.rows.slice(0, query.limit).map(toStoredEvent);
  return { events, more: result.rows.length > query.limit };
}

/**
 * The query of `eventsPage`. Each variant walks one index backwards from `beforeId` and stops
 * after `limit + 1` matches: the open events (`events_end`, whose NULLs come first and in id
 * order; at most one open event a device), one device's events (`events_device_id`) or the whole
 * table (rowid). The closed filter skips only open events. `fromTs` and `toTs` filter that walk:
 * free when they keep every event, otherwise the walk also reads the events they leave out
 * (ids increase with start, so a `toTs` skips the newer events first). Unary `+` keeps SQLite
 * from sorting a range of `events_device_start` or `events_end` instead.
 */
export function eventsPageStatement(query: EventsQuery): InStatement {
  const where = ["id < ?", "+start_ts >= ?", "+start_ts < ?"];
  const args: (string | number)[] = [query.beforeId ?? Number.MAX_SAFE_INTEGER, query.fromTs, query.toTs];
  let index: string;
  if (query.state === "open") {
    index = "INDEXED BY events_end";
    where.push("end_ts IS NULL");
    if (query.device !== null) where.push("+device = ?"), args.push(query.device);
  } else {
    if (query.state === "closed") where.push("+end_ts IS NOT NULL");
    if (query.device === null) index = "NOT INDEXED";
    else {
      index = "INDEXED BY events_device_id";
      where.push("device = ?");
      args.push(query.device);
    }
  }
  return {
    sql: `SELECT ${COLUMNS} FROM events ${index} WHERE ${where.join(" AND ")} ORDER BY id DESC LIMIT ?`,
    args: [...args, query.limit + 1],
  };
}

const COLUMNS =
  "id, device, start_ts, end_ts, peak_score, model, top_sensors, readings, end_reason, verdict, verdict_ts";

function toStoredEvent(row: Record<string, unknown>): StoredEvent {
  return {
    id: Number(row.id),
    device: String(row.device),
    startTs: Number(row.start_ts),
    endTs: row.end_ts === null ? null : Number(row.end_ts),
    peakScore: Number(row.peak_score),
    model: String(row.model),
    topSensors: JSON.parse(String(row.top_sensors)),
    readings: Number(row.readings),
    // Events that ended before end reasons were recorded (schema 7) could only have cleared.
    endReason: row.end_ts === null
      ? null
      : row.end_reason === null
      ? "cleared"
      : String(row.end_reason) as EventEndReason,
    verdict: row.verdict === null ? null : { kind: String(row.verdict) as "false_alarm", ts: Number(row.verdict_ts) },
  };
}
