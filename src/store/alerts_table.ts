/**
 * Storage of alerts for the local broker (`alerts`): recorded with the scoring pass that started
 * or ended their episode, marked published after the broker's PUBACK (src/detect/alert_publisher.ts).
 */
import type { Client, InStatement } from "@libsql/client";

/** Records an alert (unpublished) with `body` as it will be published. */
export function alertStatement(
  alert: { eventId: number; device: string; state: "start" | "end"; ts: number; body: string },
): InStatement {
  return {
    sql: "INSERT INTO alerts (event_id, device, state, ts, body) VALUES (?, ?, ?, ?, ?)",
    args: [alert.eventId, alert.device, alert.state, alert.ts, alert.body],
  };
}

/** Up to `limit` alerts not yet published, oldest first. */
export async function unpublishedAlerts(client: Client, limit: number): Promise<{ id: number; body: string }[]> {
  const result = await client.execute({
    sql: "SELECT id, body FROM alerts WHERE published_ms IS NULL ORDER BY id LIMIT ?",
    args: [limit],
  });
  return result.rows.map((row) => ({ id: Number(row.id), body: String(row.body) }));
}

export async function markAlertPublished(client: Client, id: number, nowMs: number): Promise<void> {
  await client.execute({ sql: "UPDATE alerts SET published_ms = ? WHERE id = ?", args: [nowMs, id] });
}
