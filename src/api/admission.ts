import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";

export interface AdmissionBounds {
  /** Run at once. */
  concurrency: number;
  /** Wait at most, beyond those running. */
  queue: number;
  /** A waiter is refused after this long. */
  queueWaitMs: number;
}

/** What the refusals say: the work admitted, and the manifest keys (`spec.limits.<name>`) they name. */
export interface AdmissionNames {
  what: string;
  queueLimit: string;
  waitLimit: string;
}

/**
 * Bounds work whose cost is large and set by the client: up to `concurrency` run; up to `queue`
 * more wait, each at most `queueWaitMs`; the rest are refused with 503, which a client retries.
 * Used for ingest (parsing a 1 MiB body takes several MiB of heap; waiters' bodies stay in the
 * socket) and for reads whose cost grows with what is stored (charts, sorted device listings,
 * pages of readings).
 */
export class Admission {
  readonly #bounds: AdmissionBounds;
  readonly #names: AdmissionNames;
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(bounds: AdmissionBounds, names: AdmissionNames) {
    this.#bounds = bounds;
    this.#names = names;
  }

  /** Runs `task` in a slot (see `acquire`). */
  async run<T>(task: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await task();
    } finally {
      release();
    }
  }

  /** Waits for a slot; returns the function that frees it. Throws LimitExceededError (503). */
  async acquire(): Promise<() => void> {
    const { concurrency, queue, queueWaitMs } = this.#bounds;
    const { what, queueLimit, waitLimit } = this.#names;
    if (this.#running < concurrency) {
      this.#running++;
      return this.#releaser();
    }
    if (this.#waiting.length >= queue) {
      throw new LimitExceededError(
        limitKey(queueLimit),
        queue,
        `${queue} ${what} are already waiting; retry later`,
        503,
      );
    }
    const admitted = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        const index = this.#waiting.indexOf(admit);
        if (index >= 0) this.#waiting.splice(index, 1);
        resolve(false);
      }, queueWaitMs);
      const admit = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#waiting.push(admit);
    });
    if (!admitted) {
      throw new LimitExceededError(
        limitKey(waitLimit),
        queueWaitMs,
        `No slot for ${what} freed within ${queueWaitMs} ms; retry later`,
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
