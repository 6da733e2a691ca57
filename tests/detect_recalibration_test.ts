/**
 * Recalibration on request (issue 10, review items 2 and 4), against the real program over
 * loopback: a device scored by a global uploaded model calibrates its own baseline when an admin
 * asks, which then takes over (ending the global model's open episode as `recalibrated`, with or
 * without a restart in between); and repeated recalibrations keep only the current and the
 * previous (rollback) calibrated bundle of a device.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { sha256Hex } from "../src/sha256.ts";
import { encodeBase64 } from "./helpers/base64.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const TOKEN = "recalibration-token";

async function admin(url: string, path: string, body: unknown = {}) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

interface DeviceRow {
  device: string;
  state: string;
  calibration: { collected: number; needed: number } | null;
  model: { name: string; version: string; source: string } | null;
}

async function deviceRow(url: string, device: string): Promise<DeviceRow | undefined> {
  const body = await (await fetch(`${url}/v1/devices`)).json();
  return body.devices.find((row: DeviceRow) => row.device === device);
}

async function scoredThrough(url: string, device: string, count: number) {
  return await eventually(
    () => fetchReadings(url, device, 10_000),
    (rows) => rows.length === count && rows[count - 1].score !== null,
    20_000,
  );
}

function globalBundle(threshold = 1_000) {
  const onnx = linearRegressionOnnx([1, 10, 100], 0.5);
  return {
    manifest: {
      name: "fleet-health-index",
      version: "1.0.0",
      features: ["temperature", "current", "vibration_x"],
      window: 1,
      input: "float_input",
      output: "variable",
      outputMeaning: "predicted health index",
      threshold,
      sha256: sha256Hex(onnx),
    },
    onnx: encodeBase64(onnx),
  };
}

Deno.test("a device scored by a global model calibrates its own baseline on request, which then takes over", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "warn" }),
    { env: { OUTPOST_ADMIN_TOKEN: TOKEN } },
  );
  try {
    const uploaded = await admin(outpost.url, "/v1/models", globalBundle());
    assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
    assert.equal(uploaded.body.scope, "global");

    const device = "pump-g";
    const { readings } = simulateRecording({ seed: 31, fault: "step", calibration: 50, seconds: 300 });
    // Scored by the global model from its first reading, for as long as nobody asks for more.
    await replay(outpost.url, device, readings.slice(0, 80));
    await scoredThrough(outpost.url, device, 80);
    let row = await deviceRow(outpost.url, device);
    assert.deepEqual([row?.state, row?.model?.name, row?.calibration], ["active", "fleet-health-index", null]);

    const asked = await admin(outpost.url, `/v1/devices/${device}/calibrate`);
    assert.equal(asked.status, 202, JSON.stringify(asked.body));
    await replay(outpost.url, device, readings.slice(80, 100));
    await scoredThrough(outpost.url, device, 100);
    row = await deviceRow(outpost.url, device);
    assert.equal(row?.state, "calibrating");
    assert.deepEqual(row?.calibration, { collected: 20, needed: 50 });
    assert.equal(row?.model?.name, "fleet-health-index", "the global model scores it meanwhile");

    await replay(outpost.url, device, readings.slice(100, 160));
    const rows = await scoredThrough(outpost.url, device, 160);
    row = await eventually(() => deviceRow(outpost.url, device), (r) => r?.model?.source === "calibrated");
    assert.deepEqual([row?.state, row?.model?.name, row?.model?.version], ["active", `baseline/${device}`, "cal-1"]);
    assert.ok(rows.every((r) => typeof r.score === "number"), "scored throughout");
    const health = (r: (typeof rows)[number]) =>
      r.values.temperature + 10 * r.values.current + 100 * r.values.vibration_x + 0.5;
    assert.ok(Math.abs(rows[120].score! - health(rows[120])) < 1e-3 * health(rows[120]), "global until calibrated");
    assert.ok(rows.slice(135).every((r) => r.score! < 100), "the device's own baseline afterwards");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("five calibrations of a device leave two bundles, the current and the previous; versions never repeat", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { readings: 20 }"], logLevel: "warn" }),
    { env: { OUTPOST_ADMIN_TOKEN: TOKEN } },
  );
  const bundles = join(outpost.dataDir, "models", "calibrated");
  const versions = () => [...Deno.readDirSync(bundles)].map((entry) => entry.name.match(/-(cal-\d+)-/)![1]).sort();
  try {
    const device = "pump-r";
    const { readings } = simulateRecording({ seed: 32, fault: "step", calibration: 20, seconds: 200 });
    let sent = 0;
    const calibrateOn = async (count: number, version: string) => {
      await replay(outpost.url, device, readings.slice(sent, sent + count));
      sent += count;
      await eventually(() => deviceRow(outpost.url, device), (row) => row?.model?.version === version, 20_000);
    };
    await calibrateOn(20, "cal-1");
    for (let n = 2; n <= 5; n++) {
      assert.equal((await admin(outpost.url, `/v1/devices/${device}/calibrate`)).status, 202);
      await calibrateOn(20, `cal-${n}`);
    }
    await scoredThrough(outpost.url, device, sent);
    assert.deepEqual(versions(), ["cal-4", "cal-5"]);

    const back = await admin(outpost.url, "/v1/models/rollback", { device });
    assert.equal(back.status, 200, JSON.stringify(back.body));
    assert.deepEqual([back.body.from.version, back.body.to.version], ["cal-5", "cal-4"]);
    assert.equal((await admin(outpost.url, `/v1/devices/${device}/calibrate`)).status, 202);
    await calibrateOn(20, "cal-6");
    await scoredThrough(outpost.url, device, sent);
    assert.deepEqual(versions(), ["cal-4", "cal-6"], "the rolled-back-to model stays as the previous one");
    assert.equal((await admin(outpost.url, "/v1/models/rollback", { device })).body.to.version, "cal-4");
  } finally {
    await outpost.stop();
  }
  try {
    const rows = await query(outpost.dataDir, "SELECT version FROM models ORDER BY id");
    assert.deepEqual(rows.map((row) => row.version), ["cal-4", "cal-6"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a restart between a recalibration and the next reading still ends the old model's episode as recalibrated", async () => {
  // A global model whose threshold every reading passes keeps an episode open; the device then
  // calibrates its own baseline. The next reading ends that episode as `recalibrated`, whether or
  // not Outpost restarted in between (after a restart, the model that scored last is the stored one).
  const device = "pump-r";
  const { readings } = simulateRecording({ seed: 31, fault: "step", calibration: 50, seconds: 300 });
  const runs: unknown[] = [];
  for (const restart of [false, true]) {
    const dir = await Deno.makeTempDir({ prefix: "outpost-recal-restart-" });
    const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "warn" });
    const env = { OUTPOST_ADMIN_TOKEN: TOKEN };
    let outpost = await startOutpost(manifest, { env });
    try {
      assert.equal((await admin(outpost.url, "/v1/models", globalBundle(1))).status, 201);
      await replay(outpost.url, device, readings.slice(0, 20));
      await scoredThrough(outpost.url, device, 20);
      assert.equal((await admin(outpost.url, `/v1/devices/${device}/calibrate`)).status, 202);
      await replay(outpost.url, device, readings.slice(20, 70));
      await eventually(() => deviceRow(outpost.url, device), (row) => row?.model?.source === "calibrated", 20_000);
      if (restart) {
        assert.equal(await outpost.stop(), 0);
        outpost = await startOutpost(manifest, { env });
      }
      await replay(outpost.url, device, readings.slice(70, 100));
      const rows = await scoredThrough(outpost.url, device, 100);
      const events = (await (await fetch(`${outpost.url}/v1/events?device=${device}`)).json()).events;
      const global = events.find((event: { model: string }) => event.model.startsWith("fleet-health-index"));
      assert.equal(global?.endReason, "recalibrated", JSON.stringify(events));
      runs.push({
        events: events.map((e: { start: string; end: string; endReason: string; readings: number }) => [
          e.start,
          e.end,
          e.endReason,
          e.readings,
        ]),
        flags: rows.map((row) => row.anomaly),
      });
    } finally {
      await outpost.stop();
      await Deno.remove(dir, { recursive: true });
    }
  }
  assert.deepEqual(runs[1], runs[0]);
});
