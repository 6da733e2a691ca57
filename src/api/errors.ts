import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Logger } from "../observability/log.ts";
import { StoreFullError, StoreUnavailableError } from "../store/errors.ts";

/** Seconds a client should wait before retrying when the store refuses data. */
export const RETRY_AFTER_SECONDS = 5;

/** The one place where errors become HTTP responses; every body is `{"error": code, ...}`. */
export function errorHandler(log: Logger) {
  return function onError(error: Error, c: Context): Response {
    if (error instanceof StoreFullError) {
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json({ error: "store_full", message: error.message }, 503);
    }
    if (error instanceof StoreUnavailableError) {
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json({ error: "store_unavailable", message: error.message }, 503);
    }
    if (error instanceof HTTPException) {
      return c.json({ error: codeFor(error.status), message: error.message }, error.status);
    }
    log.error("api.unhandled_error", { path: c.req.path, error });
    return c.json({ error: "internal_error", message: "Internal error: see the Outpost log" }, 500);
  };
}

function codeFor(status: number): string {
  if (status === 413) return "body_too_large";
  if (status === 415) return "unsupported_media_type";
  if (status === 404) return "not_found";
  return "bad_request";
}
