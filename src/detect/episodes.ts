import type { InStatement } from "@libsql/client";
import { alertStatement } from "../store/alerts_table.ts";
import { type EventEndReason, eventEndStatement, eventStartStatement } from "../store/events_table.ts";
import type { Outbox, OutboxItem } from "../store/outbox.ts";

export interface OpenEpisode {
  id: number;
  startTs: number;
  peakScore: number;
  topSensors: string[];
  readings: number;
  model: string;
}

export interface AlertMessage {
  id: string;
  kind: "alert";
  state: "start" | "end";
  device: string;
  event: number;
  ts: number;
  score: number;
  model: string;
  sensors: string[];
  /** Why it ended (end alerts only). */
  reason?: EventEndReason;
}

/** The sensors with the largest contributions, largest first (at most three). */
export function topSensors(sensors: readonly string[], contributions: ArrayLike<number> | null): string[] {
  if (!contributions) return [];
  return sensors.map((sensor, i) => ({ sensor, value: contributions[i] }))
    .sort((a, b) => b.value - a.value).slice(0, 3).map((entry) => entry.sensor);
}

/**
 * Statements that record an episode's start or end: the `events` row, an `alerts` row (published
 * to the local broker afterwards), and the outbox items (an alert at start and end; the event
 * when it is complete). An episode never ends before it started: readings can arrive with
 * decreasing timestamps (a device clock stepped back), so the end is at least the start.
 */
export function episodeStatements(
  change: "start" | "end",
  device: string,
  episode: OpenEpisode,
  readingTs: number,
  outbox: Outbox | null,
  reason: EventEndReason = "cleared",
): { statements: InStatement[]; alert: AlertMessage } {
  const ts = change === "end" ? Math.max(readingTs, episode.startTs) : readingTs;
  const alert: AlertMessage = {
    id: `alert/${episode.id}/${change}`,
    kind: "alert",
    state: change,
    device,
    event: episode.id,
    ts,
    score: episode.peakScore,
    model: episode.model,
    sensors: episode.topSensors,
    ...(change === "end" ? { reason } : {}),
  };
  const statements: InStatement[] = [
    change === "start"
      ? eventStartStatement({ ...episode, device })
      : eventEndStatement({ ...episode, endTs: ts, endReason: reason }),
    alertStatement({ eventId: episode.id, device, state: change, ts, body: JSON.stringify(alert) }),
  ];
  if (outbox) {
    const { id: _id, kind: _kind, ...fields } = alert;
    const items: OutboxItem[] = [{ id: alert.id, kind: "alert", fields }];
    if (change === "end") {
      items.push({
        id: `event/${episode.id}`,
        kind: "event",
        fields: {
          device,
          event: episode.id,
          start: episode.startTs,
          end: ts,
          peakScore: episode.peakScore,
          model: episode.model,
          sensors: episode.topSensors,
          readings: episode.readings,
          reason,
        },
      });
    }
    statements.push(...outbox.statements(items));
  }
  return { statements, alert };
}
