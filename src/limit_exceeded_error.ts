/**
 * A client went past one of the bounds in `spec.limits` (or `spec.api.bodyLimitBytes`). Carries
 * the manifest key so that every refusal names it; `status` is the HTTP answer (4xx, or 503 for
 * overload, which a client may retry).
 */
export class LimitExceededError extends Error {
  /** The manifest key of the bound, e.g. `spec.limits.readingsPerRequest`. */
  readonly key: string;
  readonly limit: number;
  readonly status: 400 | 413 | 422 | 503;

  constructor(key: string, limit: number, message: string, status: 400 | 413 | 422 | 503 = 400) {
    super(message);
    this.name = "LimitExceededError";
    this.key = key;
    this.limit = limit;
    this.status = status;
  }

  /** The JSON body every refusal carries. */
  toJSON(): { error: "limit_exceeded"; limit: string; max: number; message: string } {
    return { error: "limit_exceeded", limit: this.key, max: this.limit, message: this.message };
  }
}

/** `spec.limits.<name>`: the manifest key of a limit. */
export function limitKey(name: string): string {
  return `spec.limits.${name}`;
}
