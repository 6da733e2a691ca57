import type { Client } from "@libsql/client";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { Buffer } from "node:buffer";
import { z } from "zod";
import type { Detection } from "../detect/detection.ts";
import {
  DEVICE_SORTS,
  devicePage,
  type DeviceSort,
  type SortOrder,
  type SortPosition,
} from "../detect/device_listing.ts";
import { checkBundle } from "../detect/model_bundle.ts";
import { vetUploadedModel } from "../detect/model_vetting.ts";
import { checkModelSignature } from "../detect/model_signature.ts";
import { readModelUpload, UploadInProgressError } from "../detect/model_upload.ts";
import type { TrustedKey } from "../release/signature.ts";
import { decodeUtf8, readBoundedBody } from "./bounded_body.ts";
import { CALIBRATED_PREFIX } from "../detect/calibration.ts";
import { GLOBAL_SCOPE } from "../detect/registry.ts";
import { eventsPage } from "../store/events_table.ts";
import { type HistoryEntry, historyPage } from "../store/assignment_history.ts";
import { type HistoryModel, scopeAssignment, scopeModelsPage } from "../store/model_history.ts";
import { scoredReadings } from "../store/scores.ts";
import { adminAuth } from "./admin_auth.ts";
import type { Admission } from "./admission.ts";
import { parseLimit, parseTime } from "./query_params.ts";

const ROLLBACK_BODY_BYTES = 4_096;

const badRequest = (message: string) => new HTTPException(400, { message });
const scopeLabel = (scope: string) => scope === GLOBAL_SCOPE ? "global" : scope;

/**
 * Readings with scores, anomaly episodes, devices, calibration and the model lifecycle. Routes
 * throw detection's domain errors; the API's one error handler (errors.ts) answers them.
 */
