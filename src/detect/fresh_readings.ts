/**
 * The readings the writer has just committed, kept for the scorer so that a pass over them need
 * not read them back from the store (about 0.45 ms of a 3 ms pass at 1,000 readings/s).
 *
 * Rules it keeps:
 * - It holds every committed reading with an id above `#after`, or nothing (`#after` null): a
 *   commit is taken only when it follows on from what is held (its first id is the next one);
 *   a commit with duplicates (whose ids are not known without a query) empties it, and the next
 *   commit starts it again.
 * - Bounded: past `maxRows` readings or `maxBytes` of values and device names it empties; the scorer, behind,
 *   reads from the store as before and uses what is held again once its cursor has caught up.
 * - A pass asks for the readings after its cursor; the answer is null unless all of them are
 *   held, and readings at or below the cursor are let go.
 */
import type { CommittedReadings, StoredReading } from "../store/readings.ts";

export class FreshReadings {
  readonly #maxRows: number;
  readonly #maxBytes: number;
  #after: number | null = null;
  #rows: StoredReading[] = [];
  #bytes = 0;

  constructor(bounds: { maxRows: number; maxBytes: number }) {
    this.#maxRows = bounds.maxRows;
    this.#maxBytes = bounds.maxBytes;
  }

  /** Notes a commit: its readings, or null when they are not known. */
  committed(commit: CommittedReadings | null): void {
    if (commit === null) return this.#empty();
    const held = this.#rows.length > 0 ? this.#rows[this.#rows.length - 1].id : this.#after;
    if (held !== commit.afterId) {
      this.#empty();
      this.#after = commit.afterId;
    }
    if (this.#rows.length + commit.count > this.#maxRows) return this.#empty();
    const rows = commit.rows();
    let bytes = this.#bytes;
    for (const row of rows) bytes += row.valuesJson.length + row.device.length;
    if (bytes > this.#maxBytes) return this.#empty();
    this.#bytes = bytes;
    for (const row of rows) this.#rows.push(row);
  }

  /** Up to `limit` readings after `cursor` in id order, or null when some of them are not held. */
  after(cursor: number, limit: number): StoredReading[] | null {
    if (this.#after === null || this.#after > cursor) return null;
    let done = 0;
    while (done < this.#rows.length && this.#rows[done].id <= cursor) {
      this.#bytes -= this.#rows[done].valuesJson.length + this.#rows[done].device.length;
      done++;
    }
    if (done > 0) this.#rows = this.#rows.slice(done);
    this.#after = cursor;
    return this.#rows.slice(0, limit);
  }

  #empty(): void {
    this.#after = null;
    this.#rows = [];
    this.#bytes = 0;
  }
}
