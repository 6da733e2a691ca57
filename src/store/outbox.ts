/**
 * The outbox: what waits to leave the device, in the same libSQL file as the readings.
 *
 * Rules this module always keeps:
 * 1. Priority classes, highest first: alert (0) > event (1) > aggregate (2) > reading (3).
 *    Raw readings are not copied here: they are read from `readings` behind a cursor per sink.
 * 2. Every item has a stable id; enqueueing an id that is already waiting is a no-op.
 * 3. Delivery is at-least-once: an item leaves the outbox only after every sink it waits for has
 *    confirmed it (HTTP 2xx, MQTT PUBACK). A crash before that means it is sent again.
 * 4. Order: highest priority first, oldest first within a class.
 * 5. Bounded: when the items exceed `maxBufferBytes`, the oldest items of the lowest priority
 *    present are dropped first; an alert is dropped only when nothing but alerts is left.
 * 6. Items past their class's TTL are dropped. Every drop is counted by class and reason.
 * 7. With no sink configured (egress disabled) items are kept for whichever sink comes later,
 *    under the same bound and TTLs; aggregation itself waits behind its cursor until a sink is
 *    configured, then folds the readings still in the store.
 */
import type { Client, InStatement } from "@libsql/client";
import { OUTBOX_CLASSES, type OutboxClass } from "../config/config.ts";

export const PRIORITY: Readonly<Record<OutboxClass, number>> = { alert: 0, event: 1, aggregate: 2, reading: 3 };
/** One bit per sink in `pending_sinks`. */
export const SINK_BITS = { http: 1, mqtt: 2 } as const;
export type SinkName = keyof typeof SINK_BITS;
const ALL_SINKS = SINK_BITS.http | SINK_BITS.mqtt;

export interface OutboxItem {
  /** Stable id: the receiver drops duplicates by it. */
  id: string;
  kind: OutboxClass;
  /** Fields sent with the item besides `id` and `kind` (`device`, ...). */
  fields: Record<string, unknown>;
}

export interface QueuedItem {
  rowId: number;
  id: string;
  kind: OutboxClass;
  body: string;
}

export type DropReason = "overflow" | "expired";

export interface OutboxOptions {
  sinks: readonly SinkName[];
  ttlMs: Readonly<Record<OutboxClass, number>>;
  maxBufferBytes: number;
  onDrop?: (kind: OutboxClass, reason: DropReason, count: number) => void;
  /** The store's clock: creation and expiry times do not follow wall-clock steps. `Date.now` when absent. */
  now?: () => number;
}

export class Outbox {
  readonly #client: Client;
  readonly #options: OutboxOptions;
  readonly #pendingMask: number;
  readonly #now: () => number;

  constructor(client: Client, options: OutboxOptions) {
    this.#client = client;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    const mask = options.sinks.reduce((bits, sink) => bits | SINK_BITS[sink], 0);
    this.#pendingMask = mask === 0 ? ALL_SINKS : mask;
  }

