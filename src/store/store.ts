import type { Client } from "@libsql/client";
import type { SecretLocation } from "../config/config.ts";
import type { Reading } from "../ingest/reading_schema.ts";
import type { Logger } from "../observability/log.ts";
import type { StoreUnavailableError } from "./errors.ts";
import { type Database, openDatabase, usedBytes } from "./database.ts";
import { RateLimitedLog } from "../observability/rate_limited_log.ts";
import { KnownDevices } from "./known_devices.ts";
import { ReadingWriter, type WriteResult } from "./reading_writer.ts";
import type { CommittedReadings } from "./readings.ts";
import {
  type CheckpointSigner,
  deleteDevicesWithoutReadings,
  deleteExpiredReadings,
  deleteForgottenWatermarks,
  pruneTables,
} from "./retention.ts";
import { StoreClock } from "./store_clock.ts";

export interface StoreOptions {
  dataDir: string;
  maxSizeBytes: number;
  retentionHours: number;
  /** Retention of dead letters, events, alerts, the audit log and the model history; kept forever when absent. */
  keepHours?: { deadLetters: number; events: number; alerts: number; audit: number; modelHistory?: number };
  /** Signs the checkpoint audit retention leaves at a cut (src/egress/audit.ts); unsigned when absent. */
  signAuditCheckpoint?: CheckpointSigner;
  /** The key's file when the database is encrypted at rest (`spec.storage.encryption`). */
  encryptionKey?: SecretLocation | null;
  /** `spec.limits` bounds the store enforces; unbounded when absent (tests of other parts). */
  limits?: { devices: number; writerPendingRows: number; deadLetterPayloadBytes: number };
}

export interface DeadLetter {
  source: string;
  topic?: string;
  reason: string;
  payload: Uint8Array;
  /** Bytes the payload had when it arrived, when only its start reached the store. */
  payloadBytes?: number;
}

export interface StoreStats {
  rows: number;
  usedBytes: number;
  maxSizeBytes: number;
  deadLetters: number;
  devices: number;
  commitFailures: number;
  /** WAL checkpoints before an ingest commit that failed (src/store/wal_checkpoints.ts). */
  checkpointFailures: number;
  /** Rows deleted by retention since start, by table. */
  retentionDeleted: Readonly<Record<string, number>>;
  schemaVersion: number;
}

const SIZE_REFRESH_MS = 250;
const RETENTION_INTERVAL_MS = 60_000;
/** A readiness probe commits at most this often; while the store is failing, it retries this often. */
const PROBE_INTERVAL_MS = 1_000;

/**
 * The libSQL buffer: readings (group-committed on the ingest connection), the device bound, the
 * store's clock, dead letters, retention of every table, size accounting and a readiness probe
 * that commits.
 */
export class Store {
  readonly #database: Database;
  readonly #options: StoreOptions;
  readonly #log: Logger;
  readonly #writer: ReadingWriter;
  readonly #devices: KnownDevices;
  readonly #clock: StoreClock;
  readonly #commitFailureLog: RateLimitedLog;
  #commitFailures = 0;
  readonly #retentionDeleted: Record<string, number> = {};
  #lastCommitAt = -Infinity;
  #probing: Promise<void> | null = null;
  #retaining: Promise<void> | null = null;
  #rows: number;
  #deadLetters: number;
  #usedBytes: number;
  #sizeCheckedAt = 0;
  #timers: ReturnType<typeof setInterval>[] = [];
  readonly #commitListeners = new Set<(inserted: number, committed: CommittedReadings | null) => void>();
  readonly #forgetListeners = new Set<(devices: readonly string[]) => void>();
  #closed = false;

  private constructor(
    database: Database,
    options: StoreOptions,
    log: Logger,
    parts: { counts: [number, number, number]; devices: KnownDevices; clock: StoreClock },
  ) {
    this.#database = database;
    this.#options = options;
    this.#log = log;
    [this.#rows, this.#deadLetters, this.#usedBytes] = parts.counts;
    this.#devices = parts.devices;
    this.#clock = parts.clock;
    this.#commitFailureLog = new RateLimitedLog(log, 5_000);
    this.#writer = new ReadingWriter(database.ingest, {
      maxSizeBytes: options.maxSizeBytes,
      usedBytes: () => this.#usedBytes,
      maxPendingRows: options.limits?.writerPendingRows,
      devices: this.#devices,
      now: () => this.#clock.now(),
      onCommitFailed: (error) => this.#commitFailed(error),
      beforeCommit: () => database.checkpoints.beforeCommit(),
      onCommit: (inserted, committed) => {
        this.#lastCommitAt = performance.now();
        this.#rows += inserted;
        void this.#refreshSize(false);
        for (const listener of this.#commitListeners) listener(inserted, committed);
      },
    });
  }

