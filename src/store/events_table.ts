/**
 * Storage of anomaly episodes (`events`). Starting and ending one are statements, committed with
 * the scoring pass that saw it (src/detect/episodes.ts); the scorer numbers new events itself,
 * after `maxEventId`.
 */
import type { Client, InStatement } from "@libsql/client";

/** An `events` row; `endTs` is null while the episode is open. */
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
}

/** Records an episode's start (an open event). */
export function eventStartStatement(event: Omit<StoredEvent, "endTs">): InStatement {
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

/** Records an episode's end, with its final peak, sensors and reading count. */
export function eventEndStatement(
  event: Pick<StoredEvent, "id" | "peakScore" | "topSensors" | "readings"> & { endTs: number },
): InStatement {
  return {
    sql: "UPDATE events SET end_ts = ?, peak_score = ?, top_sensors = ?, readings = ? WHERE id = ?",
    args: [event.endTs, event.peakScore, JSON.stringify(event.topSensors), event.readings, event.id],
  };
}

/** The highest event id committed so far (0 when there is none). */
export async function maxEventId(client: Client): Promise<number> {
  const result = await client.execute("SELECT coalesce(max(id), 0) AS id FROM events");
  return Number(result.rows[0].id);
}

export async function readEvent(client: Client, id: number): Promise<StoredEvent | null> {
  const row = (await client.execute({ sql: "SELECT * FROM events WHERE id = ?", args: [id] })).rows[0];
  return row ? toStoredEvent(row) : null;
}

/** Up to `limit` events that started at or after `fromTs`, of one device or of all, by start time. */
export async function eventsFrom(
  client: Client,
  query: { device: string | null; fromTs: number; limit: number },
): Promise<StoredEvent[]> {
  const result = await client.execute({
    sql: `SELECT * FROM events WHERE (? IS NULL OR device = ?) AND start_ts >= ? ORDER BY start_ts, id LIMIT ?`,
    args: [query.device, query.device, query.fromTs, query.limit],
  });
  return result.rows.map(toStoredEvent);
}

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
  };
}