  /** Forgets sinks that are no longer configured (only when at least one sink is). */
  async reconcileSinks(): Promise<void> {
    if (this.#options.sinks.length === 0) return;
    await this.#client.batch([
      { sql: "UPDATE outbox SET pending_sinks = pending_sinks & ?", args: [this.#pendingMask] },
      "DELETE FROM outbox WHERE pending_sinks = 0",
    ], "write");
  }

  /** INSERT statements for the items, for callers that commit them with other work. */
  statements(items: readonly OutboxItem[], nowMs = this.#now()): InStatement[] {
    return items.map((item) => {
      const body = JSON.stringify({ id: item.id, kind: item.kind, ...item.fields });
      return {
        sql: `INSERT OR IGNORE INTO outbox (priority, kind, item_id, created_ms, expires_ms, pending_sinks, bytes, body)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        args: [
          PRIORITY[item.kind],
          item.kind,
          item.id,
          nowMs,
          nowMs + this.#options.ttlMs[item.kind],
          this.#pendingMask,
          body.length,
          body,
        ],
      };
    });
  }

  /** The `pending_sinks` bits a new item starts with. */
  get pendingMask(): number {
    return this.#pendingMask;
  }

  async enqueue(items: readonly OutboxItem[]): Promise<void> {
    if (items.length === 0) return;
    await this.#client.batch(this.statements(items), "write");
    await this.enforceBound();
  }

  /** Up to `limit` items waiting for `sink`: highest priority first, oldest first within it. */
  async next(sink: SinkName, limit: number): Promise<QueuedItem[]> {
    const result = await this.#client.execute({
      sql: `SELECT id, item_id, kind, body FROM outbox WHERE pending_sinks & ? != 0 AND expires_ms > ?
            ORDER BY priority, id LIMIT ?`,
      args: [SINK_BITS[sink], this.#now(), limit],
    });
    return result.rows.map((row) => ({
      rowId: Number(row.id),
      id: String(row.item_id),
      kind: String(row.kind) as OutboxClass,
      body: String(row.body),
    }));
  }

  /** Marks items delivered to `sink`; an item no sink waits for any more is released. */
  async delivered(sink: SinkName, rowIds: readonly number[]): Promise<void> {
    if (rowIds.length === 0) return;
    const placeholders = "?,".repeat(rowIds.length).slice(0, -1);
    await this.#client.batch([
      {
        sql: `UPDATE outbox SET pending_sinks = pending_sinks & ~? WHERE id IN (${placeholders})`,
        args: [SINK_BITS[sink], ...rowIds],
      },
      { sql: `DELETE FROM outbox WHERE pending_sinks = 0 AND id IN (${placeholders})`, args: [...rowIds] },
    ], "write");
  }

  /** Drops items past their TTL; returns the count by class. */
  async expire(nowMs = this.#now()): Promise<Partial<Record<OutboxClass, number>>> {
    const result = await this.#client.execute({
      sql: "DELETE FROM outbox WHERE expires_ms <= ? RETURNING kind",
      args: [nowMs],
    });
    return this.#countDrops(result.rows.map((row) => String(row.kind) as OutboxClass), "expired");
  }

  /** Drops the oldest items of the lowest priority present until the outbox fits its bound. */
  async enforceBound(): Promise<Partial<Record<OutboxClass, number>>> {
    const dropped: OutboxClass[] = [];
    while (true) {
      const excess = (await this.bytes()) - this.#options.maxBufferBytes;
      if (excess <= 0) break;
      const result = await this.#client.execute({
        // Oldest rows of the lowest priority present, just enough of them to cover the excess.
        sql: `DELETE FROM outbox WHERE id IN (
                SELECT id FROM (
                  SELECT id, bytes, sum(bytes) OVER (ORDER BY id) AS running FROM outbox
                  WHERE priority = (SELECT max(priority) FROM outbox)
                ) WHERE running - bytes < ?
              ) RETURNING kind`,
        args: [excess],
      });
      if (result.rows.length === 0) break;
      for (const row of result.rows) dropped.push(String(row.kind) as OutboxClass);
    }
    return this.#countDrops(dropped, "overflow");
  }

  async bytes(): Promise<number> {
    const result = await this.#client.execute("SELECT coalesce(sum(bytes), 0) AS bytes FROM outbox");
    return Number(result.rows[0].bytes);
  }

  /** Items waiting, by class. */
  async depth(): Promise<Record<OutboxClass, number>> {
    const result = await this.#client.execute("SELECT kind, count(*) AS n FROM outbox GROUP BY kind");
    const depth = Object.fromEntries(OUTBOX_CLASSES.map((kind) => [kind, 0])) as Record<OutboxClass, number>;
    for (const row of result.rows) depth[String(row.kind) as OutboxClass] = Number(row.n);
    return depth;
  }

  #countDrops(kinds: OutboxClass[], reason: DropReason): Partial<Record<OutboxClass, number>> {
    const counts: Partial<Record<OutboxClass, number>> = {};
    for (const kind of kinds) counts[kind] = (counts[kind] ?? 0) + 1;
    for (const [kind, count] of Object.entries(counts)) this.#options.onDrop?.(kind as OutboxClass, reason, count);
    return counts;
  }
}
