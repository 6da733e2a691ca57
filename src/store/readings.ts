import type { Client } from "@libsql/client";

/** A stored reading as the components behind the writer read it; `valuesJson` as stored. */
export interface StoredReading {
  id: number;
  device: string;
  ts: number;
  valuesJson: string;
  /** Arrival on the store's clock. */
  receivedMs: number;
}

/** Up to `limit` readings with ids above `afterId`, in id (commit) order. */
export async function readingsAfter(client: Client, afterId: number, limit: number): Promise<StoredReading[]> {
  const result = await client.execute({
    sql: "SELECT id, device, ts, values_json, received_ms FROM readings WHERE id > ? ORDER BY id LIMIT ?",
    args: [afterId, limit],
  });
  return result.rows.map((row) => ({
    id: Number(row.id),
    device: String(row.device),
    ts: Number(row.ts),
    valuesJson: String(row.values_json),
    receivedMs: Number(row.received_ms),
  }));
}