  static async open(options: StoreOptions, log: Logger): Promise<Store> {
    const database = await openDatabase(options.dataDir, log, { encryptionKey: options.encryptionKey });
    const client = database.client;
    const rows = Number((await client.execute("SELECT count(*) AS n FROM readings")).rows[0].n);
    const dead = Number((await client.execute("SELECT count(*) AS n FROM dead_letters")).rows[0].n);
    const store = new Store(database, options, log, {
      counts: [rows, dead, await usedBytes(client)],
      devices: await KnownDevices.load(client, options.limits?.devices ?? Number.MAX_SAFE_INTEGER),
      clock: await StoreClock.open(client),
    });
    store.#startTimers();
    log.info("store.opened", {
      path: database.path,
      rows,
      schemaVersion: database.schemaVersion,
      encrypted: Boolean(options.encryptionKey),
    });
    return store;
  }

  get client(): Client {
    return this.#database.client;
  }

  get path(): string {
    return this.#database.path;
  }

  /** The store's clock (src/store/store_clock.ts): arrival times, TTLs and idle timeouts use it. */
  now(): number {
    return this.#clock.now();
  }

  /** Stores readings; resolves once they are committed. Throws StoreFullError / StoreUnavailableError. */
  write(readings: readonly Reading[], source: string): Promise<WriteResult> {
    return this.#writer.write(readings, source);
  }

  /**
   * Calls `listener` after every commit of readings with the number of rows it added, and the rows
   * with their ids when it added every row it carried.
   */
  onCommit(listener: (inserted: number, committed: CommittedReadings | null) => void): void {
    this.#commitListeners.add(listener);
  }

  /** Calls `listener` with the devices retention forgot (every reading of theirs removed). */
  onDevicesForgotten(listener: (devices: readonly string[]) => void): void {
    this.#forgetListeners.add(listener);
  }

  /**
   * Keeps an invalid payload, cut to `spec.limits.deadLetterPayloadBytes`, with the reason; returns
   * false, keeping nothing, while the store is at `spec.storage.maxSizeMB` (a dead letter is a
   * copy for diagnosis: a flood of invalid messages must not grow the store past its bound).
   */
  async writeDeadLetter(letter: DeadLetter): Promise<boolean> {
    if (this.#writer.isFull) return false;
    const original = letter.payloadBytes ?? letter.payload.byteLength;
    const keep = Math.min(letter.payload.byteLength, this.#options.limits?.deadLetterPayloadBytes ?? Infinity);
    const payload = letter.payload.subarray(0, keep);
    const reason = keep < original
      ? `${letter.reason} (payload cut to its first ${keep} of ${original} bytes)`
      : letter.reason;
    await this.#database.client.execute({
      sql: "INSERT INTO dead_letters (received_ms, source, topic, reason, payload) VALUES (?, ?, ?, ?, ?)",
      args: [this.#clock.now(), letter.source, letter.topic ?? null, reason, payload],
    });
    this.#deadLetters++;
    return true;
  }

  stats(): StoreStats {
    return {
      rows: this.#rows,
      usedBytes: this.#usedBytes,
      maxSizeBytes: this.#options.maxSizeBytes,
      deadLetters: this.#deadLetters,
      devices: this.#devices.count,
      commitFailures: this.#commitFailures,
      checkpointFailures: this.#database.checkpoints.failures,
      retentionDeleted: { ...this.#retentionDeleted },
      schemaVersion: this.#database.schemaVersion,
    };
  }

  /**
   * Reasons the store cannot take data now; empty when it can. Unless a commit succeeded within
   * the last second, this first commits a probe row on the ingest connection (at most once a
   * second), so a read-only data dir or a lock held elsewhere shows here before any ingest fails,
   * and a recovered store shows as soon as a probe succeeds.
   */
  async probe(): Promise<string[]> {
    if (!this.#closed && performance.now() - this.#lastCommitAt > PROBE_INTERVAL_MS) {
      this.#probing ??= this.#writer.probe(this.#clock.saveStatement()).then((ok) => {
        if (ok) this.#lastCommitAt = performance.now();
      }).finally(() => this.#probing = null);
      await this.#probing;
    }
    return this.problems();
  }

  /** Reasons the store cannot take data, as last seen (no probe). */
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
    await this.#probing;
    await this.#retaining;
    try {
      await this.#database.client.execute(this.#clock.saveStatement());
    } catch (error) {
      this.#log.warn("store.clock_save_failed", { error });
    }
    this.#database.close();
    this.#log.info("store.closed", { rows: this.#rows });
  }

