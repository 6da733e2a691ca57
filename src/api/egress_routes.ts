import { Hono } from "hono";
import type { AuditLog } from "../egress/audit.ts";
import { parseLimit, parseTime } from "./query_params.ts";

export interface StatusReport {
  (): Promise<Record<string, unknown>>;
}

/** `GET /v1/status` (forwarding, sinks, circuits, outbox) and `GET /v1/egress/audit?since=&limit=&after=`. */
export function egressRoutes(options: { audit: AuditLog; status: StatusReport }): Hono {
  const app = new Hono();
  app.get("/v1/status", async (c) => c.json(await options.status()));
  app.get("/v1/egress/audit", async (c) => {
    const since = parseTime(c.req.query("since"), 0);
    const limit = parseLimit(c.req.query("limit"), 100, 10_000);
    const after = Number(c.req.query("after") ?? 0);
    if (since === null) {
      return c.json({ error: "bad_request", message: "since must be RFC 3339 or epoch milliseconds" }, 400);
    }
    if (limit === null) {
      return c.json({ error: "bad_request", message: "limit must be an integer from 1 to 10000" }, 400);
    }
    if (!Number.isInteger(after) || after < 0) {
      return c.json({ error: "bad_request", message: "after must be a row id" }, 400);
    }
    const rows = await options.audit.list(since, limit, after);
    return c.json({
      entries: rows.map((row) => ({ ...row, ts: new Date(row.tsMs).toISOString() })),
      // Pass as ?after= to read the next page.
      nextAfter: rows.length === limit ? rows[rows.length - 1].id : null,
    });
  });
  return app;
}
