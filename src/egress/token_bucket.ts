/** A token bucket: `burst` tokens, refilled at `perSecond`. */
export class TokenBucket {
  readonly #perSecond: number;
  readonly #burst: number;
  #tokens: number;
  #refilledAt = performance.now();

  constructor(perSecond: number, burst: number) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new RangeError(`Invalid token bucket: ${perSecond}/s, burst ${burst}`);
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#tokens = burst;
  }

  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  /** Takes a token: 0 when taken, else the milliseconds until one is available. */
  take(): number {
    this.#refill();
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.#tokens) / this.#perSecond) * 1000);
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#refilledAt) / 1000) * this.#perSecond);
    this.#refilledAt = now;
  }
}
