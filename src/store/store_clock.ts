import type { Client } from "@libsql/client";

/** Downtime longer than this is not believed (a wall clock that jumped while the device was off). */
const MAX_DOWNTIME_MS = 366 * 24 * 3_600_000;

/**
 * The store's own clock for arrival times (`received_ms`) and retention: it never steps.
 *
 * While the process runs it advances with the monotonic clock, so an NTP step of the wall clock
 * (a Raspberry Pi without an RTC boots years behind, then jumps) moves neither the arrival times
 * of new readings nor the retention cutoff. Across a restart it advances by the downtime the
 * wall clock shows, when that is plausible (0 to a year); otherwise by nothing. It starts at the
 * wall clock on a new store, so arrival times read as wall-clock times while no step happens.
 * Its position is saved with every retention pass and at close.
 */
export class StoreClock {
  readonly #baseMs: number;
  readonly #startedAt = performance.now();

  private constructor(baseMs: number) {
    this.#baseMs = baseMs;
  }

  static async open(client: Client): Promise<StoreClock> {
    const row = (await client.execute("SELECT clock_ms, wall_ms FROM store_clock WHERE id = 1")).rows[0];
    const wallNow = Date.now();
    if (!row) return new StoreClock(wallNow);
    const downtime = wallNow - Number(row.wall_ms);
    return new StoreClock(Number(row.clock_ms) + (downtime >= 0 && downtime <= MAX_DOWNTIME_MS ? downtime : 0));
  }

  now(): number {
    return Math.floor(this.#baseMs + performance.now() - this.#startedAt);
  }

  /** The statement that saves the clock's position. */
  saveStatement() {
    return {
      sql: "INSERT INTO store_clock (id, clock_ms, wall_ms) VALUES (1, ?, ?) " +
        "ON CONFLICT (id) DO UPDATE SET clock_ms = excluded.clock_ms, wall_ms = excluded.wall_ms",
      args: [this.now(), Date.now()],
    };
  }
}
