import type { InputIssue } from "../ingest/reading_schema.ts";

/** A body that is not the JSON it should be (including NaN, Infinity, or nesting too deep). */
export class InvalidJsonError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InvalidJsonError";
  }
}

/** Readings refused by validation, each problem with its path. */
export class InvalidReadingsError extends Error {
  readonly issues: readonly InputIssue[];
  constructor(issues: readonly InputIssue[]) {
    super(`${issues.length} problem(s) in the readings`);
    this.name = "InvalidReadingsError";
    this.issues = issues;
  }
}

/** An admin route was called without the right token, or admin routes are off. */
export class AdminAuthError extends Error {
  readonly disabled: boolean;
  constructor(disabled: boolean) {
    super(disabled ? "Admin routes are off: set OUTPOST_ADMIN_TOKEN" : "Missing or wrong admin bearer token");
    this.name = "AdminAuthError";
    this.disabled = disabled;
  }
}

/** An ingest request without a valid token (401), or writing a device its token does not name (403). */
export class IngestAuthError extends Error {
  readonly reason: "missing" | "malformed" | "unknown" | "expired" | "store_unreadable" | "device_not_allowed";
  readonly device?: string;
  readonly tokenId?: string;
  constructor(reason: IngestAuthError["reason"], details: { device?: string; tokenId?: string } = {}) {
    super(INGEST_AUTH_MESSAGES[reason](details));
    this.name = "IngestAuthError";
    this.reason = reason;
    if (details.device !== undefined) this.device = details.device;
    if (details.tokenId !== undefined) this.tokenId = details.tokenId;
  }
}

const INGEST_AUTH_MESSAGES: Record<IngestAuthError["reason"], (d: { device?: string; tokenId?: string }) => string> = {
  missing: () => "Ingest needs a token: Authorization: Bearer opt_... (spec.api.ingestAuth is token)",
  malformed: () => "The Authorization header is not Bearer opt_<id>_<secret>",
  unknown: () => "Unknown or revoked ingest token",
  expired: () => "This ingest token's secret was rotated and its grace period is over",
  store_unreadable: () => "The ingest token file cannot be read: see the Outpost log",
  device_not_allowed: (d) =>
    `Token ${d.tokenId} may not write device ${JSON.stringify(d.device)}; nothing in this request was stored`,
};
