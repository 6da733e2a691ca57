/**
 * Storage of the egress audit log (`egress_audit`, `audit_checkpoints`); the hash chain itself is
 * src/egress/audit.ts's.
 */
import type { Client } from "@libsql/client";

/** A row as stored. */
export interface StoredAuditRow {
  id: number;
  tsMs: number;
  destination: string;
  purpose: string;
  bytesOut: number;
  bytesIn: number;
  outcome: string;
  error?: string;
  prevHash: string;
  hash: string;
}

/** The newest row's id and hash, or null when the log is empty. */
export async function lastAuditRow(client: Client): Promise<{ id: number; hash: string } | null> {
  const row = (await client.execute("SELECT id, hash FROM egress_audit ORDER BY id DESC LIMIT 1")).rows[0];
  return row ? { id: Number(row.id), hash: String(row.hash) } : null;
}

export async function insertAuditRow(client: Client, row: StoredAuditRow): Promise<void> {
  await client.execute({
    sql:
      `INSERT INTO egress_audit (id, ts_ms, destination, purpose, bytes_out, bytes_in, outcome, error, prev_hash, hash)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    args: [
      row.id,
      row.tsMs,
      row.destination,
      row.purpose,
      row.bytesOut,
      row.bytesIn,
      row.outcome,
      row.error ?? null,
      row.prevHash,
      row.hash,
    ],
  });
}

/** Rows with `ts_ms >= sinceMs` and `id > afterId`, oldest first. */
export async function auditRowsSince(
  client: Client,
  sinceMs: number,
  afterId: number,
  limit: number,
): Promise<StoredAuditRow[]> {
  const result = await client.execute({
    sql: "SELECT * FROM egress_audit WHERE ts_ms >= ? AND id > ? ORDER BY id LIMIT ?",
    args: [sinceMs, afterId, limit],
  });
  return result.rows.map(toStoredAuditRow);
}

/** Rows with `id >= fromId`, oldest first. */
export async function auditRowsFrom(client: Client, fromId: number, limit: number): Promise<StoredAuditRow[]> {
  const result = await client.execute({
    sql: "SELECT * FROM egress_audit WHERE id >= ? ORDER BY id LIMIT ?",
    args: [fromId, limit],
  });
  return result.rows.map(toStoredAuditRow);
}

/**
 * Where the chain starts: the lowest id held, and the checkpoint retention left just before it
 * (the hash of the last pruned row), if any.
 */
export async function auditChainStart(
  client: Client,
): Promise<{ firstId: number | null; checkpoint: { cutId: number; hash: string } | null }> {
  const first = (await client.execute("SELECT min(id) AS id FROM egress_audit")).rows[0];
  const firstId = first?.id === null || first?.id === undefined ? null : Number(first.id);
  if (firstId === null || firstId <= 1) return { firstId, checkpoint: null };
  const row = (await client.execute({
    sql: "SELECT cut_id, cut_hash FROM audit_checkpoints WHERE cut_id = ?",
    args: [firstId - 1],
  })).rows[0];
  return { firstId, checkpoint: row ? { cutId: Number(row.cut_id), hash: String(row.cut_hash) } : null };
}

function toStoredAuditRow(row: Record<string, unknown>): StoredAuditRow {
  return {
    id: Number(row.id),
    tsMs: Number(row.ts_ms),
    destination: String(row.destination),
    purpose: String(row.purpose),
    bytesOut: Number(row.bytes_out),
    bytesIn: Number(row.bytes_in),
    outcome: String(row.outcome),
    error: row.error === null || row.error === undefined ? undefined : String(row.error),
    prevHash: String(row.prev_hash),
    hash: String(row.hash),
  };
}