export function detectRoutes(
  options: {
    client: Client;
    detection: Detection;
    adminToken: string | undefined;
    /** The store's clock, which arrival times (`received_ms`) are on. */
    now: () => number;
    /** `spec.release.trustedKeys`: when not empty, uploaded models must be signed by one of them. */
    trustedKeys?: readonly TrustedKey[];
    /** Slots for reads whose cost grows with what is stored (`spec.limits.heavyReads`). */
    heavyReads: Admission;
  },
): Hono {
  const { client, detection } = options;
  const app = new Hono();
  const admin = adminAuth(options.adminToken);
  let uploading = false;

  // A page of readings carries at most this much of their values (more pages follow by cursor):
  // 10,000 readings of 64 long sensor names are about 95 MB, past the V8 heap's bound.
  const READINGS_PAGE_BYTES = 2 * 1024 * 1024;

  app.get("/v1/readings", async (c) => {
    const device = c.req.query("device");
    if (!device) throw badRequest("device is required");
    const from = parseTime(c.req.query("from"), 0);
    const to = parseTime(c.req.query("to"), Number.MAX_SAFE_INTEGER);
    if (from === null || to === null) throw badRequest("from and to must be RFC 3339 or epoch milliseconds");
    const limit = parseLimit(c.req.query("limit"), 1000, 10_000);
    if (limit === null) throw badRequest("limit must be an integer from 1 to 10000");
    const after = decodeTimeCursor(c.req.query("cursor"));
    // Its values leave as the JSON text the writer stored (never parsed and written again), and
    // at most `heavyReads` pages are made at once.
    return await options.heavyReads.run(async () => {
      const page = await scoredReadings(client, {
        device,
        fromTs: from,
        toTs: to,
        afterTs: after,
        limit,
        maxBytes: READINGS_PAGE_BYTES,
      });
      const readings = page.readings.map((row) => {
        const fields = [
          `"ts":${JSON.stringify(new Date(row.ts).toISOString())}`,
          `"tsMs":${row.ts}`,
          `"values":${row.valuesJson}`,
          `"score":${JSON.stringify(row.score)}`,
          `"anomaly":${JSON.stringify(row.anomaly)}`,
          ...(row.flags === null ? [] : [`"flags":${JSON.stringify(row.flags)}`]),
        ];
        return `{${fields.join(",")}}`;
      });
      const last = page.readings[page.readings.length - 1];
      const nextCursor = page.readings.length === limit || page.cut ? encodeCursor(String(last.ts)) : null;
      const body = `{"device":${JSON.stringify(device)},"readings":[${readings.join(",")}],"nextCursor":${
        JSON.stringify(nextCursor)
      }}`;
      return c.body(body, 200, { "content-type": "application/json" });
    });
  });

  app.get("/v1/events", async (c) => {
    const device = c.req.query("device");
    const state = c.req.query("state");
    if (state !== undefined && state !== "open" && state !== "closed") throw badRequest("state must be open or closed");
    const from = parseTime(c.req.query("from"), 0);
    if (from === null) throw badRequest("from must be RFC 3339 or epoch milliseconds");
    const to = parseTime(c.req.query("to"), Number.MAX_SAFE_INTEGER);
    if (to === null) throw badRequest("to must be RFC 3339 or epoch milliseconds");
    const limit = parseLimit(c.req.query("limit"), 100, 1000);
    if (limit === null) throw badRequest("limit must be an integer from 1 to 1000");
    const cursor = c.req.query("cursor");
    const page = await eventsPage(client, {
      device: device ?? null,
      state: state ?? null,
      fromTs: from,
      toTs: to,
      beforeId: cursor === undefined ? null : decodeIdCursor(cursor),
      limit,
    });
    const events = page.events.map((event) => ({
      id: event.id,
      device: event.device,
      start: new Date(event.startTs).toISOString(),
      end: event.endTs === null ? null : new Date(event.endTs).toISOString(),
      open: event.endTs === null,
      peakScore: event.peakScore,
      model: event.model,
      sensors: event.topSensors,
      readings: event.readings,
      endReason: event.endReason,
      verdict: event.verdict && { kind: event.verdict.kind, at: new Date(event.verdict.ts).toISOString() },
    }));
    const last = events[events.length - 1];
    return c.json({ events, nextCursor: page.more ? encodeCursor(String(last.id)) : null });
  });

  app.get("/v1/devices", async (c) => {
    const limit = parseLimit(c.req.query("limit"), 100, 1000);
    if (limit === null) throw badRequest("limit must be an integer from 1 to 1000");
    const cursor = c.req.query("cursor");
    const sortParam = c.req.query("sort") ?? "device";
    if (!(DEVICE_SORTS as readonly string[]).includes(sortParam)) {
      throw badRequest(`sort must be one of ${DEVICE_SORTS.join(", ")}`);
    }
    const sortBy = sortParam as DeviceSort;
    const order = c.req.query("order") ?? "asc";
    if (order !== "asc" && order !== "desc") throw badRequest("order must be asc or desc");
    // Name order keeps its cursor (a device name); other orders carry their key in theirs.
    const plain = sortBy === "device" && order === "asc";
    const after = cursor === undefined || !plain ? null : decodeNameCursor(cursor);
    const position = cursor === undefined || plain ? null : decodeSortCursor(cursor, sortBy, order);
    const only = c.req.query("device");
    const query = {
      after,
      limit,
      scoreCursor: detection.scorer.cursor,
      only,
      sort: { by: sortBy, order: order as SortOrder, after: position },
    };
    // Name order reads one index page; the other orders read every device's activity.
    const page = plain
      ? await devicePage(client, query)
      : await options.heavyReads.run(() => devicePage(client, query));
    const now = options.now();
    const devices = page.devices.map((row) => {
      const modelId = detection.registry.modelIdFor(row.device);
      const info = modelId === undefined ? undefined : detection.registry.info(modelId);
      return {
        device: row.device,
        state: row.state,
        quarantine: row.state === "quarantined"
          ? detection.scorer.quarantineOf(row.device) ?? { reason: "reason not recorded", since: null }
          : null,
        calibration: row.collected === null
          ? null
          : { collected: row.collected, needed: detection.calibrationReadings },
        readings: row.readings,
        anomaly: row.anomaly,
        degraded: row.missing && {
          missingSensors: row.missing.sensors.map((m) => ({
            sensor: m.sensor,
            since: new Date(m.sinceTs).toISOString(),
          })),
          scoring: row.missing.scoredOnTheRest ? "other_sensors" : "none",
        },
        model: info ? { ...info, deactivated: detection.registry.deactivationFor(row.device) ?? null } : null,
        scoringLag: {
          readings: row.lag.readings,
          seconds: row.lag.oldestMs === null ? 0 : (now - row.lag.oldestMs) / 1000,
        },
        lastSeen: row.lastSeenTs === null ? null : new Date(row.lastSeenTs).toISOString(),
        latestScore: row.latestScore && { ...row.latestScore, ts: new Date(row.latestScore.ts).toISOString() },
        openEvent: row.openEvent && {
          id: row.openEvent.id,
          start: new Date(row.openEvent.startTs).toISOString(),
          peakScore: row.openEvent.peakScore,
          sensors: row.openEvent.topSensors,
        },
      };
    });
    const last = page.devices[page.devices.length - 1];
    const next = !page.more
      ? null
      : plain
      ? encodeCursor(last.device)
      : encodeCursor(JSON.stringify([sortBy, order, last.sortKey, last.device]));
    return c.json({ devices, sort: sortBy, order, nextCursor: next });
  });

  // A scope's models as the store keeps them (src/store/model_history.ts says what that covers).
  app.get("/v1/models", async (c) => {
    const device = c.req.query("device");
    const scopeParam = c.req.query("scope");
    if ((device === undefined) === (scopeParam === undefined)) {
      throw badRequest("Give one of device (a device id) or scope=global");
    }
    if (scopeParam !== undefined && scopeParam !== "global") throw badRequest("scope must be global");
    const nameLength = detection.limits.nameLength;
    if (device !== undefined && (device.length === 0 || device.length > nameLength)) {
      throw badRequest(`device must be 1 to ${nameLength} characters`);
    }
    const limit = parseLimit(c.req.query("limit"), 20, 100);
    if (limit === null) throw badRequest("limit must be an integer from 1 to 100");
    const cursor = c.req.query("cursor");
    const historyCursor = c.req.query("historyCursor");
    const scope = device ?? GLOBAL_SCOPE;
    const [assignment, page, history] = await Promise.all([
      scopeAssignment(client, scope),
      scopeModelsPage(client, {
        scope,
        name: device === undefined ? null : `${CALIBRATED_PREFIX}${device}`,
        beforeId: cursor === undefined ? null : decodeIdCursor(cursor),
        limit,
      }),
      historyPage(client, {
        scope,
        beforeId: historyCursor === undefined ? null : decodeIdCursor(historyCursor, "historyCursor"),
        limit,
      }),
    ]);
    const role = (id: number) =>
      id === assignment?.modelId ? "current" : id === assignment?.previousModelId ? "previous" : "kept";
    const entry = (model: HistoryModel) => ({
      id: model.id,
      name: model.name,
      version: model.version,
      source: model.source,
      sha256: model.sha256,
      stored: new Date(model.createdMs).toISOString(),
      role: role(model.id),
    });
    const registry = detection.registry;
    const own = device === undefined || registry.hasOwnModel(device);
    const last = page.models[page.models.length - 1];
    return c.json({
      scope: scopeLabel(scope),
      // Whose model scores the device now: its own, the global one, or none (calibrating).
      ...(device === undefined
        ? {}
        : { scoredBy: own ? "device" : registry.modelIdFor(device) === undefined ? null : "global" }),
      assignment: assignment && {
        current: assignment.modelId,
        previous: assignment.previousModelId,
        changed: new Date(assignment.updatedMs).toISOString(),
        deactivated: (own ? registry.deactivationFor(device ?? GLOBAL_SCOPE) : undefined) ?? null,
      },
      models: page.models.map(entry),
      nextCursor: page.more ? encodeCursor(String(last.id)) : null,
      history: history.entries.map(historyEntry),
      nextHistoryCursor: history.more ? encodeCursor(String(history.entries[history.entries.length - 1].id)) : null,
    });
  });

  app.post("/v1/devices/:device/accept", admin, async (c) => {
    const outcome = await detection.scorer.acceptOperatingPoint(c.req.param("device"));
    const { alerts: _alerts, ...body } = outcome;
    return c.json(body);
  });

  app.post("/v1/events/:id/false-alarm", admin, async (c) => {
    const id = c.req.param("id");
    if (!/^[1-9][0-9]{0,15}$/.test(id) || !Number.isSafeInteger(Number(id))) {
      throw badRequest("id must be an event id (a positive integer up to 2^53 - 1)");
    }
    const outcome = await detection.scorer.markFalseAlarm(Number(id));
    const { alerts: _alerts, ...body } = outcome;
    return c.json({ event: Number(id), verdict: "false_alarm", ...body });
  });

  app.post("/v1/devices/:device/calibrate", admin, async (c) => {
    const device = c.req.param("device");
    await detection.scorer.recalibrate(device);
    await detection.registry.recordRecalibration(device);
    return c.json({ device, state: "calibrating", readingsNeeded: detection.calibrationReadings }, 202);
  });

  app.post("/v1/models", admin, async (c) => {
    if (uploading) throw new UploadInProgressError();
    uploading = true;
    try {
      const upload = await readModelUpload(c.req.raw, detection.limits);
      // Before anything is checked further or stored: refused here, nothing changes.
      const signature = await checkModelSignature(upload.onnx, upload.signature, options.trustedKeys ?? []);
      const bundle = checkBundle(upload.manifest, upload.onnx);
      const bound = vetUploadedModel(bundle, detection.limits);
      const scope = upload.device ?? GLOBAL_SCOPE;
      const samples = await detection.samples(scope, bundle.manifest.features);
      const model = await detection.registry.activate(bundle, scope, "uploaded", {
        samples,
        keyId: signature.verified ? signature.keyId : null,
        reason: signature.verified ? `signed by trusted key ${signature.key}` : "signature not checked",
      });
      void detection.scorer.catchUp();
      const working = bound &&
        { tensorBytes: bound.tensorBytes, nodes: bound.nodes, batchSize: detection.limits.batchSize };
      return c.json({ model, scope: scopeLabel(scope), signature, ...(working ? { bound: working } : {}) }, 201);
    } finally {
      uploading = false;
    }
  });

  app.post("/v1/models/rollback", admin, async (c) => {
    const text = await readSmallText(c.req.raw, ROLLBACK_BODY_BYTES);
    let device: string | undefined;
    if (text.trim() !== "") {
      try {
        device = z.object({ device: z.string().min(1).optional() }).strict().parse(JSON.parse(text)).device;
      } catch {
        throw badRequest('Expected {} or {"device":"..."}');
      }
    }
    const scope = device ?? GLOBAL_SCOPE;
    const { from, to } = await detection.registry.rollback(scope);
    void detection.scorer.catchUp();
    return c.json({ scope: scopeLabel(scope), from, to });
  });

  return app;
}

