/**
 * Small JSON state files under the data dir (crash markers, quarantined devices, deactivated
 * models). Written synchronously and atomically (a temporary file renamed over the old one): the
 * files are tiny, and a reader never sees half a file. No fsync: they must survive a process
 * crash, which the page cache does; a power cut may lose the last change.
 */
import { dirname } from "node:path";

/** The parsed file, or `fallback` when it does not exist or cannot be parsed. */
export function readJsonState<T>(path: string, fallback: T): T {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return fallback;
    throw error;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

export function writeJsonState(path: string, value: unknown): void {
  Deno.mkdirSync(dirname(path), { recursive: true });
  const staging = `${path}.tmp`;
  Deno.writeTextFileSync(staging, JSON.stringify(value, null, 1) + "\n");
  Deno.renameSync(staging, path);
}

export function removeJsonState(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
