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

/** Offsets in the wal-index: the first copy of its header, then the checkpoint information. */
const MX_FRAME_OFFSET = 16;
const N_BACKFILL_OFFSET = 96;
const HEADER_BYTES = 100;

export class WalCheckpoints {
  readonly #shmPath: string;
  readonly #client: Client;
  readonly #pages: number;
  #shm: Deno.FsFile | null = null;
  readonly #header = new Uint8Array(HEADER_BYTES);

  /** Checkpoints through `client` once `pages` frames wait to be copied back. */
  constructor(databasePath: string, client: Client, pages: number) {
    this.#shmPath = `${databasePath}-shm`;
    this.#client = client;
    this.#pages = pages;
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
      this.close();
      return null;
    }
    // The wal-index is in the machine's byte order (little-endian on x86_64 and aarch64).
    const view = new DataView(this.#header.buffer);
    return { frames: view.getUint32(MX_FRAME_OFFSET, true), copied: view.getUint32(N_BACKFILL_OFFSET, true) };
  }

  /**
   * Checkpoints (without waiting for anyone) when enough frames wait; call before an ingest commit.
   * A checkpoint that fails (a full disk: it writes to the database file) does not fail the
   * commit: the frames stay in the WAL, and the automatic checkpoint tries again later.
   */
  async beforeCommit(): Promise<void> {
    const index = this.walIndex();
    if (index === null || index.frames - index.copied < this.#pages) return;
    try {
      await this.#client.execute("PRAGMA wal_checkpoint(PASSIVE)");
    } catch {
      // Left to the automatic checkpoint; the commit that follows reports a real storage fault.
    }
  }

  close(): void {
    try {
      this.#shm?.close();
    } catch { /* already closed */ }
    this.#shm = null;
  }
}
