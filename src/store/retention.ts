import type { Client } from "@libsql/client";

const ROWS_PER_DELETE = 5_000;

/**
 * Deletes readings received before `cutoffMs`, a few thousand rows per commit so that ingest
 * never waits long behind it. Row ids grow with commit time, so the oldest rows come first and
 * the scan stops at the first chunk that is not wholly expired. Returns the rows deleted.
 */
export async function deleteExpiredReadings(client: Client, cutoffMs: number): Promise<number> {
  let total = 0;
  while (true) {
    const result = await client.execute({
      sql: `DELETE FROM readings
            WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?) AND received_ms < ?`,
      args: [ROWS_PER_DELETE, cutoffMs],
    });
    total += result.rowsAffected;
    if (result.rowsAffected < ROWS_PER_DELETE) return total;
  }
}
