import type { Client } from "@libsql/client";

const ROWS_PER_DELETE = 5_000;

/**
 * Deletes readings that arrived (by the store's clock, see store_clock.ts) before `cutoffMs`, a
 * few thousand rows per commit so that ingest never waits long behind it. The index on
 * `received_ms` finds them wherever they are, so rows stored out of order do not stop the scan.
 * The newest row is never deleted: `readings.id` is not AUTOINCREMENT, and keeping it keeps
 * every new id above every cursor (scorer, aggregator, raw forwarding) even after a quiet period
 * longer than the retention. Returns the rows deleted.
 */
export async function deleteExpiredReadings(client: Client, cutoffMs: number): Promise<number> {
  let total = 0;
  while (true) {
    const result = await client.execute({
      sql: `DELETE FROM readings WHERE id IN (
              SELECT id FROM readings WHERE received_ms < ? AND id < (SELECT max(id) FROM readings) LIMIT ?)`,
      args: [cutoffMs, ROWS_PER_DELETE],
    });
    total += result.rowsAffected;
    if (result.rowsAffected < ROWS_PER_DELETE) return total;
  }
}

/** Forgets devices that no longer have a reading in the store; returns them. */
export async function deleteDevicesWithoutReadings(client: Client): Promise<string[]> {
  const result = await client.execute(
    `DELETE FROM known_devices WHERE NOT EXISTS (SELECT 1 FROM readings WHERE readings.device = known_devices.device)
     RETURNING device`,
  );
  return result.rows.map((row) => String(row.device));
}
