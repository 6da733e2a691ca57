import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { LimitExceededError } from "../limit_exceeded_error.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import { StoreFullError, StoreUnavailableError } from "../store/errors.ts";

/** Seconds a client should wait before retrying when the store refuses data. */
export const RETRY_AFTER_SECONDS = 5;

/** The one place where errors become HTTP responses; every body is `{"error": code, ...}`. */
export function errorHandler(log: Logger, metrics: Metrics) {
  return function onError(error: Error, c: Context): Response {
    if (error instanceof LimitExceededError) {
      metrics.limitRefusals.inc({ limit: error.key });
      if (error.status === 503) c.header("Retry-After", "1");
      return c.json(error.toJSON(), error.status);
    }
    if (error instanceof StoreFullError) {
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json({ error: "store_full", message: error.message }, 503);
    }
    if (error instanceof StoreUnavailableError) {
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json({ error: "store_unavailable", message: error.message }, 503);
    }
    if (error instanceof HTTPException) {
      return c.json({ error: codeFor(error.status), message: error.message }, error.status as ContentfulStatusCode);
    }
    log.error("api.unhandled_error", { path: c.req.path, error });
    return c.json({ error: "internal_error", message: "Internal error: see the Outpost log" }, 500);
  };
}

function codeFor(status: number): string {
  if (status === 413) return "body_too_large";
  if (status === 415) return "unsupported_media_type";
  if (status === 404) return "not_found";
  if (status === 401) return "unauthorized";
  return "bad_request";
}
