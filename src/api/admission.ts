import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";

export interface AdmissionLimits {
  ingestConcurrency: number;
  ingestQueue: number;
  ingestQueueWaitMs: number;
}

/**
 * Bounds the ingest requests whose bodies are read and parsed at once (parsing a 1 MiB body
 * takes several MiB of heap). Up to `ingestConcurrency` run; up to `ingestQueue` more wait, each
 * at most `ingestQueueWaitMs`, with their bodies still in the socket; the rest are refused with
 * 503, which a client retries.
 */
export class Admission {
  readonly #limits: AdmissionLimits;
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(limits: AdmissionLimits) {
    this.#limits = limits;
  }

  /** Waits for a slot; returns the function that frees it. Throws LimitExceededError (503). */
  async acquire(): Promise<() => void> {
    if (this.#running < this.#limits.ingestConcurrency) {
      this.#running++;
      return this.#releaser();
    }
    if (this.#waiting.length >= this.#limits.ingestQueue) {
      throw new LimitExceededError(
        limitKey("ingestQueue"),
        this.#limits.ingestQueue,
        `${this.#limits.ingestQueue} ingest requests are already waiting; retry later`,
        503,
      );
    }
    const admitted = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        const index = this.#waiting.indexOf(admit);
        if (index >= 0) this.#waiting.splice(index, 1);
        resolve(false);
      }, this.#limits.ingestQueueWaitMs);
      const admit = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#waiting.push(admit);
    });
    if (!admitted) {
      throw new LimitExceededError(
        limitKey("ingestQueueWaitMs"),
        this.#limits.ingestQueueWaitMs,
        `No ingest slot freed within ${this.#limits.ingestQueueWaitMs} ms; retry later`,
        503,
      );
    }
    return this.#releaser();
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.#running--;
    };
  }
}
