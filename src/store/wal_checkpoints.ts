/**
 * Checkpoints the WAL from the reading writer, just before one of its commits, so that the commit
 * after a checkpoint (the one that starts the WAL again from its beginning, and fsyncs its header
 * to do so) is an ingest commit, which waits for an fsync anyway, and not a scoring pass's.
 *
 * SQLite's automatic checkpoint runs inside the commit that crossed its bound and leaves that
 * restart to whichever connection writes next: with it, the next writer was always the scoring
 * pass that the ingest commit had just started. The automatic checkpoints stay, at a higher bound
 * (src/store/database.ts), for when nothing is ingested.
 *
 * How far the WAL has grown is read from the wal-index (the `-shm` file, whose header layout is
 * part of SQLite's documented file format: https://sqlite.org/walformat.html): `mxFrame`, the
 * frames committed to the WAL, and `nBackfill`, those already copied back. Only this process
 * writes the database (the data dir's lock), and libSQL's calls run on this thread, so the header
 * is never read half-written.
 */
import type { Client } from "@libsql/client";
import type { Logger } from "../observability/log.ts";
import { RateLimitedLog } from "../observability/rate_limited_log.ts";

/** Offsets in the wal-index: the first copy of its header, then the checkpoint information. */
const MX_FRAME_OFFSET = 16;
const N_BACKFILL_OFFSET = 96;
const HEADER_BYTES = 100;
/**
 * After a failed checkpoint (a full disk: it writes to the database file) the writer leaves it for
 * this long: a failed call also makes the connection reconnect before the next commit.
 */
export const CHECKPOINT_RETRY_MS = 10_000;

export class WalCheckpoints {
  readonly #shmPath: string;
  readonly #client: Client;
  readonly #pages: number;
  readonly #failureLog: RateLimitedLog;
  /**
   * Opened once and closed only after SQLite's connections are: closing any descriptor of a file
   * drops every POSIX lock this process holds on it, SQLite's included
   * (https://sqlite.org/howtocorrupt.html, section 2.2).
   */
  #shm: Deno.FsFile | null = null;
  readonly #header = new Uint8Array(HEADER_BYTES);
  readonly #now: () => number;
  #retryAt = -Infinity;
  #failures = 0;

  /**
   * Checkpoints through `client` once `pages` frames wait to be copied back. `now` is the clock
   * the retry delay is measured on (milliseconds; `performance.now` unless a test steps it).
   */
  constructor(
    databasePath: string,
    client: Client,
    pages: number,
    log: Logger,
    options: { now?: () => number } = {},
  ) {
    this.#shmPath = `${databasePath}-shm`;
    this.#client = client;
    this.#pages = pages;
    this.#failureLog = new RateLimitedLog(log, 60_000);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Checkpoints that failed since the start. */
  get failures(): number {
    return this.#failures;
  }

  /**
   * Frames committed to the WAL since it last started from its beginning, and how many of them a
   * checkpoint has copied back; null if the wal-index cannot be read.
   */
  walIndex(): { frames: number; copied: number } | null {
    try {
      this.#shm ??= Deno.openSync(this.#shmPath, { read: true });
      this.#shm.seekSync(0, Deno.SeekMode.Start);
      let read = 0;
      while (read < HEADER_BYTES) {
        const n = this.#shm.readSync(this.#header.subarray(read));
        if (n === null) return null;
        read += n;
      }
    } catch {
      return null;
    }
    // The wal-index is in the machine's byte order (little-endian on x86_64 and aarch64).
    const view = new DataView(this.#header.buffer);
    return { frames: view.getUint32(MX_FRAME_OFFSET, true), copied: view.getUint32(N_BACKFILL_OFFSET, true) };
  }

  /**
   * Checkpoints (without waiting for anyone) when enough frames wait; call before an ingest commit.
   * A checkpoint that fails does not fail the commit: the frames stay in the WAL, it is logged
   * (`store.checkpoint_failed`, at most once a minute) and counted, and tried again after
   * CHECKPOINT_RETRY_MS; SQLite's automatic checkpoint keeps trying meanwhile.
   */
  async beforeCommit(): Promise<void> {
    if (this.#now() < this.#retryAt) return;
    const index = this.walIndex();
    if (index === null || index.frames - index.copied < this.#pages) return;
    try {
      await this.#client.execute("PRAGMA wal_checkpoint(PASSIVE)");
    } catch (error) {
      this.#failures++;
      this.#retryAt = this.#now() + CHECKPOINT_RETRY_MS;
      this.#failureLog.warn("store.checkpoint_failed", { error, failures: this.#failures, waiting: index.frames });
    }
  }

  /** Call once the database's connections are closed. */
  close(): void {
    try {
      this.#shm?.close();
    } catch { /* already closed */ }
    this.#shm = null;
  }
}
