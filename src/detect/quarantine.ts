/**
 * Devices taken out of detection because their work may kill the process (a calibration that
 * was running when the process died). A quarantined device keeps its readings stored and served
 * but is neither scored nor calibrated until an admin recalibrates it. The `devices` row's state
 * (`quarantined`) is the truth; the reasons are kept here, in `<dataDir>/detect/quarantine.json`.
 */
import { readJsonState, writeJsonState } from "./json_state_file.ts";

export interface QuarantineEntry {
  reason: string;
  /** RFC 3339 time the device was quarantined. */
  since: string;
}

export class Quarantine {
  readonly #path: string | null;
  readonly #entries: Map<string, QuarantineEntry>;

  /** Without a path (tests, benchmarks) reasons are kept in memory only. */
  constructor(path: string | null) {
    this.#path = path;
    this.#entries = new Map(Object.entries(path ? readJsonState<Record<string, QuarantineEntry>>(path, {}) : {}));
  }

  get size(): number {
    return this.#entries.size;
  }

  get(device: string): QuarantineEntry | undefined {
    return this.#entries.get(device);
  }

  add(device: string, reason: string): QuarantineEntry {
    const entry = { reason, since: new Date().toISOString() };
    this.#entries.set(device, entry);
    this.#save();
    return entry;
  }

  remove(device: string): void {
    if (this.#entries.delete(device)) this.#save();
  }

  /** Makes the reasons match the devices the store has quarantined (after a crash between the two). */
  reconcile(quarantinedInStore: readonly string[]): void {
    const inStore = new Set(quarantinedInStore);
    let changed = false;
    for (const device of this.#entries.keys()) {
      if (inStore.has(device)) continue;
      this.#entries.delete(device);
      changed = true;
    }
    for (const device of inStore) {
      if (this.#entries.has(device)) continue;
      this.#entries.set(device, { reason: "reason not recorded", since: new Date().toISOString() });
      changed = true;
    }
    if (changed) this.#save();
  }

  #save(): void {
    if (this.#path) writeJsonState(this.#path, Object.fromEntries(this.#entries));
  }
}
