/**
 * Crash markers. Work that a bad input could turn into a process death (a calibration, a model
 * run, a scoring pass) writes a marker file before it starts and blanks it when it ends, however
 * it ends (return or throw). A marker found at startup therefore names work that was running when
 * the process died; the scorer then quarantines the device, deactivates the model or skips the
 * readings (scorer_recovery.ts), so the same work cannot kill the process a second time.
 *
 * A marker is also left by anything else that ends the process during that work (SIGKILL, an
 * out-of-memory kill caused elsewhere, a power cut): the response is the same, on purpose.
 */
import { join } from "node:path";
import { readJsonState, removeJsonState } from "./json_state_file.ts";

export type WorkMarker =
  | { kind: "pass"; fromId: number; toId: number; startedAt: string }
  | {
    kind: "calibration";
    device: string;
    afterId: number;
    readingId: number;
    readings: number;
    startedAt: string;
  }
  | { kind: "inference"; modelId: number; rows: number; startedAt: string };

/** Without a folder (tests, benchmarks) markers are not written. */
export class WorkMarkers {
  readonly #dir: string | null;
  #ready = false;
  /** Bytes each marker file holds: markers are overwritten in place, never truncated. */
  readonly #lengths = new Map<string, number>();

  constructor(dir: string | null) {
    this.#dir = dir;
  }

  /**
   * Writes the marker and returns the function that blanks it. Throws if the marker cannot be
   * written (a read-only or full data dir): the work must not run unprotected.
   */
  begin(marker: WorkMarker): () => void {
    if (!this.#dir) return () => {};
    if (!this.#ready) {
      Deno.mkdirSync(this.#dir, { recursive: true });
      this.#ready = true;
    }
    const path = join(this.#dir, fileName(marker));
    const text = new TextEncoder().encode(JSON.stringify(marker));
    const length = Math.max(text.length, this.#lengths.get(path) ?? 0);
    this.#lengths.set(path, length);
    overwrite(path, text, length);
    return () => overwrite(path, new Uint8Array(0), length);
  }

  /** Markers left by a process that died during their work. */
  leftovers(): WorkMarker[] {
    const markers: WorkMarker[] = [];
    for (const entry of this.#entries()) {
      if (!entry.isFile || !entry.name.endsWith(".json")) continue;
      const marker = readJsonState<WorkMarker | null>(join(this.#dir!, entry.name), null);
      if (marker && typeof marker === "object" && "kind" in marker) markers.push(marker);
    }
    return markers;
  }

  /** Removes every marker (after recovery has dealt with them). */
  clear(): void {
    for (const entry of this.#entries()) removeJsonState(join(this.#dir!, entry.name));
  }

  #entries(): Deno.DirEntry[] {
    if (!this.#dir) return [];
    try {
      return [...Deno.readDirSync(this.#dir)];
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return [];
      throw error;
    }
  }
}

/**
 * Writes `content` at the start of the file and blanks the rest of its first `length` bytes with
 * spaces; a file of spaces means "nothing running". The files stay: overwriting a block in place
 * costs a fraction of creating and deleting a file (~120 µs per marker on ext4), and truncating
 * one makes ext4 flush it (~2 ms). A marker cut short by a crash does not parse and is ignored.
 */
function overwrite(path: string, content: Uint8Array, length: number): void {
  const bytes = new Uint8Array(length).fill(0x20);
  bytes.set(content);
  const file = Deno.openSync(path, { write: true, create: true });
  try {
    let written = 0;
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
  } finally {
    file.close();
  }
}

function fileName(marker: WorkMarker): string {
  return marker.kind === "inference" ? `inference-${marker.modelId}.json` : `${marker.kind}.json`;
}
