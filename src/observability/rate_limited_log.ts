import type { Logger } from "./log.ts";

/**
 * Logs a repeating failure at most once per interval, with how many were left out in between,
 * so that a flood (failed commits on a full disk, refused connections) is on record without
 * filling the journal.
 */
export class RateLimitedLog {
  readonly #log: Logger;
  readonly #intervalMs: number;
  #last = -Infinity;
  #suppressed = 0;

  constructor(log: Logger, intervalMs: number) {
    this.#log = log;
    this.#intervalMs = intervalMs;
  }

  warn(event: string, fields: Record<string, unknown>): void {
    const now = performance.now();
    if (now - this.#last < this.#intervalMs) {
      this.#suppressed++;
      return;
    }
    this.#log.warn(event, { ...fields, suppressed: this.#suppressed });
    this.#last = now;
    this.#suppressed = 0;
  }
}
