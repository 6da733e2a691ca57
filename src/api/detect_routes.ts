import type { Client } from "@libsql/client";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import type { Detection } from "../detect/detection.ts";
import { checkBundle, ModelBundleError } from "../detect/model_bundle.ts";
import { GLOBAL_SCOPE } from "../detect/registry.ts";
import { adminAuth } from "./admin_auth.ts";
import { parseLimit, parseTime } from "./query_params.ts";

const MODEL_UPLOAD_LIMIT = 64 * 1024 * 1024;

const uploadSchema = z.object({
  manifest: z.record(z.string(), z.unknown()),
  onnx: z.string().min(1),
  device: z.string().min(1).max(128).optional(),
}).strict();

const badRequest = (message: string) => ({ error: "bad_request", message });

/** Readings with scores, anomaly episodes, devices, calibration and the model lifecycle. */
export function detectRoutes(options: { client: Client; detection: Detection; adminToken: string | undefined }): Hono {
  const { client, detection } = options;
  const app = new Hono();
  const admin = adminAuth(options.adminToken);

  app.get("/v1/readings", async (c) => {
    const device = c.req.query("device");
    const from = parseTime(c.req.query("from"), 0);
    const to = parseTime(c.req.query("to"), Number.MAX_SAFE_INTEGER);
    const limit = parseLimit(c.req.query("limit"), 1000, 10_000);
    let after = -1;
    const cursor = c.req.query("cursor");
    if (cursor) {
      after = Number(atob(cursor.replace(/-/g, "+").replace(/_/g, "/")));
      if (!Number.isInteger(after)) return c.json(badRequest("cursor is not one this API returned"), 400);
    }
    if (!device) return c.json(badRequest("device is required"), 400);
    if (from === null || to === null) {
      return c.json(badRequest("from and to must be RFC 3339 or epoch milliseconds"), 400);
    }
    if (limit === null) return c.json(badRequest("limit must be an integer from 1 to 10000"), 400);
    const result = await client.execute({
      sql: `SELECT ts, values_json, score, anomaly, flags FROM readings
            WHERE device = ? AND ts >= ? AND ts < ? AND ts > ? ORDER BY ts LIMIT ?`,
      args: [device, from, to, after, limit],
    });
    const readings = result.rows.map((row) => ({
      ts: new Date(Number(row.ts)).toISOString(),
      tsMs: Number(row.ts),
      values: JSON.parse(String(row.values_json)),
      score: row.score === null ? null : Number(row.score),
      anomaly: row.anomaly === null ? null : Number(row.anomaly) === 1,
      ...(row.flags === null ? {} : { flags: String(row.flags) }),
    }));
    const last = readings[readings.length - 1];
    const nextCursor = readings.length === limit ? btoa(String(last.tsMs)).replace(/=+$/, "") : null;
    return c.json({ device, readings, nextCursor });
  });

  app.get("/v1/events", async (c) => {
    const device = c.req.query("device");
    const from = parseTime(c.req.query("from"), 0);
    const limit = parseLimit(c.req.query("limit"), 100, 10_000);
    if (from === null) return c.json(badRequest("from must be RFC 3339 or epoch milliseconds"), 400);
    if (limit === null) return c.json(badRequest("limit must be an integer from 1 to 10000"), 400);
    const result = await client.execute({
      sql: `SELECT * FROM events WHERE (? IS NULL OR device = ?) AND start_ts >= ? ORDER BY start_ts, id LIMIT ?`,
      args: [device ?? null, device ?? null, from, limit],
    });
    return c.json({
      events: result.rows.map((row) => ({
        id: Number(row.id),
        device: String(row.device),
        start: new Date(Number(row.start_ts)).toISOString(),
        end: row.end_ts === null ? null : new Date(Number(row.end_ts)).toISOString(),
        open: row.end_ts === null,
        peakScore: Number(row.peak_score),
        model: String(row.model),
        sensors: JSON.parse(String(row.top_sensors)),
        readings: Number(row.readings),
      })),
    });
  });

  app.get("/v1/devices", async (c) => {
    const cursor = detection.scorer.cursor;
    const [devices, lag] = await Promise.all([
      client.execute("SELECT * FROM devices ORDER BY device"),
      client.execute({
        sql: "SELECT device, count(*) AS n, min(received_ms) AS oldest FROM readings WHERE id > ? GROUP BY device",
        args: [Math.max(cursor, 0)],
      }),
    ]);
    const lagByDevice = new Map(
      lag.rows.map((row) => [String(row.device), { n: Number(row.n), oldest: Number(row.oldest) }]),
    );
    const list = [];
    for (const row of devices.rows) {
      const device = String(row.device);
      const modelId = detection.registry.modelIdFor(device);
      const pending = lagByDevice.get(device);
      let calibration = null;
      if (String(row.state) === "calibrating") {
        const collected = await client.execute({
          sql: "SELECT count(*) AS n FROM readings WHERE device = ? AND id > ? AND id <= ?",
          args: [device, Number(row.calibration_after_id), Math.max(cursor, 0)],
        });
        calibration = { collected: Number(collected.rows[0].n), needed: detection.calibrationReadings };
      }
      list.push({
        device,
        state: String(row.state),
        calibration,
        readings: Number(row.readings) + (pending?.n ?? 0),
        anomaly: Number(row.anomaly) === 1,
        model: modelId === undefined ? null : detection.registry.info(modelId) ?? null,
        scoringLag: { readings: pending?.n ?? 0, seconds: pending ? (Date.now() - pending.oldest) / 1000 : 0 },
      });
    }
    return c.json({ devices: list });
  });

  app.post("/v1/devices/:device/calibrate", admin, async (c) => {
    const device = c.req.param("device");
    await detection.scorer.recalibrate(device);
    return c.json({ device, state: "calibrating", readingsNeeded: detection.calibrationReadings }, 202);
  });

  app.post(
    "/v1/models",
    admin,
    bodyLimit({
      maxSize: MODEL_UPLOAD_LIMIT,
      onError: (c) =>
        c.json({ error: "body_too_large", message: `Model uploads are limited to ${MODEL_UPLOAD_LIMIT} bytes` }, 413),
    }),
    async (c) => {
      let body: z.output<typeof uploadSchema>;
      try {
        body = uploadSchema.parse(await c.req.json());
      } catch (error) {
        return c.json({
          error: "invalid_upload",
          message: 'Expected {"manifest":{...},"onnx":"<base64>","device"?}',
          detail: String(error),
        }, 400);
      }
      try {
        const onnx = Uint8Array.from(atob(body.onnx), (ch) => ch.charCodeAt(0));
        const bundle = checkBundle(body.manifest, onnx);
        const scope = body.device ?? GLOBAL_SCOPE;
        const model = await detection.registry.activate(bundle, scope, "uploaded");
        void detection.scorer.catchUp();
        return c.json({ model, scope: scope === GLOBAL_SCOPE ? "global" : scope }, 201);
      } catch (error) {
        if (error instanceof ModelBundleError) {
          return c.json({ error: "invalid_model", message: error.message, issues: error.issues }, 400);
        }
        if (error instanceof DOMException) {
          return c.json({ error: "invalid_upload", message: "onnx is not base64" }, 400);
        }
        throw error;
      }
    },
  );

  app.post("/v1/models/rollback", admin, async (c) => {
    let device: string | undefined;
    const text = await c.req.text();
    if (text.trim() !== "") {
      try {
        device = z.object({ device: z.string().min(1).optional() }).strict().parse(JSON.parse(text)).device;
      } catch {
        return c.json(badRequest('Expected {} or {"device":"..."}'), 400);
      }
    }
    const scope = device ?? GLOBAL_SCOPE;
    try {
      const { from, to } = await detection.registry.rollback(scope);
      void detection.scorer.catchUp();
      return c.json({ scope: scope === GLOBAL_SCOPE ? "global" : scope, from, to });
    } catch (error) {
      if (error instanceof RangeError) return c.json({ error: "no_previous_model", message: error.message }, 409);
      throw error;
    }
  });

  return app;
}
