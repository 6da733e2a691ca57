import assert from "node:assert/strict";
import { join } from "node:path";
import { encodeBase64 } from "./helpers/base64.ts";
import { sha256Hex } from "../src/sha256.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const TOKEN = "lifecycle-token";

async function admin(url: string, path: string, body: unknown, token: string | null = TOKEN) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** The model.json a user writes for a scikit-learn LinearRegression exported by skl2onnx. */
function externalBundle(coefficients: number[], intercept: number) {
  const onnx = linearRegressionOnnx(coefficients, intercept);
  return {
    onnx,
    manifest: {
      name: "sklearn-health-index",
      version: "2.1.0",
      features: ["temperature", "current", "vibration_x"],
      window: 1,
      input: "float_input",
      output: "variable",
      outputMeaning: "predicted health index; above the threshold is anomalous",
      threshold: 1_000,
      sha256: sha256Hex(onnx),
      provenance: { exporter: "skl2onnx", estimator: "LinearRegression" },
    },
  };
}

Deno.test("an external model with its model.json scores readings; a tampered bundle changes nothing; rollback returns offline", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "warn" }),
    { env: { OUTPOST_ADMIN_TOKEN: TOKEN } },
  );
  try {
    const recording = simulateRecording({ seed: 21, fault: "drift", calibration: 50, seconds: 120 });
    await replay(outpost.url, "pump-x", recording.readings.slice(0, 60));
    await eventually(
      () => fetchReadings(outpost.url, "pump-x"),
      (rows) => rows.length === 60 && rows[59].score !== null,
    );

    const good = externalBundle([1, 10, 100], 0.5);
    const upload = { manifest: good.manifest, onnx: encodeBase64(good.onnx), device: "pump-x" };
    assert.equal((await admin(outpost.url, "/v1/models", upload, null)).status, 401);
    assert.equal((await admin(outpost.url, "/v1/models", upload, "wrong")).status, 401);

    const tampered = { ...upload, onnx: encodeBase64(linearRegressionOnnx([1, 10, 101], 0.5)) };
    const refused = await admin(outpost.url, "/v1/models", tampered);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, "invalid_model");
    assert.match(refused.body.message, /Model hash mismatch/);
    const wrongTensor = await admin(outpost.url, "/v1/models", {
      ...upload,
      manifest: { ...good.manifest, input: "X", version: "2.1.1" },
    });
    assert.equal(wrongTensor.status, 400);
    assert.match(wrongTensor.body.message, /Tensor names in model.json are not in the model/);
    const devices = await (await fetch(`${outpost.url}/v1/devices`)).json();
    assert.equal(devices.devices[0].model.source, "calibrated", "nothing changed after the refusals");

    const activated = await admin(outpost.url, "/v1/models", upload);
    assert.equal(activated.status, 201, JSON.stringify(activated.body));
    assert.equal(activated.body.scope, "pump-x");
    await replay(outpost.url, "pump-x", recording.readings.slice(60, 90));
    const rows = await eventually(
      () => fetchReadings(outpost.url, "pump-x"),
      (r) => r.length === 90 && r[89].score !== null,
    );
    const last = rows[89];
    const expected = last.values.temperature + 10 * last.values.current + 100 * last.values.vibration_x + 0.5;
    assert.ok(Math.abs(last.score! - expected) < 1e-3 * expected, `${last.score} vs ${expected}`);

    const rolledBack = await admin(outpost.url, "/v1/models/rollback", { device: "pump-x" });
    assert.equal(rolledBack.status, 200);
    assert.equal(rolledBack.body.from.name, "sklearn-health-index");
    assert.equal(rolledBack.body.to.source, "calibrated");
    await replay(outpost.url, "pump-x", recording.readings.slice(90, 100));
    const after = await eventually(
      () => fetchReadings(outpost.url, "pump-x"),
      (r) => r.length === 100 && r[99].score !== null,
    );
    assert.ok(after[99].score! < 100, "the calibrated model scores again");
    assert.equal((await admin(outpost.url, "/v1/models/rollback", { device: "nobody" })).status, 409);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("recalibration needs the admin token and takes the next readings as the new normal, scoring with the old model meanwhile", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "warn" });
  const noToken = await startOutpost(manifest);
  try {
    assert.equal((await admin(noToken.url, "/v1/devices/pump-y/calibrate", {})).status, 403);
  } finally {
    await noToken.stop();
  }
  const outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } });
  try {
    const recording = simulateRecording({ seed: 22, fault: "step", calibration: 50, seconds: 200 });
    await replay(outpost.url, "pump-y", recording.readings.slice(0, 70));
    await eventually(() => fetchReadings(outpost.url, "pump-y"), (r) => r.length === 70 && r[69].score !== null);
    const restarted = await admin(outpost.url, "/v1/devices/pump-y/calibrate", {});
    assert.equal(restarted.status, 202);
    await replay(outpost.url, "pump-y", recording.readings.slice(70, 140));
    const rows = await eventually(
      () => fetchReadings(outpost.url, "pump-y"),
      (r) => r.length === 140 && r[139].score !== null,
    );
    assert.ok(rows.slice(50).every((r) => r.score !== null), "scored throughout, by cal-1 while cal-2 calibrates");
    const devices = await (await fetch(`${outpost.url}/v1/devices`)).json();
    assert.equal(devices.devices[0].model.version, "cal-2");
    const models = join(outpost.dataDir, "models", "calibrated");
    const calibrated = [...Deno.readDirSync(models)].map((entry) => entry.name).sort();
    assert.equal(calibrated.length, 2, calibrated.join(", "));
    const second = JSON.parse(
      await Deno.readTextFile(join(models, calibrated.find((n) => n.includes("cal-2"))!, "model.json")),
    );
    assert.equal(
      second.provenance.firstTs,
      new Date(recording.readings[70].ts).toISOString(),
      "cal-2 fits the readings after the request",
    );
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a model that cannot be loaded leaves only its devices unscored, flagged and counted, and is retried", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "error" });
  let outpost = await startOutpost(manifest);
  try {
    const recording = simulateRecording({ seed: 23, fault: "step", calibration: 50, seconds: 200 });
    await replay(outpost.url, "pump-z", recording.readings.slice(0, 60));
    await eventually(() => fetchReadings(outpost.url, "pump-z"), (r) => r.length === 60 && r[59].score !== null);
    await outpost.stop();
    // Corrupt the calibrated model on disk: its hash no longer matches, so loading it fails.
    const bundles = `${outpost.dataDir}/models/calibrated`;
    const [bundle] = [...Deno.readDirSync(bundles)].map((entry) => `${bundles}/${entry.name}/model.onnx`);
    const original = await Deno.readFile(bundle);
    await Deno.writeFile(bundle, original.slice(0, 100));
    outpost = await startOutpost(manifest);
    await replay(outpost.url, "pump-z", recording.readings.slice(60, 80));
    await replay(outpost.url, "pump-w", recording.readings.slice(0, 60));
    const ready = await eventually(
      async () => await (await fetch(`${outpost.url}/readyz`)).json(),
      (body) => JSON.stringify(body).includes("failed to load"),
    );
    assert.equal(ready.status, "degraded");
    const other = await eventually(() => fetchReadings(outpost.url, "pump-w"), (r) => r[59]?.score !== null);
    assert.ok(other.slice(50).every((r) => typeof r.score === "number"), "the other device calibrated and scores");
    const rows = await fetchReadings(outpost.url, "pump-z");
    assert.equal(rows.length, 80, "ingest went on");
    assert.ok(
      rows.slice(60).every((r) => r.score === null && /^model \d+ unavailable: Model hash mismatch/.test(r.flags!)),
    );
    assert.match(
      await (await fetch(`${outpost.url}/metrics`)).text(),
      /outpost_unscored_readings_total\{reason="model_unavailable"\} 20/,
    );
    await Deno.writeFile(bundle, original);
    // Retried after a growing delay (1 s, 2 s, ...): new readings are scored again once it loads.
    let sent = 80;
    const scored = await eventually(
      async () => {
        await replay(outpost.url, "pump-z", [recording.readings[sent++]]);
        return await fetchReadings(outpost.url, "pump-z");
      },
      (r) => r[r.length - 1].score !== null,
      15_000,
    );
    assert.equal(typeof scored[scored.length - 1].score, "number");
    assert.equal((await (await fetch(`${outpost.url}/readyz`)).json()).status, "ready");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readings are served in time order with a cursor that pages without gaps", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const ts = Array.from({ length: 57 }, (_, i) => 1_763_805_600_000 + ((i * 37) % 57) * 1000);
    const response = await postJson(`${outpost.url}/v1/readings`, {
      readings: ts.map((t) => ({ device: "d", ts: t, values: { a: t } })),
    });
    await response.body?.cancel();
    const paged = await fetchReadings(outpost.url, "d", 10);
    assert.deepEqual(paged.map((r) => r.tsMs), [...ts].sort((a, b) => a - b));
    const window =
      await (await fetch(`${outpost.url}/v1/readings?device=d&from=${ts[0] + 5000}&to=2025-11-22T10:00:10.000Z`))
        .json();
    assert.deepEqual(window.readings.map((r: { tsMs: number }) => (r.tsMs - ts[0]) / 1000), [5, 6, 7, 8, 9]);
    assert.equal((await fetch(`${outpost.url}/v1/readings`)).status, 400);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
