import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { parseReadings } from "../ingest/reading_schema.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Store } from "../store/store.ts";

export interface ReadingsRouteOptions {
  store: Store;
  metrics: Metrics;
  bodyLimitBytes: number;
}

/** `POST /v1/readings`: validate, commit, then answer 202 `{"accepted":N}`. */
export function readingsRoutes(options: ReadingsRouteOptions): Hono {
  const { store, metrics } = options;
  const app = new Hono();
  app.post(
    "/v1/readings",
    bodyLimit({
      maxSize: options.bodyLimitBytes,
      onError: (c) =>
        c.json({ error: "body_too_large", message: `Body is larger than ${options.bodyLimitBytes} bytes` }, 413),
    }),
    async (c) => {
      const type = c.req.header("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        return c.json({ error: "unsupported_media_type", message: "Content-Type must be application/json" }, 415);
      }
      let body: unknown;
      try {
        body = JSON.parse(await c.req.text());
      } catch (error) {
        metrics.readings.inc({ source: "http", result: "invalid" });
        return c.json({ error: "invalid_json", message: `Body is not JSON: ${(error as Error).message}` }, 400);
      }
      const parsed = parseReadings(body);
      if (!parsed.ok) {
        metrics.readings.inc({ source: "http", result: "invalid" });
        return c.json({ error: "invalid_readings", issues: parsed.issues.slice(0, 100) }, 400);
      }
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
