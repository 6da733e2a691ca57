import type { Client, InStatement } from "@libsql/client";
import { laterTurn } from "../event_loop_turn.ts";
import type { Reading } from "../ingest/reading_schema.ts";
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";
import { StoreFullError, StoreUnavailableError } from "./errors.ts";
import type { KnownDevices } from "./known_devices.ts";
import type { CommittedReadings, StoredReading } from "./readings.ts";

/** How many rows one INSERT statement carries (5 parameters each, far below SQLite's limit). */
const ROWS_PER_STATEMENT = 500;
/** How many rows one commit carries at most; the rest wait for the next commit. */
const ROWS_PER_COMMIT = 20_000;

export interface WriteResult {
  /** Readings newly stored. */
  inserted: number;
  /** Readings already stored before (same device and ts): kept once, not twice. */
  duplicates: number;
}

interface PendingWrite {
  readings: readonly Reading[];
  source: string;
  resolve: (result: WriteResult) => void;
  reject: (error: Error) => void;
}

export interface WriterOptions {
  maxSizeBytes: number;
  /** Current bytes in use, refreshed by the store. */
  usedBytes: () => number;
  /** Readings queued for the next commit at most (`spec.limits.writerPendingRows`). */
  maxPendingRows?: number;
  /** The device bound; none when absent. */
  devices?: KnownDevices;
  /** The arrival time to stamp on rows (the store's step-free clock); `Date.now` when absent. */
  now?: () => number;
  /**
   * Called after every commit with the number of rows it added, and those rows with their ids when
   * it added every row it carried (null when some were duplicates).
   */
  onCommit?: (rowsInserted: number, committed: CommittedReadings | null) => void;
  /** Called after every failed commit. */
  onCommitFailed?: (error: StoreUnavailableError) => void;
  /** Runs just before each commit (the WAL's checkpoint, src/store/wal_checkpoints.ts). */
  beforeCommit?: () => Promise<void>;
}

/**
 * Group commit: every `write` joins the next commit, and its promise settles only once that
 * commit is durable. Concurrent writers share one transaction of multi-row INSERTs.
 */
export class ReadingWriter {
  #client: Client;
  #options: WriterOptions;
  #queue: PendingWrite[] = [];
  #queuedRows = 0;
  #scheduled = false;
  #flushing: Promise<void> | null = null;
  #closed = false;
  #lastError: StoreUnavailableError | null = null;

  constructor(client: Client, options: WriterOptions) {
    this.#client = client;
    this.#options = options;
  }

  /** The error of the last failed commit, cleared by the next successful one. */
  get lastError(): StoreUnavailableError | null {
    return this.#lastError;
  }

  get isFull(): boolean {
    return this.#options.usedBytes() >= this.#options.maxSizeBytes;
  }