/** A row of a scope's model history as `GET /v1/models` answers it. */
function historyEntry(entry: HistoryEntry) {
  return {
    id: entry.id,
    at: new Date(entry.tsMs).toISOString(),
    kind: entry.kind,
    model: entry.modelId === null ? null : {
      id: entry.modelId,
      name: entry.name,
      version: entry.version,
      sha256: entry.sha256,
    },
    previous: entry.previousModelId,
    reason: entry.reason,
    signedBy: entry.keyId,
  };
}

/** Opaque page cursors: base64url of a reading's time, an event id or a device name. */
function encodeCursor(text: string): string {
  return Buffer.from(text, "utf8").toString("base64url");
}

function decodeCursorText(cursor: string, maxLength: number, param = "cursor"): string {
  const invalid = () => badRequest(`${param} is not one this API returned`);
  if (cursor.length === 0 || cursor.length > maxLength || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid();
  const bytes = Buffer.from(cursor, "base64url");
  if (bytes.toString("base64url") !== cursor) throw invalid();
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalid();
  }
}

function decodeTimeCursor(cursor: string | undefined): number {
  if (cursor === undefined || cursor === "") return -Number.MAX_SAFE_INTEGER;
  const text = decodeCursorText(cursor, 32);
  const ts = Number(text);
  if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(ts)) throw badRequest("cursor is not one this API returned");
  return ts;
}

