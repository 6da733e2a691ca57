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