  /** Stores the readings; resolves after the commit that holds them. */
  write(readings: readonly Reading[], source: string): Promise<WriteResult> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError("store is closing"));
    const used = this.#options.usedBytes();
    if (used >= this.#options.maxSizeBytes) {
      return Promise.reject(new StoreFullError(used, this.#options.maxSizeBytes));
    }
    if (readings.length === 0) return Promise.resolve({ inserted: 0, duplicates: 0 });
    const maxPending = this.#options.maxPendingRows ?? Infinity;
    if (this.#queuedRows + readings.length > maxPending) {
      return Promise.reject(
        new LimitExceededError(
          limitKey("writerPendingRows"),
          maxPending,
          `${this.#queuedRows} readings already wait for the next commit; retry later`,
          503,
        ),
      );
    }
    try {
      this.#options.devices?.admit(readings.map((reading) => reading.device));
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ readings, source, resolve, reject });
      this.#queuedRows += readings.length;
      this.#schedule();
    });
  }

  /**
   * Commits `statement` alone on the writer's connection to learn whether commits work now;
   * a success clears `lastError`, a failure sets it. Resolves true on success.
   */
  async probe(statement: InStatement): Promise<boolean> {
    try {
      await this.#client.batch([statement], "write");
      this.#lastError = null;
      return true;
    } catch (error) {
      this.#lastError = new StoreUnavailableError(describeSqliteError(error), { cause: error });
      this.#options.onCommitFailed?.(this.#lastError);
      return false;
    }
  }

  /** Commits what is queued, then refuses further writes. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#flushing || this.#queue.length > 0) {
      this.#flushing ??= this.#flush();
      await this.#flushing;
    }
  }

  #schedule(): void {
    if (this.#scheduled || this.#flushing) return;
    this.#scheduled = true;
    // A later turn lets pending I/O (other requests) join this commit before it starts.
    laterTurn(() => {
      this.#scheduled = false;
      if (!this.#flushing) this.#flushing = this.#flush();
    });
  }

  async #flush(): Promise<void> {
    const batch = this.#takeBatch();
    try {
      if (batch.length > 0) await this.#commit(batch);
    } finally {
      this.#flushing = null;
      if (this.#queue.length > 0) this.#schedule();
    }
  }

  #takeBatch(): PendingWrite[] {
    const batch: PendingWrite[] = [];
    let rows = 0;
    while (this.#queue.length > 0 && (rows === 0 || rows + this.#queue[0].readings.length <= ROWS_PER_COMMIT)) {
      const next = this.#queue.shift()!;
      rows += next.readings.length;
      this.#queuedRows -= next.readings.length;
      batch.push(next);
    }
    return batch;
  }

  async #commit(batch: PendingWrite[]): Promise<void> {
    const receivedMs = this.#options.now?.() ?? Date.now();
    const rows: InsertedRow[] = [];
    const devices = new Set<string>();
    for (const pending of batch) {
      for (const reading of pending.readings) {
        rows.push({ reading, source: pending.source, valuesJson: JSON.stringify(reading.values) });
        devices.add(reading.device);
      }
    }
    // The first statement notes the highest id before this commit: rows inserted by it get
    // higher ids, which tells apart new rows from duplicates when there are any.
    const statements: InStatement[] = ["SELECT coalesce(max(id), 0) FROM readings"];
    for (let start = 0; start < rows.length; start += ROWS_PER_STATEMENT) {
      statements.push(insertStatement(rows.slice(start, start + ROWS_PER_STATEMENT), receivedMs));
    }
    const record = this.#options.devices?.recordStatement(devices, receivedMs);
    if (record) statements.push(record);
    let inserted: Set<string> | null = null;
    let insertedCount = 0;
    let maxIdBefore = 0;
    try {
      await this.#options.beforeCommit?.();
      const results = await this.#client.batch(statements, "write");
      maxIdBefore = Number(results[0].rows[0][0]);
      for (const result of results.slice(1, record ? -1 : undefined)) insertedCount += result.rowsAffected;
      if (insertedCount < rows.length) inserted = await this.#insertedSince(maxIdBefore);
      this.#lastError = null;
    } catch (error) {
      const failure = new StoreUnavailableError(describeSqliteError(error), { cause: error });
      this.#lastError = failure;
      this.#options.onCommitFailed?.(failure);
      this.#options.devices?.failed(devices);
      for (const pending of batch) pending.reject(failure);
      return;
    }
    this.#options.devices?.committed(devices);
    // With no duplicate, the rows took ids maxIdBefore + 1, + 2, ... in order: SQLite gives a new
    // row of an INTEGER PRIMARY KEY table the largest id so far plus one, and only this writer inserts.
    this.#options.onCommit?.(
      insertedCount,
      inserted === null
        ? { afterId: maxIdBefore, count: rows.length, rows: () => storedRows(rows, maxIdBefore, receivedMs) }
        : null,
    );
    for (const pending of batch) {
      if (inserted === null) {
        pending.resolve({ inserted: pending.readings.length, duplicates: 0 });
        continue;
      }
      let fresh = 0;
      for (const reading of pending.readings) {
        if (inserted.delete(readingKey(reading.device, reading.ts))) fresh++;
      }
      pending.resolve({ inserted: fresh, duplicates: pending.readings.length - fresh });
    }
  }

  /** Keys of the rows committed after `maxIdBefore` (only this writer inserts readings). */
  async #insertedSince(maxIdBefore: number): Promise<Set<string>> {
    const result = await this.#client.execute({
      sql: "SELECT device, ts FROM readings WHERE id > ?",
      args: [maxIdBefore],
    });
    return new Set(result.rows.map((row) => readingKey(String(row[0]), Number(row[1]))));
  }
}

interface InsertedRow {
  reading: Reading;
  source: string;
  /** The values as stored. */
  valuesJson: string;
}

function storedRows(rows: readonly InsertedRow[], maxIdBefore: number, receivedMs: number): StoredReading[] {
  return rows.map(({ reading, valuesJson }, i) => ({
    id: maxIdBefore + 1 + i,
    device: reading.device,
    ts: reading.ts,
    valuesJson,
    receivedMs,
  }));
}

function insertStatement(rows: InsertedRow[], receivedMs: number): InStatement {
  const args: (string | number)[] = [];
  for (const { reading, source, valuesJson } of rows) {
    args.push(reading.device, reading.ts, valuesJson, source, receivedMs);
  }
  const placeholders = "(?,?,?,?,?),".repeat(rows.length).slice(0, -1);
  return {
    sql: `INSERT OR IGNORE INTO readings (device, ts, values_json, source, received_ms) VALUES ${placeholders}`,
    args,
  };
}

function readingKey(device: string, ts: number): string {
  return `${ts}\u0000${device}`;
}

function describeSqliteError(error: unknown): string {
  const code = (error as { code?: string }).code ?? "";
  if (code.includes("FULL")) return "disk full";
  if (code.includes("BUSY") || code.includes("LOCKED")) return "database locked";
  return (error as Error).message ?? String(error);
}
