import type { Client } from "@libsql/client";
import { pruneHistory } from "./assignment_history.ts";

const ROWS_PER_DELETE = 5_000;

/**
 * Deletes readings that arrived (by the store's clock, see store_clock.ts) before `cutoffMs`, a
 * few thousand rows per commit so that ingest never waits long behind it. The index on
 * `received_ms` finds them wherever they are, so rows stored out of order do not stop the scan.
 * The newest row is never deleted: `readings.id` is not AUTOINCREMENT, and keeping it keeps
 * every new id above every cursor (scorer, aggregator, raw forwarding) even after a quiet period
 * longer than the retention. Returns the rows deleted.
 */
export function deleteExpiredReadings(client: Client, cutoffMs: number): Promise<number> {
  return deleteInChunks(
    client,
    `DELETE FROM readings WHERE id IN (
       SELECT id FROM readings WHERE received_ms < ? AND id < (SELECT max(id) FROM readings) LIMIT ?)`,
    cutoffMs,
  );
}

/** Runs `sql` (a DELETE taking the cutoff and a row limit) until a run deletes less than a chunk. */
async function deleteInChunks(client: Client, sql: string, cutoff: number): Promise<number> {
  let total = 0;
  while (true) {
    const result = await client.execute({ sql, args: [cutoff, ROWS_PER_DELETE] });
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

/**
 * Deletes the aggregation watermarks of devices the store no longer knows and has no open window
 * of (a window still open closes by its idle rule first); returns how many.
 */
export async function deleteForgottenWatermarks(client: Client): Promise<number> {
  const result = await client.execute(
    `DELETE FROM device_watermarks
     WHERE NOT EXISTS (SELECT 1 FROM known_devices k WHERE k.device = device_watermarks.device)
       AND NOT EXISTS (SELECT 1 FROM aggregate_windows w WHERE w.device = device_watermarks.device)`,
  );
  return result.rowsAffected;
}

/** Cutoffs (epoch ms) for the tables besides readings; rows older are deleted. */
export interface TableCutoffs {
  /** By arrival on the store clock. */
  deadLetters: number;
  /** By the reading time an event ended (open events are kept). */
  events: number;
  /** By the reading time of the alert. */
  alerts: number;
  /** By the time the audit row was written. */
  audit: number;
  /** By the time the model history row was written (each scope's newest row is kept). */
  modelHistory: number;
}

export type PrunedCounts = Record<keyof TableCutoffs, number>;

/** Signs the checkpoint retention leaves at an audit cut (the egress module's audit key; never stored). */
export type CheckpointSigner = (checkpoint: { cutId: number; hash: string; createdMs: number }) => Promise<string>;

/**
 * Deletes old rows of the tables besides readings, a few thousand per commit (the audit log's
 * cut is one commit, so that the checkpoint and the deletion cannot part). The audit log is
 * cut at the last expired row (never its newest row): the hash of that row is kept in
 * `audit_checkpoints` with the cut, signed with `signCheckpoint` when given, in the same
 * commit, so `audit verify` still checks what remains from the cut on, and a cut made by
 * anyone without the key is reported as deleted rows.
 */
export async function pruneTables(
  client: Client,
  cutoffs: TableCutoffs,
  nowMs: number,
  options: { signCheckpoint?: CheckpointSigner } = {},
): Promise<PrunedCounts> {
  const chunked = (sql: string, cutoff: number) => deleteInChunks(client, sql, cutoff);
  return {
    deadLetters: await chunked(
      "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE received_ms < ? LIMIT ?)",
      cutoffs.deadLetters,
    ),
    events: await chunked(
      "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE end_ts IS NOT NULL AND end_ts < ? LIMIT ?)",
      cutoffs.events,
    ),
    alerts: await chunked(
      "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE ts < ? LIMIT ?)",
      cutoffs.alerts,
    ),
    audit: await pruneAudit(client, cutoffs.audit, nowMs, options.signCheckpoint),
    modelHistory: await pruneHistory(client, cutoffs.modelHistory, ROWS_PER_DELETE),
  };
}

async function pruneAudit(client: Client, cutoff: number, nowMs: number, sign?: CheckpointSigner): Promise<number> {
  const cut = (await client.execute({
    sql: `SELECT id, hash FROM egress_audit WHERE id = (
            SELECT max(id) FROM egress_audit WHERE ts_ms < ? AND id < (SELECT max(id) FROM egress_audit))`,
    args: [cutoff],
  })).rows[0];
  if (!cut) return 0;
  const checkpoint = { cutId: Number(cut.id), hash: String(cut.hash), createdMs: nowMs };
  const mac = sign ? await sign(checkpoint) : null;
  const [, deleted] = await client.batch([
    {
      sql: "INSERT OR REPLACE INTO audit_checkpoints (cut_id, cut_hash, created_ms, mac) VALUES (?, ?, ?, ?)",
      args: [checkpoint.cutId, checkpoint.hash, checkpoint.createdMs, mac],
    },
    { sql: "DELETE FROM egress_audit WHERE id <= ?", args: [checkpoint.cutId] },
    // Verification starts from the newest cut; older checkpoints (one a minute under steady
    // egress) would otherwise pile up for ever.
    { sql: "DELETE FROM audit_checkpoints WHERE cut_id < ?", args: [checkpoint.cutId] },
  ], "write");
  return deleted.rowsAffected;
}
