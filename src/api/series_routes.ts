/**
 * `GET /v1/devices/{device}/series`: a device's readings downsampled in the store for charts
 * (the console's device view): per bucket each sensor's min and max, the highest score, the
 * anomalous readings, and the episodes that overlap the range. Read-only, like the other reads.
 */
import type { Client } from "@libsql/client";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";
import { eventsOverlapping, readingSeries } from "../store/reading_series.ts";
import { parseLimit, parseTime } from "./query_params.ts";
import type { Admission } from "./admission.ts";

/** Buckets one request may ask for; the default fills a chart about as wide as a laptop screen. */
export const MAX_BUCKETS = 2_000;
const DEFAULT_BUCKETS = 600;
const DEFAULT_RANGE_MS = 3_600_000;
const MAX_EVENTS = 1_000;

const badRequest = (message: string) => new HTTPException(400, { message });

export function seriesRoutes(
  options: { client: Client; maxSensors: number; maxRangeHours: number; heavyReads: Admission },
): Hono {
  const app = new Hono();
  app.get("/v1/devices/:device/series", async (c) => {
    const device = c.req.param("device");
    const to = parseTime(c.req.query("to"), Date.now());
    if (to === null) throw badRequest("to must be RFC 3339 or epoch milliseconds");
    const from = parseTime(c.req.query("from"), to - DEFAULT_RANGE_MS);
    if (from === null) throw badRequest("from must be RFC 3339 or epoch milliseconds");
    if (from >= to) throw badRequest("from must be before to");
    if (to - from > options.maxRangeHours * 3_600_000) {
      throw new LimitExceededError(
        limitKey("seriesRangeHours"),
        options.maxRangeHours,
        `A series spans at most ${options.maxRangeHours} hours; ask for a shorter range`,
      );
    }
    const buckets = parseLimit(c.req.query("buckets"), DEFAULT_BUCKETS, MAX_BUCKETS);
    if (buckets === null) throw badRequest(`buckets must be an integer from 1 to ${MAX_BUCKETS}`);
    const query = { device, fromTs: from, toTs: to };
    // Made and written out in a slot: the answer can be megabytes (2,000 buckets of 64 sensors).
    return await options.heavyReads.run(async () => {
      const [series, events] = await Promise.all([
        readingSeries(options.client, { ...query, buckets, maxSensors: options.maxSensors }),
        eventsOverlapping(options.client, { ...query, limit: MAX_EVENTS }),
      ]);
      return c.json({
        device,
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        ...series,
        events: events.map((event) => ({
          id: event.id,
          startMs: event.startTs,
          endMs: event.endTs,
          peakScore: event.peakScore,
          sensors: event.topSensors,
        })),
      });
    });
  });
  return app;
}
