/** The destination is not allowed: by the manifest's allowlist, or by Deno's --allow-net. */
export class EgressDeniedError extends Error {
  readonly destination: string;
  readonly layer: "manifest" | "deno";
  constructor(destination: string, layer: "manifest" | "deno", options?: ErrorOptions) {
    super(
      layer === "manifest"
        ? `Egress denied: ${destination} is not in spec.network.egressAllowed`
        : `Egress denied by Deno's --allow-net: ${destination}`,
      options,
    );
    this.name = "EgressDeniedError";
    this.destination = destination;
    this.layer = layer;
  }
}

/** The destination may not be called now (circuit open or rate limit); try after `retryAfterMs`. */
export class EgressUnavailableError extends Error {
  readonly destination: string;
  readonly reason: "circuit_open" | "rate_limited";
  readonly retryAfterMs: number;
  constructor(destination: string, reason: "circuit_open" | "rate_limited", retryAfterMs: number) {
    super(`Egress to ${destination} unavailable: ${reason.replace("_", " ")}, retry in ${retryAfterMs} ms`);
    this.name = "EgressUnavailableError";
    this.destination = destination;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The audit row for a call could not be written, so the call was not made (or, when its outcome
 * could not be recorded, is reported as failed): egress fails closed. The append error is `cause`.
 */
export class EgressAuditError extends Error {
  readonly destination: string;
  constructor(destination: string, options?: ErrorOptions) {
    super(`Egress to ${destination} blocked: its audit row could not be written`, options);
    this.name = "EgressAuditError";
    this.destination = destination;
  }
}
