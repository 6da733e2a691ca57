import type { Client } from "@libsql/client";
import { sha256Hex } from "../sha256.ts";
import {
  auditCheckpoint,
  auditRowsBefore,
  auditRowsSince,
  auditSchema,
  firstAuditId,
  insertAuditRow,
  lastAuditRow,
  signAuditCheckpoint,
  type StoredAuditRow,
} from "../store/audit_table.ts";
import type { AuditKey } from "./audit_key.ts";
import { type AuditHeadFields, readHead, writeHead } from "./audit_head.ts";

export type EgressOutcome =
  /** Written before anything leaves; the call goes out only once it is committed (egress.ts). */
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
const ROW_DOMAIN = "outpost-audit-row/2";
const CHECKPOINT_DOMAIN = "outpost-audit-checkpoint/2";
/** How long after migration 8 ran a start may still write the first head of a log (see #adopt). */
const ADOPT_WINDOW_MS = 10 * 60_000;

type RowContent = Omit<StoredAuditRow, "hash" | "prevHash">;

function rowContent(row: RowContent): string {
  return JSON.stringify([
    row.id,
    row.tsMs,
    row.destination,
    row.purpose,
    row.bytesOut,
    row.bytesIn,
    row.outcome,
    row.error ?? null,
  ]);
}

/** Legacy (unkeyed) link: SHA-256 over the previous row's hash and this row's content. Anyone can recompute it. */
export function rowHash(prevHash: string, row: RowContent): string {
  return sha256Hex(`${prevHash}\n${rowContent(row)}`);
}

/** Keyed link: HMAC-SHA-256 over the previous row's hash and this row's content, id and time included. */
export function keyedRowHash(key: AuditKey, prevHash: string, row: RowContent): Promise<string> {
  return key.mac(ROW_DOMAIN, `${prevHash}\n${rowContent(row)}`);
}

/** The MAC of a checkpoint retention leaves at a cut. */
export function checkpointMac(key: AuditKey, checkpoint: { cutId: number; hash: string; createdMs: number }) {
  return key.mac(CHECKPOINT_DOMAIN, JSON.stringify([checkpoint.cutId, checkpoint.hash, checkpoint.createdMs]));
}

export interface AuditLogOptions {
  /** The store's clock, so that retention by age cannot cut recent rows after a clock step. */
  now?: () => number;
  /** With a key: rows are HMAC-chained and the head file is signed after every append. */
  key?: AuditKey;
  /** The head file (src/egress/audit_head.ts); required with `key`. */
  headPath?: string;
  /** The head file could not be written at start (e.g. a read-only data dir). */
  onHeadError?: (error: Error) => void;
  /** Told when the log found at start does not match its head (the log keeps the evidence). */
  onTamper?: (problem: string, detail: Record<string, unknown>) => void;
}

/**
 * The egress audit log: every outbound attempt, allowed or refused, as a chained row.
 * Appends are serialised so that each row chains onto the one before it. With a key, each row's
 * hash is an HMAC and the signed head file outside the database follows every append (the row
 * is committed first, then the head: see audit_head.ts for what that bounds).
 * Without a key (tests of other components only) rows are chained unkeyed, as before version 8.
 */
export class AuditLog {
  readonly #client: Client;
  readonly #options: AuditLogOptions;
  readonly #now: () => number;
  #tail: Promise<unknown> = Promise.resolve();
  #last: { id: number; hash: string } | null = null;
  #head: Omit<AuditHeadFields, "lastId" | "lastHash" | "updatedMs"> | null = null;

