/**
 * Reads whose cost grows with what is stored (charts, sorted device listings) take turns:
 * `spec.limits.heavyReads` at once, the others wait in arrival order (their number is bounded by
 * `spec.limits.connections`), so that many at once cannot hold the event loop or the V8 heap.
 */
/** At most `size` tasks run at once; the others wait in arrival order. */
export class Turns {
  readonly #size: number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    this.#size = size;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#size) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#running++;
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}
