import type { Client, InStatement } from "@libsql/client";
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";

/**
 * The devices the store holds readings of, bounded by `spec.limits.devices`. A write that would
 * add devices beyond the bound is refused whole (nothing of it is stored). Admitted devices are
 * recorded in `known_devices` by the commit that first stores them; retention forgets devices
 * whose readings are all gone. Memory is bounded by the limit.
 */
export class KnownDevices {
  readonly #limit: number;
  /** Devices in `known_devices` (committed). */
  readonly #committed: Set<string>;
  /** Devices admitted by a write whose commit has not succeeded yet. */
  readonly #admitted = new Set<string>();

  private constructor(limit: number, committed: Set<string>) {
    this.#limit = limit;
    this.#committed = committed;
  }

  static async load(client: Client, limit: number): Promise<KnownDevices> {
    const result = await client.execute("SELECT device FROM known_devices");
    return new KnownDevices(limit, new Set(result.rows.map((row) => String(row.device))));
  }

  get count(): number {
    return this.#committed.size + this.#admitted.size;
  }

  /** Admits the devices of a write, or throws LimitExceededError (422) without admitting any. */
  admit(devices: Iterable<string>): void {
    const fresh = new Set<string>();
    for (const device of devices) {
      if (!this.#committed.has(device) && !this.#admitted.has(device)) fresh.add(device);
    }
    if (fresh.size === 0) return;
    if (this.count + fresh.size > this.#limit) {
      throw new LimitExceededError(
        limitKey("devices"),
        this.#limit,
        `The store already holds readings of ${this.count} devices; new device ${
          JSON.stringify(fresh.values().next().value)
        } would pass the bound of ${this.#limit}`,
        422,
      );
    }
    for (const device of fresh) this.#admitted.add(device);
  }

  /** The statement recording the admitted devices among `devices`, to commit with their readings. */
  recordStatement(devices: Iterable<string>, nowMs: number): InStatement | null {
    const args: (string | number)[] = [];
    for (const device of devices) if (this.#admitted.has(device)) args.push(device, nowMs);
    if (args.length === 0) return null;
    return {
      sql: `INSERT OR IGNORE INTO known_devices (device, first_seen_ms) VALUES ${
        "(?,?),".repeat(args.length / 2).slice(0, -1)
      }`,
      args,
    };
  }

  /** After the commit of `devices`: they are known for good. */
  committed(devices: Iterable<string>): void {
    for (const device of devices) {
      if (this.#admitted.delete(device)) this.#committed.add(device);
    }
  }

  /** The commit that was to store `devices` failed: those it admitted are not held any more. */
  failed(devices: Iterable<string>): void {
    for (const device of devices) this.#admitted.delete(device);
  }

  /** Devices retention removed from `known_devices`. */
  forget(devices: Iterable<string>): void {
    for (const device of devices) this.#committed.delete(device);
  }
}
