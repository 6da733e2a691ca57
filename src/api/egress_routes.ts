import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { AuditLog } from "../egress/audit.ts";
import { parseLimit, parseTime } from "./query_params.ts";

export interface StatusReport {
  (): Promise<Record<string, unknown>>;
}

const badRequest = (message: string) => new HTTPException(400, { message });

/**
 * `GET /v1/status` (forwarding, sinks, circuits, outbox) and
 * `GET /v1/egress/audit?since=&limit=&after=` (oldest first) or `&order=desc&before=` (newest first).
 */
export function egressRoutes(options: { audit: AuditLog; status: StatusReport }): Hono {
  const app = new Hono();
  app.get("/v1/status", async (c) => c.json(await options.status()));
  app.get("/v1/egress/audit", async (c) => {
    const since = parseTime(c.req.query("since"), 0);
    if (since === null) throw badRequest("since must be RFC 3339 or epoch milliseconds");
    const limit = parseLimit(c.req.query("limit"), 100, 10_000);
    if (limit === null) throw badRequest("limit must be an integer from 1 to 10000");
    const order = c.req.query("order") ?? "asc";
    if (order !== "asc" && order !== "desc") throw badRequest("order must be asc or desc");
    const entry = (row: { tsMs: number }) => ({ ...row, ts: new Date(row.tsMs).toISOString() });
    if (order === "desc") {
      if (c.req.query("after") !== undefined) throw badRequest("after pages order=asc; use before with order=desc");
      const beforeText = c.req.query("before");
      const before = beforeText === undefined ? null : Number(beforeText);
      if (before !== null && (!/^[1-9]\d{0,15}$/.test(beforeText!) || !Number.isSafeInteger(before))) {
        throw badRequest("before must be a row id");
      }
      const rows = await options.audit.listNewest(since, limit + 1, before);
      const page = rows.slice(0, limit);
      return c.json({
        entries: page.map(entry),
        // Pass as ?before= (with order=desc) to read the next, older page.
        nextBefore: rows.length > limit ? page[page.length - 1].id : null,
      });
    }
    if (c.req.query("before") !== undefined) throw badRequest("before pages order=desc; use after with order=asc");
    const after = Number(c.req.query("after") ?? 0);
    if (!Number.isInteger(after) || after < 0) throw badRequest("after must be a row id");
    const rows = await options.audit.list(since, limit, after);
    return c.json({
      entries: rows.map(entry),
      // Pass as ?after= to read the next page.
      nextAfter: rows.length === limit ? rows[rows.length - 1].id : null,
    });
  });
  return app;
}
