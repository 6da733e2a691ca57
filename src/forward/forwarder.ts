import type { Client } from "@libsql/client";
import type { ForwardingConfig, OutboxClass } from "../config/config.ts";
import { EgressDeniedError, EgressUnavailableError } from "../egress/errors.ts";
import type { Logger } from "../observability/log.ts";
import { sha256Hex } from "../sha256.ts";
import { moveCursor, readCursor } from "../store/cursors.ts";
import { readingsAfterWithin } from "../store/readings.ts";
import type { Outbox, QueuedItem } from "../store/outbox.ts";
import type { Sink } from "./sinks.ts";

export type SinkState = "idle" | "sending" | "backoff" | "paused";

export interface SinkStatus {
  sink: string;
  destination: string;
  state: SinkState;
  lastError: string | null;
  delivered: number;
  consecutiveFailures: number;
}

export interface ForwarderObserver {
  delivered(sink: string, kind: OutboxClass, count: number): void;
  expired(kind: OutboxClass, count: number): void;
}

const IDLE_POLL_MS = 1_000;
/** Values (JSON characters) of raw readings one batch reads at most. */
const RAW_READ_BYTES = 1024 * 1024;

/**
 * Drains the outbox (and raw readings, when `raw` is on) to each sink: one batch at a time,
 * priority order, released only after the sink confirms. While a sink fails it backs off
 * exponentially with jitter; on recovery the backlog replays in the same order.
 */
export class Forwarder {
  readonly #client: Client;
  readonly #config: ForwardingConfig;
  readonly #outbox: Outbox;
  readonly #log: Logger;
  readonly #observer: ForwarderObserver | null;
  readonly #now: () => number;
  readonly #statuses: SinkStatus[];
  readonly #sleepers = new Set<() => void>();
  readonly finished: Promise<void>;

