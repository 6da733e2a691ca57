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

/**
 * The database and the configured encryption disagree: `not_encrypted` (a key is configured, the
 * file is plaintext), `encrypted` (no key configured, the file is not plaintext), `wrong_key` (the
 * key does not open the file). Outpost refuses to start rather than convert or lose the buffer.
 */
export class StoreEncryptionError extends Error {
  readonly path: string;
  readonly problem: "not_encrypted" | "encrypted" | "wrong_key";
  constructor(message: string, path: string, problem: StoreEncryptionError["problem"], options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreEncryptionError";
    this.path = path;
    this.problem = problem;
  }
}
