/**
 * Storage of the egress audit log (`egress_audit`, `audit_checkpoints`); the keyed chain itself
 * is src/egress/audit.ts's, its checks src/egress/audit_verify.ts's.
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

/** A checkpoint retention left at a cut: the hash of the last pruned row, signed (null: unkeyed, legacy). */
export interface StoredCheckpoint {
  cutId: number;
  hash: string;
  createdMs: number;
  mac: string | null;
}

/** The newest row, or null when the log is empty. */
export async function lastAuditRow(client: Client): Promise<StoredAuditRow | null> {
  const row = (await client.execute("SELECT * FROM egress_audit ORDER BY id DESC LIMIT 1")).rows[0];
  return row ? toStoredAuditRow(row) : null;
}

/** The lowest id held, or null when the log is empty. */
export async function firstAuditId(client: Client): Promise<number | null> {
  const first = (await client.execute("SELECT min(id) AS id FROM egress_audit")).rows[0];
  return first?.id === null || first?.id === undefined ? null : Number(first.id);
}

/** The id of a row whose `hash` (or `prev_hash`) is this one, if any: where a moved row came from. */
export async function auditIdOfHash(
  client: Client,
  column: "hash" | "prev_hash",
  hash: string,
): Promise<number | null> {
  const row = (await client.execute({ sql: `SELECT id FROM egress_audit WHERE ${column} = ? LIMIT 1`, args: [hash] }))
    .rows[0];
  return row ? Number(row.id) : null;
}

/**
 * Whether the audit table exists, and since when this database has a keyed log (migration 8
 * applied, epoch ms; null when it has not run: a log written only by an older version).
 */
export async function auditSchema(client: Client): Promise<{ table: boolean; keyedSinceMs: number | null }> {
  const tables = await client.execute(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('egress_audit', 'schema_migrations')",
  );
  const names = new Set(tables.rows.map((row) => String(row.name)));
  let keyedSinceMs: number | null = null;
  if (names.has("schema_migrations")) {
    const applied = await client.execute({
      sql: "SELECT applied_ms FROM schema_migrations WHERE version = ?",
      args: [KEYED_AUDIT_MIGRATION],
    });
    if (applied.rows.length > 0) keyedSinceMs = Number(applied.rows[0].applied_ms);
  }
  return { table: names.has("egress_audit"), keyedSinceMs };
}

/** Migration that added `audit_checkpoints.mac`: a database it ran on has a keyed log and a head file. */
export const KEYED_AUDIT_MIGRATION = 8;

export async function auditCheckpoint(client: Client, cutId: number): Promise<StoredCheckpoint | null> {
  const row = (await client.execute({ sql: "SELECT * FROM audit_checkpoints WHERE cut_id = ?", args: [cutId] }))
    .rows[0];
  return row ? toCheckpoint(row) : null;
}

export async function auditCheckpoints(client: Client): Promise<StoredCheckpoint[]> {
  return (await client.execute("SELECT * FROM audit_checkpoints ORDER BY cut_id")).rows.map(toCheckpoint);
}

/** Signs a checkpoint left unkeyed by an older version (once, when the keyed log takes over). */
export async function signAuditCheckpoint(client: Client, cutId: number, mac: string): Promise<void> {
  await client.execute({
    sql: "UPDATE audit_checkpoints SET mac = ? WHERE cut_id = ? AND mac IS NULL",
    args: [mac, cutId],
  });
}

function toCheckpoint(row: Record<string, unknown>): StoredCheckpoint {
  return {
    cutId: Number(row.cut_id),
    hash: String(row.cut_hash),
    createdMs: Number(row.created_ms),
    mac: row.mac === null || row.mac === undefined ? null : String(row.mac),
  };
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

/** Rows with `ts_ms >= sinceMs` and `id < beforeId` (every id when null), newest first. */
export async function auditRowsBefore(
  client: Client,
  sinceMs: number,
  beforeId: number | null,
  limit: number,
): Promise<StoredAuditRow[]> {
  const result = await client.execute({
    sql: "SELECT * FROM egress_audit WHERE ts_ms >= ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
    args: [sinceMs, beforeId, beforeId, limit],
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
