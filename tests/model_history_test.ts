/**
 * `GET /v1/models`: a scope's models as the store keeps them (the console's device view shows it),
 * against the real program: calibration, uploads and a rollback each show, newest first, paged,
 * and bad parameters are refused naming the parameter.
 */
import assert from "node:assert/strict";
import { encodeBase64 } from "./helpers/base64.ts";
import { sha256Hex } from "../src/sha256.ts";
import { eventually } from "./helpers/eventually.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const TOKEN = "history-token";

async function admin(url: string, path: string, body: unknown) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  assert.ok(response.ok, JSON.stringify(answer));
  return answer;
}

function upload(version: string, device?: string) {
  const onnx = linearRegressionOnnx([1, 10, 100], 0.5);
  const manifest = {
    name: "sklearn-health-index",
    version,
    features: ["temperature", "current", "vibration_x"],
    window: 1,
    input: "float_input",
    output: "variable",
    outputMeaning: "predicted health index; above the threshold is anomalous",
    threshold: 1_000,
    sha256: sha256Hex(onnx),
  };
  return { manifest, onnx: encodeBase64(onnx), ...(device ? { device } : {}) };
}

Deno.test("GET /v1/models lists a scope's models newest first with their role, follows uploads and a rollback, pages, and names a bad parameter", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "warn" }),
    { env: { OUTPOST_ADMIN_TOKEN: TOKEN } },
  );
  const models = async (query: string) => {
    const response = await fetch(`${outpost.url}/v1/models?${query}`);
    assert.equal(response.status, 200, query);
    return await response.json();
  };
  try {
    const recording = simulateRecording({ seed: 21, fault: "drift", calibration: 50, seconds: 60 });
    await replay(outpost.url, "pump x", recording.readings);
    await eventually(() => fetchReadings(outpost.url, "pump x"), (rows) => rows.at(-1)?.score != null, 30_000);

    const calibrated = await models(`device=${encodeURIComponent("pump x")}`);
    assert.equal(calibrated.scope, "pump x");
    assert.equal(calibrated.scoredBy, "device");
    assert.equal(calibrated.models.length, 1);
    const [baseline] = calibrated.models;
    assert.equal(baseline.name, "baseline/pump x");
    assert.equal(baseline.source, "calibrated");
    assert.equal(baseline.role, "current");
    assert.match(baseline.sha256, /^[0-9a-f]{64}$/);
    assert.ok(Date.parse(baseline.stored) > 0);
    assert.deepEqual(
      [calibrated.assignment.current, calibrated.assignment.previous, calibrated.assignment.deactivated],
      [baseline.id, null, null],
    );

    const uploaded = (await admin(outpost.url, "/v1/models", upload("2.1.0", "pump x"))).model;
    let history = await models("device=pump%20x");
    assert.deepEqual(history.models.map((m: { id: number; role: string }) => [m.id, m.role]), [
      [uploaded.id, "current"],
      [baseline.id, "previous"],
    ]);
    assert.deepEqual([history.models[0].version, history.models[0].source], ["2.1.0", "uploaded"]);

    const changedBefore = Date.parse(history.assignment.changed);
    await admin(outpost.url, "/v1/models/rollback", { device: "pump x" });
    history = await models("device=pump%20x");
    assert.deepEqual(history.models.map((m: { id: number; role: string }) => [m.id, m.role]), [
      [uploaded.id, "previous"],
      [baseline.id, "current"],
    ]);
    assert.ok(Date.parse(history.assignment.changed) >= changedBefore);

    // Pages of one, newest first, without gaps.
    const first = await models("device=pump%20x&limit=1");
    assert.deepEqual(first.models.map((m: { id: number }) => m.id), [uploaded.id]);
    assert.ok(first.nextCursor);
    const second = await models(`device=pump%20x&limit=1&cursor=${first.nextCursor}`);
    assert.deepEqual(second.models.map((m: { id: number }) => m.id), [baseline.id]);
    assert.equal(second.nextCursor, null);

    // The global scope; a device without its own model is scored by it.
    const global = (await admin(outpost.url, "/v1/models", upload("3.0.0"))).model;
    const globalHistory = await models("scope=global");
    assert.equal(globalHistory.scope, "global");
    assert.equal(globalHistory.scoredBy, undefined);
    assert.deepEqual(globalHistory.models.map((m: { id: number; role: string }) => [m.id, m.role]), [
      [global.id, "current"],
    ]);
    const stranger = await models("device=pump-y");
    assert.deepEqual([stranger.scoredBy, stranger.assignment, stranger.models], ["global", null, []]);

    for (
      const [query, param] of [
        ["", "device"],
        ["device=a&scope=global", "device"],
        ["scope=pump", "scope"],
        ["device=", "device"],
        [`device=${"x".repeat(129)}`, "device"],
        ["device=a&limit=0", "limit"],
        ["device=a&limit=101", "limit"],
        ["device=a&cursor=!!", "cursor"],
      ]
    ) {
      const refused = await fetch(`${outpost.url}/v1/models?${query}`);
      assert.equal(refused.status, 400, query);
      const body = await refused.json();
      assert.equal(body.error, "bad_request", query);
      assert.match(body.message, new RegExp(`\\b${param}\\b`), query);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
