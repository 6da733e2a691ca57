/** The store is at its hard size limit: refuse new data until retention frees space. */
export class StoreFullError extends Error {
  readonly usedBytes: number;
  readonly limitBytes: number;
  constructor(usedBytes: number, limitBytes: number) {
    super(`Store is full: ${usedBytes} of ${limitBytes} bytes in use`);
    this.name = "StoreFullError";
    this.usedBytes = usedBytes;
    this.limitBytes = limitBytes;
  }
}

/** A commit failed (disk full, database locked, store closed); nothing of the write was kept. */
export class StoreUnavailableError extends Error {
  readonly reason: string;
  constructor(reason: string, options?: ErrorOptions) {
    super(`Store unavailable: ${reason}`, options);
    this.name = "StoreUnavailableError";
    this.reason = reason;
  }
}
