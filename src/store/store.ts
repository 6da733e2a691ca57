import type { Client } from "@libsql/client";
import type { Reading } from "../ingest/reading_schema.ts";
import type { Logger } from "../observability/log.ts";
import { type Database, openDatabase, usedBytes } from "./database.ts";
import { ReadingWriter, type WriteResult } from "./reading_writer.ts";
import { deleteExpiredReadings } from "./retention.ts";

export interface StoreOptions {
  dataDir: string;
  maxSizeBytes: number;
  retentionHours: number;
}

export interface DeadLetter {
  source: string;
  topic?: string;
  reason: string;
  payload: Uint8Array;
}

export interface StoreStats {
  rows: number;
  usedBytes: number;
  maxSizeBytes: number;
  deadLetters: number;
  schemaVersion: number;
}

const SIZE_REFRESH_MS = 250;
const RETENTION_INTERVAL_MS = 60_000;

/** The libSQL buffer: readings (group-committed), dead letters, retention and size accounting. */
export class Store {
  readonly #database: Database;
  readonly #options: StoreOptions;
  readonly #log: Logger;
  readonly #writer: ReadingWriter;
  #rows: number;
  #deadLetters: number;
  #usedBytes: number;
  #sizeCheckedAt = 0;
  #timers: ReturnType<typeof setInterval>[] = [];
  readonly #commitListeners = new Set<(inserted: number) => void>();
  #closed = false;

  private constructor(database: Database, options: StoreOptions, log: Logger, counts: [number, number, number]) {
    this.#database = database;
    this.#options = options;
    this.#log = log;
    [this.#rows, this.#deadLetters, this.#usedBytes] = counts;
    this.#writer = new ReadingWriter(database.client, {
      maxSizeBytes: options.maxSizeBytes,
      usedBytes: () => this.#usedBytes,
      onCommit: (inserted) => {
        this.#rows += inserted;
        void this.#refreshSize(false);
        for (const listener of this.#commitListeners) listener(inserted);
      },
    });
  }

  static async open(options: StoreOptions, log: Logger): Promise<Store> {
    const database = await openDatabase(options.dataDir, log);
    const client = database.client;
    const rows = Number((await client.execute("SELECT count(*) AS n FROM readings")).rows[0].n);
    const dead = Number((await client.execute("SELECT count(*) AS n FROM dead_letters")).rows[0].n);
    const store = new Store(database, options, log, [rows, dead, await usedBytes(client)]);
    store.#startTimers();
    log.info("store.opened", { path: database.path, rows, schemaVersion: database.schemaVersion });
    return store;
  }

  get client(): Client {
    return this.#database.client;
  }

  get path(): string {
    return this.#database.path;
  }

  /** Stores readings; resolves once they are committed. Throws StoreFullError / StoreUnavailableError. */
  write(readings: readonly Reading[], source: string): Promise<WriteResult> {
    return this.#writer.write(readings, source);
  }

  /** Calls `listener` after every commit of readings with the number of rows it added. */
  onCommit(listener: (inserted: number) => void): void {
    this.#commitListeners.add(listener);
  }

  async writeDeadLetter(letter: DeadLetter): Promise<void> {
    await this.#database.client.execute({
      sql: "INSERT INTO dead_letters (received_ms, source, topic, reason, payload) VALUES (?, ?, ?, ?, ?)",
      args: [Date.now(), letter.source, letter.topic ?? null, letter.reason, letter.payload],
    });
    this.#deadLetters++;
  }

  stats(): StoreStats {
    return {
      rows: this.#rows,
      usedBytes: this.#usedBytes,
      maxSizeBytes: this.#options.maxSizeBytes,
      deadLetters: this.#deadLetters,
      schemaVersion: this.#database.schemaVersion,
    };
  }

  /** Reasons the store cannot take data now; empty when it can. */
  problems(): string[] {
    const problems: string[] = [];
    if (this.#closed) problems.push("store closed");
    if (this.#writer.isFull) problems.push(`store full: ${this.#usedBytes} of ${this.#options.maxSizeBytes} bytes`);
    const error = this.#writer.lastError;
    if (error) problems.push(`last commit failed: ${error.reason}`);
    return problems;
  }

  /** Commits what is queued, stops the timers and closes the database. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearInterval(timer);
    await this.#writer.close();
    this.#database.client.close();
    this.#log.info("store.closed", { rows: this.#rows });
  }

  #startTimers(): void {
    this.#timers.push(setInterval(() => void this.#refreshSize(true), 1_000));
    this.#timers.push(setInterval(() => void this.#applyRetention(), RETENTION_INTERVAL_MS));
    void this.#applyRetention();
  }

  async #refreshSize(force: boolean): Promise<void> {
    const now = Date.now();
    if (this.#closed || (!force && now - this.#sizeCheckedAt < SIZE_REFRESH_MS)) return;
    this.#sizeCheckedAt = now;
    try {
      this.#usedBytes = await usedBytes(this.#database.client);
    } catch (error) {
      this.#log.warn("store.size_check_failed", { error });
    }
  }

  async #applyRetention(): Promise<void> {
    if (this.#closed) return;
    const cutoffMs = Date.now() - this.#options.retentionHours * 3_600_000;
    try {
      const deleted = await deleteExpiredReadings(this.#database.client, cutoffMs);
      if (deleted > 0) {
        this.#rows -= deleted;
        this.#log.info("store.retention", { deleted, cutoffMs });
        await this.#refreshSize(true);
      }
    } catch (error) {
      this.#log.warn("store.retention_failed", { error });
    }
  }
}
