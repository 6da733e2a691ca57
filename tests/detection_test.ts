import assert from "node:assert/strict";
import { join } from "node:path";
import { sha256Hex } from "../src/sha256.ts";
import { BROKER_KIND, startBroker } from "./helpers/broker.ts";
import { eventually } from "./helpers/eventually.ts";
import { connectPublisher } from "./helpers/mqtt_publisher.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { simulateFaultRecording } from "./sim/plant_simulator.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const TOKEN = "test-admin-token";
const CALIBRATION = ["calibration: { readings: 100 }"];

async function api(url: string, path: string, body?: unknown, token: string | null = TOKEN) {
  const response = await fetch(`${url}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

Deno.test("a new device calibrates on its first readings, then every later reading is scored and flagged", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { detection: CALIBRATION, logLevel: "warn" }));
  try {
    const recording = simulateRecording({ seed: 11, fault: "step", calibration: 100, seconds: 500 });
    await replay(outpost.url, "pump 7", recording.readings);
    // Pages are read one after another while scoring goes on: wait until one full read has every
    // reading this test checks scored (pages read early may predate the last pass's commit).
    const readings = await eventually(
      () => fetchReadings(outpost.url, "pump 7", 128),
      (rows) => rows.length === 500 && rows.slice(100).every((r) => r.score !== null && r.anomaly !== null),
      30_000,
    );
    assert.ok(
      readings.slice(0, 100).every((r) => r.score === null && r.anomaly === null),
      "calibration readings are unscored",
    );
    assert.ok(readings.slice(100).every((r) => typeof r.score === "number" && typeof r.anomaly === "boolean"));
    assert.deepEqual(
      readings.map((r) => r.tsMs),
      recording.readings.map((r) => r.ts),
      "time order, no gaps, no repeats",
    );
    const flagged = readings.map((r, i) => r.anomaly && recording.readings[i].anomalous).filter(Boolean).length;
    assert.ok(flagged > (recording.faultEnd - recording.faultStart) / 2, `only ${flagged} fault readings flagged`);

    const { body: devices } = await api(outpost.url, "/v1/devices");
    assert.equal(devices.devices[0].device, "pump 7");
    assert.equal(devices.devices[0].state, "active");
    assert.equal(devices.devices[0].readings, 500);
    assert.deepEqual(devices.devices[0].scoringLag, { readings: 0, seconds: 0 });
    assert.match(devices.devices[0].model.name, /^baseline\/pump 7$/);

    const { body: events } = await api(outpost.url, "/v1/events?device=pump%207");
    const episode = events.events.find((e: { start: string }) =>
      Date.parse(e.start) >= recording.readings[recording.faultStart].ts
    );
    assert.ok(episode, JSON.stringify(events));
    assert.ok(episode.peakScore > 1 && episode.sensors.length > 0 && episode.model.endsWith("@cal-1"));

    const bundles = join(outpost.dataDir, "models", "calibrated");
    const [bundleDir] = [...Deno.readDirSync(bundles)].map((entry) => join(bundles, entry.name));
    const manifest = JSON.parse(await Deno.readTextFile(join(bundleDir, "model.json")));
    assert.equal(manifest.sha256, sha256Hex(await Deno.readFile(join(bundleDir, "model.onnx"))));
    assert.equal(manifest.provenance.readings, 100);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reading missing a sensor its model uses is scored on the others and flagged, not dropped; other sensor sets get their own model", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { detection: CALIBRATION, logLevel: "warn" }));
  try {
    const recording = simulateRecording({ seed: 12, fault: "spikes", calibration: 100, seconds: 150 });
    await replay(outpost.url, "pump-a", recording.readings);
    const small = recording.readings.map((r) => ({
      ...r,
      values: { temp: r.values.temperature, amps: r.values.current },
    }));
    await replay(outpost.url, "fan-b", small);
    const lastTs = recording.readings[149].ts;
    const { temperature: _dropped, ...partial } = recording.readings[149].values;
    const response = await postJson(`${outpost.url}/v1/readings`, {
      device: "pump-a",
      ts: lastTs + 1000,
      values: partial,
    });
    assert.equal(response.status, 202);
    await response.body?.cancel();
    const rows = await eventually(
      () => fetchReadings(outpost.url, "pump-a"),
      (r) => r.length === 151 && r[150].flags !== undefined,
    );
    assert.equal(typeof rows[150].score, "number");
    assert.equal(rows[150].flags, "scored without: temperature");
    const { body } = await api(outpost.url, "/v1/devices");
    const models = Object.fromEntries(
      body.devices.map((d: { device: string; model: { id: number } }) => [d.device, d.model?.id]),
    );
    assert.ok(models["pump-a"] && models["fan-b"] && models["pump-a"] !== models["fan-b"]);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`episodes publish alerts at start and end to the local broker (${BROKER_KIND}) and record them`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const listener = await connectPublisher(broker.url);
  const alerts: { state: string; device: string; event: number }[] = [];
  listener.on(
    "message",
    (_topic: string, payload: Uint8Array) => alerts.push(JSON.parse(new TextDecoder().decode(payload))),
  );
  await listener.subscribe("site/alerts");
  const outpost = await startOutpost(
    await writeManifest(dir, {
      mqttUrl: broker.url,
      detection: [...CALIBRATION, "alertTopic: site/alerts"],
      logLevel: "warn",
    }),
  );
  try {
    const recording = simulateFaultRecording({ seed: 13, fault: "imbalance", minutes: 15 });
    await replay(outpost.url, "pump-c", recording.readings);
    const received = await eventually(() => alerts, (a) => a.some((alert) => alert.state === "end"));
    const start = received.find((alert) => alert.state === "start")!;
    assert.equal(start.device, "pump-c");
    assert.ok(received.some((alert) => alert.state === "end" && alert.event === start.event));
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_alerts_published_total [1-9]/);
    assert.match(metrics, /outpost_anomaly_episodes_total\{change="start"\} [1-9]/);
  } finally {
    await outpost.stop();
    await listener.close();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});