  constructor(
    client: Client,
    config: ForwardingConfig,
    deps: {
      outbox: Outbox;
      sinks: readonly Sink[];
      log: Logger;
      observer?: ForwarderObserver;
      /** The store's clock (arrival times, TTLs); `Date.now` when absent. */
      now?: () => number;
    },
    signal: AbortSignal,
  ) {
    this.#client = client;
    this.#config = config;
    this.#outbox = deps.outbox;
    this.#log = deps.log;
    this.#observer = deps.observer ?? null;
    this.#now = deps.now ?? Date.now;
    this.#statuses = deps.sinks.map((sink) => ({
      sink: sink.name,
      destination: sink.destination,
      state: "idle",
      lastError: null,
      delivered: 0,
      consecutiveFailures: 0,
    }));
    this.finished = Promise.all([
      ...deps.sinks.map((sink, i) => this.#drain(sink, this.#statuses[i], signal)),
      this.#expireLoop(signal),
    ]).then(async () => {
      for (const sink of deps.sinks) await sink.close();
    });
  }

  status(): SinkStatus[] {
    return this.#statuses.map((status) => ({ ...status }));
  }

  /** New work is queued: wake idle sinks now instead of at their next poll. */
  notify(): void {
    for (const wake of [...this.#sleepers]) wake();
  }

  async #drain(sink: Sink, status: SinkStatus, signal: AbortSignal): Promise<void> {
    let backoffMs = this.#config.backoff.minMs;
    while (!signal.aborted) {
      let batch: Batch;
      try {
        batch = await this.#nextBatch(sink);
      } catch (error) {
        this.#log.error("forward.read_failed", { sink: sink.name, error });
        await this.#sleep(backoffMs, signal);
        continue;
      }
      if (batch.items.length === 0) {
        status.state = "idle";
        await this.#sleep(IDLE_POLL_MS, signal);
        continue;
      }
      status.state = "sending";
      try {
        await sink.send(batch.key, batch.items.map((item) => item.body), signal);
        await this.#release(sink, batch);
        status.delivered += batch.items.length;
        status.consecutiveFailures = 0;
        status.lastError = null;
        backoffMs = this.#config.backoff.minMs;
      } catch (error) {
        if (signal.aborted) break;
        status.state = "backoff";
        status.consecutiveFailures++;
        status.lastError = (error as Error).message;
        let waitMs = backoffMs / 2 + Math.random() * backoffMs / 2;
        if (error instanceof EgressUnavailableError) waitMs = Math.max(waitMs, error.retryAfterMs);
        backoffMs = Math.min(backoffMs * 2, this.#config.backoff.maxMs);
        const level = error instanceof EgressDeniedError ? "error" : "warn";
        this.#log[level]("forward.send_failed", {
          sink: sink.name,
          items: batch.items.length,
          waitMs: Math.round(waitMs),
          error,
        });
        await this.#sleep(waitMs, signal);
      }
    }
  }

  async #nextBatch(sink: Sink): Promise<Batch> {
    const limit = this.#config.batchSize;
    const items: BatchItem[] = (await this.#outbox.next(sink.name, limit)).map((item) => ({
      ...item,
      readingId: null,
    }));
    let rawCursor: number | null = null;
    if (this.#config.raw && items.length < limit) {
      rawCursor = await readCursor(this.#client, `raw:${sink.name}`);
      const raw = await this.#rawReadings(sink.name, rawCursor, limit - items.length);
      items.push(...raw);
    }
    const key = sha256Hex(items.map((item) => item.id).join("\n")).slice(0, 32);
    return { key, items };
  }

  async #release(sink: Sink, batch: Batch): Promise<void> {
    const queued = batch.items.filter((item) => item.readingId === null);
    await this.#outbox.delivered(sink.name, queued.map((item) => item.rowId));
    const readings = batch.items.filter((item) => item.readingId !== null);
    if (readings.length > 0) {
      await moveCursor(this.#client, `raw:${sink.name}`, Math.max(...readings.map((item) => item.readingId!)));
    }
    const counts = new Map<OutboxClass, number>();
    for (const item of batch.items) counts.set(item.kind, (counts.get(item.kind) ?? 0) + 1);
    for (const [kind, count] of counts) this.#observer?.delivered(sink.name, kind, count);
  }

  /** Raw readings after the sink's cursor; those past the reading TTL are skipped and counted. */
  async #rawReadings(sink: string, cursor: number, limit: number): Promise<BatchItem[]> {
    const expiredBefore = this.#now() - this.#config.ttlMs.reading;
    // By size too: a batch is bounded by its bytes later, but 1,000 readings of 64 long sensor names
    // would be 9.5 MB read at once.
    const { readings } = await readingsAfterWithin(this.#client, cursor, limit, RAW_READ_BYTES);
    const items: BatchItem[] = [];
    let expired = 0;
    for (const reading of readings) {
      if (reading.receivedMs < expiredBefore) {
        expired++;
        continue;
      }
      const id = `reading/${reading.device}/${reading.ts}`;
      const body = `{"id":${JSON.stringify(id)},"kind":"reading","device":${
        JSON.stringify(reading.device)
      },"ts":${reading.ts},"values":${reading.valuesJson}}`;
      items.push({ rowId: reading.id, id, kind: "reading", body, readingId: reading.id });
    }
    if (expired > 0) {
      this.#observer?.expired("reading", expired);
      if (items.length === 0) await moveCursor(this.#client, `raw:${sink}`, readings[readings.length - 1].id);
    }
    return items;
  }

  async #expireLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        const expired = await this.#outbox.expire();
        for (const [kind, count] of Object.entries(expired)) this.#observer?.expired(kind as OutboxClass, count);
      } catch (error) {
        this.#log.warn("forward.expire_failed", { error });
      }
      await this.#sleep(30_000, signal, false);
    }
  }

  /** Waits `ms`, or until `notify()` (when `wakeable`) or abort. */
  #sleep(ms: number, signal: AbortSignal, wakeable = true): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#sleepers.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      if (wakeable) this.#sleepers.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

interface BatchItem extends QueuedItem {
  /** Set for raw readings (their position in `readings`), null for outbox items. */
  readingId: number | null;
}

interface Batch {
  key: string;
  items: BatchItem[];
}
