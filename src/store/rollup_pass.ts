/**
 * Keeps the per-minute rollups (src/store/reading_rollups.ts) behind the writer: folds the
 * readings committed after its cursor, a bounded pass at a time, and rebuilds the minutes that
 * retention cut.
 *
 * Why behind the writer and not in the ingest commit: that commit is what every acknowledgement
 * waits for (fsync'd, one transaction for all pending requests). A reading may fall in any minute,
 * so folding there could add up to `sensorsPerReading` upserted rows per reading (a client sending
 * one reading per minute would multiply each commit's work), and duplicates would have to be told
 * apart before the commit instead of after it. Behind a cursor, like the scorer and the aggregator,
 * the ingest path is unchanged, and a series reads the few readings above the cursor raw. The
 * aggregator's windows cannot serve: they exist only while a sink is configured, and leave the
 * store once closed.
 *
 * It shares the event loop with ingest: while commits keep arriving, passes are small
 * (BUSY_READINGS_PER_PASS: each holds the loop well under a millisecond, where a pass of 1,000
 * readings held it for several and put that into the tail of commit-to-flag) and each full pass is
 * followed by a pause 19 times as long as it took (about 5% of the loop at most); when ingest is
 * quiet, e.g. during the backfill of a database from before rollups, passes are full-sized and
 * the next follows at once.
 * Nothing waits for it: readiness does not, and a series is exact at any lag.
 */
import type { Client } from "@libsql/client";
import type { Logger } from "../observability/log.ts";
import { RateLimitedLog } from "../observability/rate_limited_log.ts";
import { cursorStatement, readCursor } from "./cursors.ts";
import { commitDerived } from "./derived_commit.ts";
import {
  cutMinutes,
  foldMinutes,
  foldReadingsAfter,
  mergeStatements,
  rebuildStatements,
  ROLLUP_CURSOR,
} from "./reading_rollups.ts";

/**
 * Readings one pass folds: a pass blocks the event loop while it runs (a few ms), and holds their
 * JSON at once, up to FOLD_BYTES at a time (0.2 MB for 8 sensors).
 */
export const READINGS_PER_PASS = 1_000;
/**
 * Values (JSON characters) one commit of a fold reads at most: 1,000 readings of 64 sensors with
 * 128-character names are 9.5 MB, several times that parsed; 100 such readings fit.
 */
const FOLD_BYTES = 1024 * 1024;
/** Readings one pass folds while ingest is busy (see the module comment). */
export const BUSY_READINGS_PER_PASS = 100;
/** Minutes one rebuild commits; most minutes retention cut have no reading left. */
const MINUTES_PER_REBUILD = 100;
/** Folding waits this long after a commit, so that one pass covers many commits. */
const AFTER_COMMIT_MS = 1_000;
/** Retention runs every minute (src/store/store.ts); cut minutes are looked for as often. */
const REBUILD_INTERVAL_MS = 60_000;
/** A failed fold or rebuild is tried again after this long. */
const RETRY_MS = 5_000;
/** The share of the event loop a catch-up may take while ingest is busy... */
const BUSY_SHARE = 0.05;
/** ...which it is while a commit came within this long. */
const BUSY_WINDOW_MS = 1_000;

/** One fold or rebuild at a time over the rollups; `catchUp` runs them without pausing. */
export class RollupPass {
  readonly #client: Client;
  readonly #maxSensors: number;

  constructor(client: Client, options: { maxSensors: number }) {
    this.#client = client;
    this.#maxSensors = options.maxSensors;
  }

