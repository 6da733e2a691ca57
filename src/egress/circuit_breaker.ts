export type CircuitState = "closed" | "open" | "half_open";

export interface CircuitBreakerOptions {
  failureThreshold: number;
  openMs: number;
  onTransition?: (from: CircuitState, to: CircuitState) => void;
}

/**
 * Closed: calls pass; `failureThreshold` consecutive failures open it. Open: calls are refused
 * for `openMs`. Half-open: one probe passes; its success closes the circuit, its failure opens
 * it again.
 */
export class CircuitBreaker {
  readonly #options: CircuitBreakerOptions;
  #state: CircuitState = "closed";
  #failures = 0;
  #openedAt = 0;
  #probing = false;

  constructor(options: CircuitBreakerOptions) {
    this.#options = options;
  }

  get state(): CircuitState {
    if (this.#state === "open" && performance.now() - this.#openedAt >= this.#options.openMs) this.#move("half_open");
    return this.#state;
  }

  /** Milliseconds until a call may pass; 0 when it may pass now (and claims the half-open probe). */
  acquire(): number {
    const state = this.state;
    if (state === "closed") return 0;
    if (state === "open") return this.#options.openMs - (performance.now() - this.#openedAt);
    if (this.#probing) return Math.max(1, Math.round(this.#options.openMs / 10));
    this.#probing = true;
    return 0;
  }

  /** The call that claimed the half-open probe did not go out (e.g. the rate limiter refused it). */
  abandon(): void {
    this.#probing = false;
  }

  succeed(): void {
    this.#failures = 0;
    this.#probing = false;
    if (this.#state !== "closed") this.#move("closed");
  }

  fail(): void {
    this.#probing = false;
    this.#failures++;
    if (this.#state === "half_open" || (this.#state === "closed" && this.#failures >= this.#options.failureThreshold)) {
      this.#openedAt = performance.now();
      this.#move("open");
    }
  }

  #move(to: CircuitState): void {
    const from = this.#state;
    this.#state = to;
    this.#options.onTransition?.(from, to);
  }
}
