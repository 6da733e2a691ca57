import type { Client } from "@libsql/client";
import { sha256Hex } from "../sha256.ts";
import { auditChainStart, auditRowsFrom, auditRowsSince, insertAuditRow, lastAuditRow } from "../store/audit_table.ts";

export type EgressOutcome =
  | "attempt"
  | "ok"
  | "http_error"
  | "network_error"
  | "refused_by_policy"
  | "refused_by_deno"
  | "circuit_open"
  | "rate_limited"
  | "closed";

export interface AuditEntry {
  destination: string;
  purpose: string;
  bytesOut: number;
  bytesIn: number;
  outcome: EgressOutcome;
  error?: string;
}

export interface AuditRow extends AuditEntry {
  id: number;
  tsMs: number;
  prevHash: string;
  hash: string;
}

export const GENESIS_HASH = "0".repeat(64);

/** SHA-256 over the previous row's hash and this row's content, id and time included. */
export function rowHash(prevHash: string, row: Omit<AuditRow, "hash" | "prevHash">): string {
  const content = JSON.stringify([
    row.id,
    row.tsMs,
    row.destination,
    row.purpose,
    row.bytesOut,
    row.bytesIn,
    row.outcome,
    row.error ?? null,
  ]);
  return sha256Hex(`${prevHash}\n${content}`);
}

/**
 * The egress audit log: every outbound attempt, allowed or refused, as a hash-chained row.
 * Appends are serialised so that each row chains onto the one before it.
 */
export class AuditLog {
  readonly #client: Client;
  #tail: Promise<unknown> = Promise.resolve();
  #last: { id: number; hash: string } | null = null;

  readonly #now: () => number;

  /** `now`: the store's clock, so that retention by age cannot cut recent rows after a clock step. */
  constructor(client: Client, now: () => number = Date.now) {
    this.#client = client;
    this.#now = now;
  }

  append(entry: AuditEntry): Promise<void> {
    const next = this.#tail.then(() => this.#insert(entry));
    this.#tail = next.catch(() => {});
    return next;
  }

  /** Resolves once every append made so far is committed (or failed). */
  async settled(): Promise<void> {
    await this.#tail;
  }

  async #insert(entry: AuditEntry): Promise<void> {
    this.#last ??= await lastAuditRow(this.#client) ?? { id: 0, hash: GENESIS_HASH };
    const row = { ...entry, id: this.#last.id + 1, tsMs: this.#now() };
    const hash = rowHash(this.#last.hash, row);
    await insertAuditRow(this.#client, { ...row, prevHash: this.#last.hash, hash });
    this.#last = { id: row.id, hash };
  }

  /** Rows with `ts_ms >= sinceMs` and `id > afterId`, oldest first. */
  async list(sinceMs: number, limit: number, afterId = 0): Promise<AuditRow[]> {
    return (await auditRowsSince(this.#client, sinceMs, afterId, limit)) as AuditRow[];
  }
}

export type VerifyResult =
  | { ok: true; rows: number; headHash: string }
  | { ok: false; rows: number; firstBadId: number; reason: string };

/**
 * Walks the chain in id order, a page at a time. An edited row fails its own hash; a deleted
 * row leaves a gap in the ids and breaks the next row's prev_hash; a reordered row breaks
 * prev_hash. Where retention pruned the start of the log, the chain starts from the checkpoint
 * it left (`audit_checkpoints`): the hash of the last pruned row. Deleting rows from the end
 * leaves a valid shorter chain: compare `headHash` with one recorded elsewhere.
 */
export async function verifyAudit(client: Client): Promise<VerifyResult> {
  const { checkpoint } = await auditChainStart(client);
  let expectedId = checkpoint ? checkpoint.cutId + 1 : 1;
  let prevHash = checkpoint ? checkpoint.hash : GENESIS_HASH;
  let rows = 0;
  while (true) {
    const page = await auditRowsFrom(client, rows === 0 ? 0 : expectedId, VERIFY_PAGE_ROWS);
    for (const stored of page) {
      const row = stored as AuditRow;
      rows++;
      const bad = (reason: string): VerifyResult => ({ ok: false, rows, firstBadId: row.id, reason });
      if (row.id !== expectedId) return bad(`expected row ${expectedId} next, found ${row.id}: rows missing`);
      if (row.prevHash !== prevHash) return bad("prev_hash does not match the previous row: rows deleted or reordered");
      if (rowHash(prevHash, row) !== row.hash) return bad("content does not match its hash: row edited");
      prevHash = row.hash;
      expectedId++;
    }
    if (page.length < VERIFY_PAGE_ROWS) return { ok: true, rows, headHash: prevHash };
  }
}

const VERIFY_PAGE_ROWS = 1_000;