  /**
   * Folds up to `limit` readings after the cursor, in commits of at most FOLD_BYTES of their values;
   * returns how many (fewer than `limit` when no more are waiting).
   */
  async fold(limit = READINGS_PER_PASS): Promise<number> {
    let folded = 0;
    const wanted = Math.min(limit, READINGS_PER_PASS);
    // Only this pass moves the cursor: read once, then it is where each commit left it.
    let cursor = await readCursor(this.#client, ROLLUP_CURSOR);
    while (folded < wanted) {
      const fold = await foldReadingsAfter(this.#client, cursor, wanted - folded, this.#maxSensors, FOLD_BYTES);
      if (fold.readings === 0) break;
      await commitDerived(this.#client, [
        ...mergeStatements(fold, this.#maxSensors),
        cursorStatement(ROLLUP_CURSOR, fold.lastId),
      ]);
      folded += fold.readings;
      cursor = fold.lastId;
      if (!fold.cut) break; // all that was asked for, or all that was waiting
    }
    return folded;
  }

  /** Rebuilds up to MINUTES_PER_REBUILD minutes that retention cut; returns how many. */
  async rebuild(): Promise<number> {
    const minutes = await cutMinutes(this.#client, MINUTES_PER_REBUILD);
    if (minutes.length === 0) return 0;
    // Only this pass moves the cursor, so it stays where it is until the commit.
    const cursor = await readCursor(this.#client, ROLLUP_CURSOR);
    const fold = await foldMinutes(this.#client, minutes, cursor, this.#maxSensors);
    await commitDerived(this.#client, rebuildStatements(minutes, fold, this.#maxSensors));
    return minutes.length;
  }

  /** Folds and rebuilds until nothing is left (tests, benchmarks). */
  async catchUp(): Promise<void> {
    while (await this.fold() === READINGS_PER_PASS);
    while (await this.rebuild() === MINUTES_PER_REBUILD);
  }
}

export interface Rollups {
  /** Settles once `signal` aborted and the pass under way ended; before the store closes. */
  readonly finished: Promise<void>;
}

/** Starts keeping the rollups of `store`'s readings until `signal` aborts. */
export function startRollups(
  deps: { store: { readonly client: Client; onCommit(listener: () => void): void }; log: Logger },
  options: { maxSensors: number; signal: AbortSignal },
): Rollups {
  const { store, log } = deps;
  const { signal } = options;
  const pass = new RollupPass(store.client, options);
  const failures = new RateLimitedLog(log, 60_000);
  let lastCommitAt = -Infinity;
  let foldDue = true;
  let wake: (() => void) | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  store.onCommit(() => {
    lastCommitAt = performance.now();
    timer ??= setTimeout(() => {
      timer = undefined;
      foldDue = true;
      wake?.();
    }, AFTER_COMMIT_MS);
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort, { once: true });

  const busy = () => performance.now() - lastCommitAt < BUSY_WINDOW_MS;
  /**
   * Runs `step` (which does at most `limit`, smaller while ingest is busy) until it does less than
   * that, pausing after each step while ingest is busy.
   */
  const repeat = async (
    step: (limit: number) => Promise<number>,
    limit: (busy: boolean) => number,
    yieldWhen: () => boolean = () => false,
  ): Promise<number> => {
    let total = 0;
    while (!signal.aborted && !yieldWhen()) {
      const began = performance.now();
      const wasBusy = busy();
      const full = limit(wasBusy);
      const done = await step(full);
      total += done;
      if (done < full) break;
      const took = performance.now() - began;
      await pause(wasBusy ? took * (1 / BUSY_SHARE - 1) : 0, signal);
    }
    return total;
  };

  const run = async () => {
    let rebuiltAt = -Infinity;
    const rebuildDue = () => performance.now() - rebuiltAt >= REBUILD_INTERVAL_MS;
    while (!signal.aborted) {
      let failed = false;
      try {
        if (foldDue) {
          foldDue = false;
          const began = performance.now();
          // A fold that cannot catch up (ingest faster than its share) still lets the rebuild run on
          // time: retention's cut minutes would otherwise keep their rollups for ever.
          const folded = await repeat(
            (limit) => pass.fold(limit),
            (busy) => busy ? BUSY_READINGS_PER_PASS : READINGS_PER_PASS,
            () => rebuildDue() && (foldDue = true),
          );
          if (folded >= 50 * READINGS_PER_PASS) {
            log.info("store.rollups_caught_up", { readings: folded, ms: Math.round(performance.now() - began) });
          }
        }
        if (rebuildDue()) {
          rebuiltAt = performance.now();
          const minutes = await repeat(() => pass.rebuild(), () => MINUTES_PER_REBUILD);
          if (minutes > 0) log.info("store.rollups_rebuilt", { minutes });
        }
      } catch (error) {
        // Retried shortly (a full disk, a lock held elsewhere); a series stays exact meanwhile.
        failed = true;
        foldDue = true;
        failures.warn("store.rollup_failed", { error });
      }
      if (signal.aborted) break;
      if (foldDue && !failed) continue;
      await new Promise<void>((resolve) => {
        const waitMs = failed ? RETRY_MS : rebuiltAt + REBUILD_INTERVAL_MS - performance.now();
        const until = setTimeout(resolve, Math.max(0, waitMs));
        wake = () => {
          clearTimeout(until);
          resolve();
        };
      });
      wake = null;
    }
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  };
  return { finished: run() };
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
