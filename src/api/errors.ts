import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ModelBundleError } from "../detect/model_bundle.ts";
import { ModelSignatureError } from "../detect/model_signature.ts";
import { ModelUploadError, UploadInProgressError } from "../detect/model_upload.ts";
import { NoPreviousModelError } from "../detect/registry.ts";
import { UnknownDeviceError, UnknownEventError } from "../detect/scorer.ts";
import { LimitExceededError } from "../limit_exceeded_error.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import { StoreFullError, StoreUnavailableError } from "../store/errors.ts";
import { TokenRequestError, TokenStoreError, UnknownTokenError } from "./ingest_tokens.ts";
import { AdminAuthError, IngestAuthError, InvalidJsonError, InvalidReadingsError } from "./request_errors.ts";

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
    if (error instanceof InvalidJsonError) return c.json({ error: "invalid_json", message: error.message }, 400);
    if (error instanceof InvalidReadingsError) return c.json({ error: "invalid_readings", issues: error.issues }, 400);
    if (error instanceof AdminAuthError) {
      if (error.disabled) return c.json({ error: "admin_disabled", message: error.message }, 403);
      c.header("WWW-Authenticate", "Bearer");
      return c.json({ error: "unauthorized", message: error.message }, 401);
    }
    if (error instanceof IngestAuthError) {
      metrics.ingestAuthRefusals.inc({ reason: error.reason });
      if (error.reason === "device_not_allowed") {
        return c.json({ error: error.reason, device: error.device, token: error.tokenId, message: error.message }, 403);
      }
      if (error.reason === "store_unreadable") {
        log.error("api.ingest_tokens_unreadable", {});
        return c.json({ error: "ingest_tokens_unreadable", message: error.message }, 503);
      }
      c.header("WWW-Authenticate", 'Bearer realm="outpost-ingest"');
      return c.json({ error: "unauthorized", reason: error.reason, message: error.message }, 401);
    }
    if (error instanceof TokenRequestError) {
      return c.json({ error: "invalid_token_request", message: error.message }, 400);
    }
    if (error instanceof UnknownTokenError) return c.json({ error: "unknown_token", message: error.message }, 404);
    if (error instanceof TokenStoreError) {
      log.error("api.ingest_tokens_unreadable", { error });
      return c.json({ error: "ingest_tokens_unreadable", message: error.message }, 503);
    }
    if (error instanceof ModelBundleError) {
      return c.json({ error: "invalid_model", message: error.message, issues: error.issues }, 400);
    }
    if (error instanceof ModelSignatureError) {
      return c.json({ error: error.code, reason: error.reason, message: error.message }, 403);
    }
    if (error instanceof ModelUploadError) return c.json({ error: "invalid_upload", message: error.message }, 400);
    if (error instanceof UploadInProgressError) {
      c.header("Retry-After", String(error.retryAfterSeconds));
      return c.json({ error: "upload_in_progress", message: error.message }, 503);
    }
    if (error instanceof NoPreviousModelError) {
      return c.json({ error: "no_previous_model", message: error.message }, 409);
    }
    if (error instanceof UnknownDeviceError) return c.json({ error: "unknown_device", message: error.message }, 404);
    if (error instanceof UnknownEventError) return c.json({ error: "unknown_event", message: error.message }, 404);
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