function decodeIdCursor(cursor: string, param = "cursor"): number {
  const text = decodeCursorText(cursor, 32, param);
  const id = Number(text);
  if (!/^[1-9]\d{0,15}$/.test(text) || !Number.isSafeInteger(id)) {
    throw badRequest(`${param} is not one this API returned`);
  }
  return id;
}

function decodeNameCursor(cursor: string): string {
  const text = decodeCursorText(cursor, 8_192);
  // Another sort's cursor (`[sort, order, key, device]`) would otherwise be taken for a device name
  // and restart the listing near its start. Only that exact shape is refused: a device may be named
  // "[1]", but not plausibly a sort cursor.
  if (text.startsWith("[")) {
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch { /* a device name */ }
    if (
      Array.isArray(parsed) && parsed.length === 4 && (DEVICE_SORTS as readonly unknown[]).includes(parsed[0]) &&
      (parsed[1] === "asc" || parsed[1] === "desc")
    ) throw badRequest("cursor belongs to another sort or order");
  }
  return text;
}

/** A sorted device page's cursor: `[sort, order, key, device]`, given back with the same sort and order. */
function decodeSortCursor(cursor: string, sort: DeviceSort, order: string): SortPosition {
  const invalid = () => badRequest("cursor is not one this API returned");
  let parsed: unknown;
  try {
    parsed = JSON.parse(decodeCursorText(cursor, 8_192));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 4) throw invalid();
  const [by, direction, key, device] = parsed;
  if (by !== sort || direction !== order) throw badRequest("cursor belongs to another sort or order");
  const keyOk = key === null ||
    (sort === "lastSeen" || sort === "score" ? Number.isFinite(key) : typeof key === "string");
  if (!keyOk || typeof device !== "string") throw invalid();
  return { key, device };
}

async function readSmallText(request: Request, maxBytes: number): Promise<string> {
  return decodeUtf8(await readBoundedBody(request, maxBytes, null));
}
