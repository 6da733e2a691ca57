/**
 * A device whose readings retention removed is forgotten by detection too: its state row (and so
 * `/v1/devices`), its calibrated model and bundles, and an episode it left open (ended as
 * `forgotten`), so that a year of device-id churn leaves nothing behind. The real program, with
 * retention at one hour and two hours of downtime between two runs (the store's clock advances
 * by the downtime the wall clock shows, as after a power cut).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { commitDerived } from "../src/store/derived_commit.ts";
import { dropEpisodesStatement, upsertDeviceStatements } from "../src/store/device_rows.ts";
import { query, withTempDatabase } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { type OutpostProcess, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { replay, scoredThrough } from "./helpers/replay.ts";
import { simulateFaultRecording, simulateNormalRecording } from "./sim/plant_simulator.ts";

const CALIBRATION = 400;

// deno-lint-ignore no-explicit-any
async function getJson(outpost: OutpostProcess, path: string): Promise<any> {
  const response = await fetch(`${outpost.url}${path}`);
  assert.equal(response.status, 200, path);
  return await response.json();
}

async function listedDevices(outpost: OutpostProcess): Promise<string[]> {
  const body = await getJson(outpost, "/v1/devices?limit=100");
  return body.devices.map((row: { device: string }) => row.device);
}

function calibratedBundles(dataDir: string): string[] {
  try {
    return [...Deno.readDirSync(join(dataDir, "models", "calibrated"))].map((entry) => entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

Deno.test("a device retention forgot leaves no state, model or open episode behind, and calibrates afresh when it returns", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { logLevel: "info" });
  await Deno.writeTextFile(
    manifest,
    (await Deno.readTextFile(manifest)).replace("  storage:\n", "  storage:\n    retentionHours: 1\n"),
  );
  let outpost = await startOutpost(manifest);
  try {
    // One device stops inside a fault (its episode is open), one after calibrating quietly.
    const fault = simulateFaultRecording({ seed: 1, fault: "imbalance" });
    await replay(outpost.url, "gone-faulty", fault.readings.slice(0, fault.faultStart + 20));
    await scoredThrough(outpost.url, "gone-faulty", fault.readings[fault.faultStart + 19].ts);
    const normal = simulateNormalRecording({ seed: 2, hours: 0.3 });
    await replay(outpost.url, "gone-quiet", normal.readings.slice(0, CALIBRATION + 10));
    await scoredThrough(outpost.url, "gone-quiet", normal.readings[CALIBRATION + 9].ts);
    // Retention always keeps the store's newest reading: this device's.
    await replay(outpost.url, "still-here", normal.readings.slice(0, 1));
    await eventually(() => listedDevices(outpost), (devices) => devices.includes("still-here"), 20_000);
    const [open] = (await getJson(outpost, "/v1/events?device=gone-faulty")).events;
    assert.equal(open?.open, true, JSON.stringify(open));
    assert.deepEqual((await listedDevices(outpost)).sort(), ["gone-faulty", "gone-quiet", "still-here"]);
    assert.equal(calibratedBundles(outpost.dataDir).length, 2);
    assert.equal(await outpost.stop(), 0);

    // Two hours of downtime: at the next start, retention removes every reading of both devices.
    await query(outpost.dataDir, `UPDATE store_clock SET wall_ms = wall_ms - ${2 * 3_600_000}`);
    outpost = await startOutpost(manifest);
    await eventually(() => listedDevices(outpost), (devices) => devices.length === 1, 20_000);
    assert.deepEqual(await listedDevices(outpost), ["still-here"]);
    assert.deepEqual(await query(outpost.dataDir, "SELECT DISTINCT device FROM readings"), [{ device: "still-here" }]);
    assert.deepEqual(await query(outpost.dataDir, "SELECT device FROM devices"), [{ device: "still-here" }]);
    assert.deepEqual(await query(outpost.dataDir, "SELECT scope FROM model_assignments"), []);
    assert.deepEqual(await query(outpost.dataDir, "SELECT name FROM models"), []);
    assert.deepEqual(calibratedBundles(outpost.dataDir), []);
    const [ended] = (await getJson(outpost, "/v1/events?device=gone-faulty")).events;
    assert.equal(ended.id, open.id);
    assert.equal(ended.open, false, JSON.stringify(ended));
    assert.equal(ended.endReason, "forgotten");
    assert.equal(Date.parse(ended.end), fault.readings[fault.faultStart + 19].ts, "ends at its last reading's time");
    const line = outpost.log().split("\n").find((l) => l.includes('"detect.devices_forgotten"'));
    assert.match(line ?? "", /"devices":2.*"episodesEnded":1/, outpost.log());

    // The quiet device returns: it is new to detection, and its model's version counts on.
    await replay(outpost.url, "gone-quiet", normal.readings.slice(CALIBRATION + 10, 2 * CALIBRATION + 20));
    await scoredThrough(outpost.url, "gone-quiet", normal.readings[2 * CALIBRATION + 19].ts);
    const models = await query(outpost.dataDir, "SELECT name, version FROM models");
    assert.deepEqual(models, [{ name: "baseline/gone-quiet", version: "cal-2" }]);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("while it runs, a device retention forgets loses its metric series and its place in /v1/devices", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { logLevel: "info" });
  // 18 s of retention; the store applies it every minute.
  await Deno.writeTextFile(
    manifest,
    (await Deno.readTextFile(manifest)).replace("  storage:\n", "  storage:\n    retentionHours: 0.005\n"),
  );
  const outpost = await startOutpost(manifest);
  const scoreSeries = async () =>
    (await (await fetch(`${outpost.url}/metrics`)).text()).split("\n")
      .filter((line) => line.startsWith("outpost_device_score{")).map((line) => line.split(" ")[0]);
  try {
    const normal = simulateNormalRecording({ seed: 2, hours: 0.2 });
    await replay(outpost.url, "gone-a", normal.readings.slice(0, CALIBRATION + 10));
    await scoredThrough(outpost.url, "gone-a", normal.readings[CALIBRATION + 9].ts);
    assert.deepEqual(await scoreSeries(), ['outpost_device_score{device="gone-a"}']);
    // Another device keeps sending (retention always keeps the store's newest reading).
    const started = performance.now();
    while (!outpost.log().includes('"detect.devices_forgotten"')) {
      assert.ok(performance.now() - started < 100_000, outpost.log());
      await replay(outpost.url, "keeper", [{ ts: Date.now(), values: normal.readings[0].values }]);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    await eventually(scoreSeries, (series) => series.length === 0, 5_000);
    assert.deepEqual(await listedDevices(outpost), ["keeper"]);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a device that came back while it was forgotten loses the episode and the debouncer inputs that led to it, nothing else", async () => {
  await withTempDatabase(async (database) => {
    const state = { modelId: 3, center: [1, 2], debounce: { recent: [true, true, true], quietRun: 0, modelId: 3 } };
    const row = (device: string, baselineJson: string) => ({
      device,
      state: "active" as const,
      calibrationAfterId: 0,
      readings: 10,
      lastReadingId: 10,
      anomaly: true,
      openEventId: 7,
      baselineJson,
    });
    await commitDerived(database.client, [
      ...upsertDeviceStatements([row("back", JSON.stringify(state)), row("damaged", "{not json")], Date.now()),
      dropEpisodesStatement(["back", "damaged"]),
    ]);
    const rows = await database.client.execute(
      "SELECT device, anomaly, open_event_id, baseline_json FROM devices ORDER BY device",
    );
    const { debounce: _dropped, ...kept } = state;
    assert.deepEqual(rows.rows.map((r) => [r.device, r.anomaly, r.open_event_id]), [
      ["back", 0, null],
      ["damaged", 0, null],
    ]);
    assert.deepEqual(JSON.parse(String(rows.rows[0].baseline_json)), kept);
    assert.equal(rows.rows[1].baseline_json, "{not json");
  });
});
