/**
 * `GET /v1/egress/audit?order=desc&before=`: the audit log newest first, paged by cursor over the
 * whole log (the console's Audit view pages through it), next to the oldest-first `after` paging;
 * bad parameters are 400 naming the parameter. Through the route with the API's error handler.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Hono } from "hono";
import { egressRoutes } from "../src/api/egress_routes.ts";
import { errorHandler } from "../src/api/errors.ts";
import { AuditLog } from "../src/egress/audit.ts";
import { headPath } from "../src/egress/audit_head.ts";
import { AuditKey } from "../src/egress/audit_key.ts";
import { createLogger } from "../src/observability/log.ts";
import { Metrics } from "../src/observability/metrics.ts";
import { Store } from "../src/store/store.ts";

const quiet = createLogger("error", () => {});

Deno.test("the audit log pages newest first with order=desc and before, over every row, and oldest first as before", async () => {
  const dir = await Deno.makeTempDir();
  const store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 10_000 }, quiet);
  try {
    const key = await AuditKey.load({ source: "default", path: join(dir, "keys", "audit.key") }, { create: true });
    const audit = await AuditLog.open(store.client, { key, headPath: headPath(dir), now: () => store.now() });
    for (let i = 0; i < 1_234; i++) {
      void audit.append({ destination: "collector:443", purpose: "forward", bytesOut: i, bytesIn: 0, outcome: "ok" });
    }
    await audit.settled();
    const app = new Hono();
    app.onError(errorHandler(quiet, new Metrics(() => store.stats())));
    app.route("/", egressRoutes({ audit, status: () => Promise.resolve({}) }));
    const get = async (query: string) => {
      const response = await app.request(`/v1/egress/audit?${query}`);
      return { status: response.status, body: await response.json() };
    };

    const ids: number[] = [];
    let before: number | null = null;
    let pages = 0;
    do {
      const { status, body } = await get(`order=desc&limit=100${before === null ? "" : `&before=${before}`}`);
      assert.equal(status, 200);
      ids.push(...body.entries.map((entry: { id: number }) => entry.id));
      before = body.nextBefore;
      pages++;
    } while (before !== null);
    assert.equal(pages, 13);
    assert.deepEqual(ids, Array.from({ length: 1_234 }, (_, i) => 1_234 - i), "every row once, newest first");
    const newest = (await get("order=desc&limit=1")).body.entries[0];
    assert.deepEqual([newest.id, newest.bytesOut, typeof newest.ts], [1_234, 1_233, "string"]);
    // `since` still bounds the rows by time; oldest first is unchanged.
    assert.deepEqual((await get(`order=desc&since=${Date.now() + 60_000}`)).body, { entries: [], nextBefore: null });
    const oldest = (await get("limit=2")).body;
    assert.deepEqual([oldest.entries.map((entry: { id: number }) => entry.id), oldest.nextAfter], [[1, 2], 2]);

    for (
      const [query, param] of [
        ["order=newest", "order"],
        ["order=desc&before=0", "before"],
        ["order=desc&before=x", "before"],
        ["order=desc&after=3", "after"],
        ["before=3", "before"],
        ["order=desc&limit=0", "limit"],
      ]
    ) {
      const { status, body } = await get(query);
      assert.equal(status, 400, query);
      assert.equal(body.error, "bad_request", query);
      assert.match(body.message, new RegExp(`^${param}\\b`), query);
    }
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
