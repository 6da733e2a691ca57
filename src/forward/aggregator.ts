import type { Client, InStatement } from "@libsql/client";
import type { ForwardingConfig } from "../config/config.ts";
import { nextTurn } from "../event_loop_turn.ts";
import type { Logger } from "../observability/log.ts";
import { cursorStatement, readCursor } from "../store/cursors.ts";
import { commitDerived } from "../store/derived_commit.ts";
import {
  closeWindowsStatements,
  upsertWindowsStatements,
  watermarkStatement,
  type WindowPartial,
} from "../store/aggregate_windows.ts";
import type { Outbox } from "../store/outbox.ts";
import { readingsAfterWithin } from "../store/readings.ts";

const CURSOR = "aggregate";
/**
 * Small passes that yield in between: a pass blocks the event loop while libSQL runs (about
 * 35 µs a reading), and anomaly flags should not wait behind a long one.
 */
const READINGS_PER_PASS = 1_000;
/** Values (JSON characters) one pass reads at most: 1,000 readings of 64 long sensor names are 9.5 MB. */
const PASS_BYTES = 1024 * 1024;

/**
 * Folds committed readings into per-device, per-sensor windows of `aggregateSeconds` by reading
 * time, and moves closed windows into the outbox as `aggregate` items. A window closes once the
 * device has sent a reading past its end plus `graceSeconds` (so replayed history aggregates by
 * its own time), or after `idleCloseSeconds` without a reading. The windows, the outbox items
 * and the cursor over `readings` move in one transaction: a crash repeats nothing and loses nothing.
 */
export class Aggregator {
  readonly #client: Client;
  readonly #config: ForwardingConfig;
  readonly #outbox: Outbox;
  readonly #log: Logger;
  readonly #now: () => number;
  #running: Promise<number> | null = null;
  #again = false;

  constructor(
    client: Client,
    config: ForwardingConfig,
    deps: {
      outbox: Outbox;
      log: Logger; /** The store's clock (idle close); `Date.now` when absent. */
      now?: () => number;
    },
  ) {
    this.#client = client;
    this.#config = config;
    this.#outbox = deps.outbox;
    this.#log = deps.log;
    this.#now = deps.now ?? Date.now;
  }

  /** Runs passes until the cursor has caught up; concurrent calls share the work. */
  catchUp(): Promise<number> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      let total = 0;
      try {
        do {
          this.#again = false;
          let more: boolean;
          do {
            const pass = await this.pass();
            total += pass.folded;
            more = pass.more;
            if (more) await nextTurn();
          } while (more);
        } while (this.#again);
      } finally {
        this.#running = null;
      }
      return total;
    })();
    return this.#running;
  }

  /**
   * One pass over up to 1,000 new readings (and 1 MiB of their values); returns how many it folded
   * and whether more may be waiting.
   */
  async pass(nowMs = this.#now()): Promise<{ folded: number; more: boolean }> {
    const cursor = await readCursor(this.#client, CURSOR);
    const { readings, cut } = await readingsAfterWithin(this.#client, cursor, READINGS_PER_PASS, PASS_BYTES);
    const windowMs = this.#config.aggregateSeconds * 1000;
    const partials = new Map<string, WindowPartial>();
    const watermarks = new Map<string, number>();
    let lastId = cursor;
    for (const { id, device, ts, valuesJson } of readings) {
      const start = Math.floor(ts / windowMs) * windowMs;
      lastId = id;
      watermarks.set(device, Math.max(watermarks.get(device) ?? ts, ts));
      for (const [sensor, value] of Object.entries(JSON.parse(valuesJson) as Record<string, number>)) {
        const key = `${device}\u0000${sensor}\u0000${start}`;
        const partial = partials.get(key);
        if (!partial) {
          partials.set(key, {
            device,
            sensor,
            start,
            firstId: id,
            count: 1,
            min: value,
            max: value,
            sum: value,
            last: value,
            lastTs: ts,
          });
        } else {
          partial.count++;
          partial.min = Math.min(partial.min, value);
          partial.max = Math.max(partial.max, value);
          partial.sum += value;
          if (ts >= partial.lastTs) {
            partial.last = value;
            partial.lastTs = ts;
          }
        }
      }
    }
    const statements: InStatement[] = upsertWindowsStatements([...partials.values()], nowMs);
    const watermark = watermarkStatement(watermarks);
    if (watermark) statements.push(watermark);
    const close = closeWindowsStatements({
      windowMs,
      graceMs: this.#config.graceSeconds * 1000,
      idleBeforeMs: nowMs - this.#config.idleCloseSeconds * 1000,
      nowMs,
      ttlMs: this.#config.ttlMs.aggregate,
      pendingMask: this.#outbox.pendingMask,
    });
    statements.push(...close, cursorStatement(CURSOR, lastId));
    const results = await commitDerived(this.#client, statements);
    const closed = results[results.length - 3].rowsAffected;
    if (closed > 0) {
      this.#log.debug("forward.aggregates_closed", { windows: closed });
      await this.#outbox.enforceBound();
    }
    return { folded: readings.length, more: readings.length === READINGS_PER_PASS || cut };
  }
}
