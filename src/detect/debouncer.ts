export interface DebounceOptions {
  /** An episode starts when `onCount` of the last `ofLast` readings exceed the threshold... */
  onCount: number;
  ofLast: number;
  /** ...and ends after `clearAfter` readings in a row do not. */
  clearAfter: number;
}

export interface DebounceStep {
  anomaly: boolean;
  started: boolean;
  ended: boolean;
}

/** What a debouncer was fed, as far as it still matters (to resume from after a restart). */
export interface DebounceSnapshot {
  /** Its latest inputs since it was last settled, oldest first (at most `ofLast`). */
  recent: boolean[];
  /** The quiet inputs in a row at the end, up to `clearAfter`. */
  quietRun: number;
}

/** k-of-n onset with a hysteresis release, per device. */
export class Debouncer {
  readonly #options: DebounceOptions;
  #history: boolean[];
  #anomaly: boolean;
  #quietRun: number;

  /**
   * `recent` are the latest exceed flags, oldest first (to resume after a restart); `quietRun`, when
   * known, the quiet ones in a row at the end (else counted in `recent`).
   */
  constructor(
    options: DebounceOptions,
    restored: { anomaly: boolean; recent: boolean[]; quietRun?: number } = { anomaly: false, recent: [] },
  ) {
    this.#options = options;
    this.#history = restored.recent.slice(-options.ofLast);
    this.#anomaly = restored.anomaly;
    this.#quietRun = 0;
    for (const exceed of restored.recent) this.#quietRun = exceed ? 0 : this.#quietRun + 1;
    if (restored.quietRun !== undefined) this.#quietRun = restored.quietRun;
  }

  snapshot(): DebounceSnapshot {
    return { recent: [...this.#history], quietRun: Math.min(this.#quietRun, this.#options.clearAfter) };
  }

  /** An independent copy (a scoring pass works on copies and keeps them only once it has committed). */
  clone(): Debouncer {
    const copy = new Debouncer(this.#options);
    copy.#history = [...this.#history];
    copy.#anomaly = this.#anomaly;
    copy.#quietRun = this.#quietRun;
    return copy;
  }

  get anomaly(): boolean {
    return this.#anomaly;
  }

  /**
   * Ends an anomaly without waiting for quiet readings (the baseline moved, or an operator said
   * so): the next onset needs `onCount` new exceeding readings.
   */
  settle(): void {
    this.#anomaly = false;
    this.#history = [];
    this.#quietRun = 0;
  }

  push(exceed: boolean): DebounceStep {
    this.#history.push(exceed);
    if (this.#history.length > this.#options.ofLast) this.#history.shift();
    this.#quietRun = exceed ? 0 : this.#quietRun + 1;
    if (!this.#anomaly && this.#history.filter(Boolean).length >= this.#options.onCount) {
      this.#anomaly = true;
      return { anomaly: true, started: true, ended: false };
    }
    if (this.#anomaly && this.#quietRun >= this.#options.clearAfter) {
      this.#anomaly = false;
      return { anomaly: false, started: false, ended: true };
    }
    return { anomaly: this.#anomaly, started: false, ended: false };
  }
}