  constructor(client: Client, options: AuditLogOptions | (() => number) = {}) {
    this.#client = client;
    this.#options = typeof options === "function" ? { now: options } : options;
    this.#now = this.#options.now ?? Date.now;
    if (this.#options.key && !this.#options.headPath) throw new TypeError("A keyed audit log needs a headPath");
  }

  /** Opens a keyed log: reads the head, adopts a legacy log, and writes the head at once. */
  static async open(client: Client, options: AuditLogOptions): Promise<AuditLog> {
    const log = new AuditLog(client, options);
    const start = log.#tail.then(() => log.#start());
    log.#tail = start.catch(() => {});
    await start;
    return log;
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
    if (this.#last === null) await this.#start();
    const last = this.#last!;
    const row = { ...entry, id: last.id + 1, tsMs: this.#now() };
    const key = this.#options.key;
    const hash = key ? await keyedRowHash(key, last.hash, row) : rowHash(last.hash, row);
    await insertAuditRow(this.#client, { ...row, prevHash: last.hash, hash });
    this.#last = { id: row.id, hash };
    if (key) await this.#writeHead();
  }

  /**
   * Where the next row chains on. Normally the newest row; but when rows the signed head names
   * are gone (truncated) the log continues from the head, so the gap stays visible to verify
   * instead of being covered by a new head.
   */
  async #start(): Promise<void> {
    const newest = await lastAuditRow(this.#client);
    const key = this.#options.key;
    if (!key) {
      this.#last = newest ? { id: newest.id, hash: newest.hash } : { id: 0, hash: GENESIS_HASH };
      return;
    }
    const read = await readHead(this.#options.headPath!, key);
    if (read.state === "read" && read.macValid && read.head.keyId !== key.id) {
      throw new AuditKeyMismatchError(read.head.keyId, key.id);
    }
    if (read.state === "read" && read.macValid) {
      const head = read.head;
      this.#head = { keyedFrom: head.keyedFrom, resealed: head.resealed };
      const pastHead = newest !== null && newest.id > head.lastId;
      this.#last = pastHead ? { id: newest.id, hash: newest.hash } : { id: head.lastId, hash: head.lastHash };
      // No rows under a head that names none is an empty log (egress disabled), not a truncation.
      const truncated = newest === null ? head.lastId > 0 : newest.id < head.lastId;
      if (truncated || (newest !== null && newest.id === head.lastId && newest.hash !== head.lastHash)) {
        this.#options.onTamper?.("head_mismatch", { headLastId: head.lastId, newestId: newest?.id ?? null });
      }
    } else {
      await this.#adopt(key, newest, read.state);
    }
    try {
      await this.#writeHead();
    } catch (error) {
      // A read-only or full data dir must not stop the service from starting (and reporting
      // itself not ready): appends fail until the head can be written, so egress stays closed.
      this.#options.onHeadError?.(error as Error);
    }
  }

  /**
   * No valid head. A log that holds no keyed row yet (a new one, or one written by a version
   * before keys) is taken over as found: its legacy rows stay verifiable as legacy and its
   * checkpoint is signed now. A log with keyed rows lost its head: a new one is written, marked
   * `resealed`, which verify reports until the log is archived and started afresh.
   */
  async #adopt(key: AuditKey, newest: StoredAuditRow | null, state: string): Promise<void> {
    const last = newest ? { id: newest.id, hash: newest.hash } : { id: 0, hash: GENESIS_HASH };
    this.#last = last;
    const legacy = newest === null || rowHash(newest.prevHash, newest) === newest.hash;
    // Only the first start on a keyed schema may write the first head: later, a missing head
    // means it was removed (maybe with every row), and the new one says so.
    const { keyedSinceMs } = await auditSchema(this.#client);
    const firstStart = keyedSinceMs === null || Date.now() - keyedSinceMs < ADOPT_WINDOW_MS;
    if (legacy && state === "missing" && firstStart) {
      this.#head = { keyedFrom: last.id + 1, resealed: [] };
      const firstId = await firstAuditId(this.#client);
      if (firstId !== null && firstId > 1) {
        const checkpoint = await auditCheckpoint(this.#client, firstId - 1);
        if (checkpoint && checkpoint.mac === null) {
          await signAuditCheckpoint(this.#client, checkpoint.cutId, await checkpointMac(key, checkpoint));
        }
      }
      return;
    }
    const firstId = await firstAuditId(this.#client);
    this.#head = { keyedFrom: firstId ?? last.id + 1, resealed: [{ atId: last.id, ms: Date.now() }] };
    this.#options.onTamper?.(`head_${state}`, { newestId: last.id });
  }

  async #writeHead(): Promise<void> {
    const head = this.#head!;
    await writeHead(this.#options.headPath!, this.#options.key!, {
      lastId: this.#last!.id,
      lastHash: this.#last!.hash,
      keyedFrom: head.keyedFrom,
      resealed: head.resealed,
      updatedMs: Date.now(),
    });
  }

  /** Rows with `ts_ms >= sinceMs` and `id > afterId`, oldest first. */
  async list(sinceMs: number, limit: number, afterId = 0): Promise<AuditRow[]> {
    return (await auditRowsSince(this.#client, sinceMs, afterId, limit)) as AuditRow[];
  }

  /** Rows written at or after `sinceMs` with ids below `beforeId` (all when null), newest first. */
  async listNewest(sinceMs: number, limit: number, beforeId: number | null): Promise<AuditRow[]> {
    return (await auditRowsBefore(this.#client, sinceMs, beforeId, limit)) as AuditRow[];
  }
}

/** The head was signed with another key than the one configured: appending would fork the log. */
export class AuditKeyMismatchError extends Error {
  readonly headKeyId: string;
  readonly keyId: string;
  constructor(headKeyId: string, keyId: string) {
    super(
      `The audit key does not match the audit head: head signed by key ${headKeyId}, configured key ${keyId}`,
    );
    this.name = "AuditKeyMismatchError";
    this.headKeyId = headKeyId;
    this.keyId = keyId;
  }
}