  #startTimers(): void {
    this.#timers.push(setInterval(() => void this.#refreshSize(true), 1_000));
    // While commits fail, probe every second so that recovery shows without waiting for a client.
    this.#timers.push(setInterval(() => {
      if (this.#writer.lastError) void this.probe();
    }, PROBE_INTERVAL_MS));
    this.#timers.push(setInterval(() => void this.#retain(), RETENTION_INTERVAL_MS));
    void this.#retain();
  }

  async #refreshSize(force: boolean): Promise<void> {
    const now = performance.now();
    if (this.#closed || (!force && now - this.#sizeCheckedAt < SIZE_REFRESH_MS)) return;
    this.#sizeCheckedAt = now;
    try {
      this.#usedBytes = await usedBytes(this.#database.client);
    } catch (error) {
      this.#log.warn("store.size_check_failed", { error });
    }
  }

  /** Runs retention unless a pass is under way; close() waits for the one under way. */
  #retain(): Promise<void> {
    this.#retaining ??= this.#applyRetention().finally(() => this.#retaining = null);
    return this.#retaining;
  }

  async #applyRetention(): Promise<void> {
    if (this.#closed) return;
    const client = this.#database.client;
    const cutoffMs = this.#clock.now() - this.#options.retentionHours * 3_600_000;
    try {
      await client.execute(this.#clock.saveStatement());
      const deleted = await deleteExpiredReadings(client, cutoffMs);
      this.#countDeleted("readings", deleted);
      if (this.#options.keepHours) await this.#pruneTables(this.#options.keepHours);
      if (deleted > 0) {
        this.#rows -= deleted;
        const forgotten = await deleteDevicesWithoutReadings(client);
        this.#countDeleted("device_watermarks", await deleteForgottenWatermarks(client));
        this.#devices.forget(forgotten);
        if (forgotten.length > 0) { for (const listener of this.#forgetListeners) listener(forgotten); }
        this.#log.info("store.retention", { deleted, devicesForgotten: forgotten.length, cutoffMs });
        await this.#refreshSize(true);
      }
    } catch (error) {
      this.#log.warn("store.retention_failed", { error });
    }
  }

  async #pruneTables(keep: NonNullable<StoreOptions["keepHours"]>): Promise<void> {
    const storeNow = this.#clock.now();
    const wallNow = Date.now();
    const hours = (value: number) => value * 3_600_000;
    const pruned = await pruneTables(
      this.#database.client,
      {
        deadLetters: storeNow - hours(keep.deadLetters),
        // Events and alerts carry reading times; audit rows, the store clock at their write.
        events: wallNow - hours(keep.events),
        alerts: wallNow - hours(keep.alerts),
        audit: storeNow - hours(keep.audit),
        // Kept forever when not given (tests of other tables); the manifest's default is a year.
        modelHistory: keep.modelHistory === undefined ? 0 : storeNow - hours(keep.modelHistory),
      },
      wallNow,
      { signCheckpoint: this.#options.signAuditCheckpoint },
    );
    this.#deadLetters -= pruned.deadLetters;
    for (const [table, count] of Object.entries(pruned)) this.#countDeleted(table, count);
    if (Object.values(pruned).some((count) => count > 0)) this.#log.info("store.pruned", pruned);
  }

  #countDeleted(table: string, count: number): void {
    if (count > 0) this.#retentionDeleted[table] = (this.#retentionDeleted[table] ?? 0) + count;
  }

  #commitFailed(error: StoreUnavailableError): void {
    this.#commitFailures++;
    this.#commitFailureLog.warn("store.commit_failed", { reason: error.reason, failures: this.#commitFailures });
  }
}
