import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { LimitsConfig } from "../config/config.ts";
import { type ReadingLimits, readingParser } from "../ingest/reading_schema.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Store } from "../store/store.ts";
import { Admission } from "./admission.ts";
import type { IngestTokens, TokenScope } from "./ingest_tokens.ts";
import { IngestAuthError, InvalidJsonError, InvalidReadingsError } from "./request_errors.ts";
import { decodeUtf8, MAX_JSON_DEPTH, nestsDeeperThan, readBoundedBody } from "./bounded_body.ts";

export interface ReadingsRouteOptions {
  store: Store;
  metrics: Metrics;
  bodyLimitBytes: number;
  limits:
    & ReadingLimits
    & Pick<LimitsConfig, "readingsPerRequest" | "ingestConcurrency" | "ingestQueue" | "ingestQueueWaitMs">;
  /** With `spec.api.ingestAuth: token`: every request needs a token naming each device it writes. */
  tokens: IngestTokens | null;
}

/**
 * `POST /v1/readings`: admit (bounded concurrency), read the body up to its limit, validate at
 * a cost bounded by the limits, commit, then answer 202 `{"accepted":N,"duplicates":D}` where
 * `accepted` counts every reading of the body now held in the store (D of them were already).
 */
export function readingsRoutes(options: ReadingsRouteOptions): Hono {
  const { store, metrics } = options;
  const parse = readingParser(options.limits);
  const { ingestConcurrency, ingestQueue, ingestQueueWaitMs } = options.limits;
  const admission = new Admission(
    { concurrency: ingestConcurrency, queue: ingestQueue, queueWaitMs: ingestQueueWaitMs },
    { what: "ingest requests", queueLimit: "ingestQueue", waitLimit: "ingestQueueWaitMs" },
  );
  const invalid = () => metrics.readings.inc({ source: "http", result: "invalid" });
  const scopes = new WeakMap<Request, TokenScope>();
  const app = new Hono();
  app.post(
    "/v1/readings",
    async function authenticate(c, next) {
      // Before admission: a client without a token takes no queue slot and no body is read.
      if (options.tokens !== null) {
        const result = options.tokens.authenticate(c.req.header("authorization"));
        if (!result.ok) throw new IngestAuthError(result.reason);
        scopes.set(c.req.raw, result.scope);
      }
      await next();
    },
    async function admit(_c, next) {
      const release = await admission.acquire();
      try {
        await next();
      } finally {
        release();
      }
    },
    async (c) => {
      const type = c.req.header("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        invalid();
        throw new HTTPException(415, { message: "Content-Type must be application/json" });
      }
      let text: string;
      try {
        text = decodeUtf8(await readBoundedBody(c.req.raw, options.bodyLimitBytes, "spec.api.bodyLimitBytes"));
      } catch (error) {
        invalid();
        throw error;
      }
      if (nestsDeeperThan(text, MAX_JSON_DEPTH)) {
        invalid();
        throw new InvalidJsonError(`Body nests deeper than ${MAX_JSON_DEPTH} levels`);
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (error) {
        invalid();
        throw new InvalidJsonError(`Body is not JSON: ${(error as Error).message}`, { cause: error });
      }
      const parsed = parse(body);
      if (!parsed.ok) {
        invalid();
        for (const key of parsed.limitKeys ?? []) metrics.limitRefusals.inc({ limit: key });
        throw parsed.limit ?? new InvalidReadingsError(parsed.issues);
      }
      const scope = scopes.get(c.req.raw);
      if (scope !== undefined) refuseForeignDevices(scope, parsed.readings);
      try {
        const result = await store.write(parsed.readings, "http");
        metrics.readings.inc({ source: "http", result: "stored" }, result.inserted);
        if (result.duplicates > 0) metrics.readings.inc({ source: "http", result: "duplicate" }, result.duplicates);
        return c.json({ accepted: parsed.readings.length, duplicates: result.duplicates }, 202);
      } catch (error) {
        metrics.readings.inc({ source: "http", result: "rejected" }, parsed.readings.length);
        throw error;
      }
    },
  );
  return app;
}

/** Throws naming the first device of `readings` that `scope` may not write (one check per distinct device). */
function refuseForeignDevices(scope: TokenScope, readings: readonly { device: string }[]): void {
  const checked = new Set<string>();
  for (const { device } of readings) {
    if (checked.has(device)) continue;
    if (!scope.allows(device)) throw new IngestAuthError("device_not_allowed", { device, tokenId: scope.id });
    checked.add(device);
  }
}
