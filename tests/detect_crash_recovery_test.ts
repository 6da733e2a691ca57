import assert from "node:assert/strict";
import { join } from "node:path";
import { DeviceStates } from "../src/detect/device_states.ts";
import { WorkMarkers } from "../src/detect/work_markers.ts";
import { commitDerived } from "../src/store/derived_commit.ts";
import { upsertDeviceStatements } from "../src/store/device_rows.ts";
import { DEFAULT_DETECTION as DETECTION } from "./helpers/detection_defaults.ts";
import { query, withTempDatabase } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const TOKEN = "crash-recovery-token";
const env = { OUTPOST_ADMIN_TOKEN: TOKEN };

async function json(url: string, init?: RequestInit) {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.json() };
}

const recalibrate = (url: string, device: string) =>
  json(`${url}/v1/devices/${encodeURIComponent(device)}/calibrate`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
  });

async function device(url: string, name: string) {
  const { body } = await json(`${url}/v1/devices?limit=1000`);
  return body.devices.find((d: { device: string }) => d.device === name);
}

/** `count` readings of `sensors` sensors each, one second apart. */
function wideReadings(device: string, count: number, sensors: number, startTs: number) {
  let seed = 7;
  const random = () => (seed = (seed * 16_807) % 2_147_483_647) / 2_147_483_647;
  return Array.from({ length: count }, (_, i) => ({
    device,
    ts: startTs + i * 1000,
    values: Object.fromEntries(Array.from({ length: sensors }, (_, s) => [`sensor_${s}`, 20 + random()])),
  }));
}

Deno.test("a calibration that runs the process out of memory quarantines its device after the restart; others calibrate and score", async () => {
  const dir = await Deno.makeTempDir();
  // Bounds raised far past the defaults: 2,000 calibration readings x 300 sensors do not fit in the 64 MB heap.
  const manifest = await writeManifest(dir, {
    limits: ["sensorsPerReading: 300", "sensorsPerDevice: 300"],
    detection: ["calibration: { readings: 2000 }"],
    bodyLimitBytes: 1024 * 1024,
    logLevel: "warn",
  });
  let outpost = await startOutpost(manifest, { env });
  try {
    const readings = wideReadings("wide", 2000, 300, 1_763_805_600_000);
    for (let i = 0; i < readings.length; i += 80) {
      const response = await postJson(`${outpost.url}/v1/readings`, { readings: readings.slice(i, i + 80) });
      assert.equal(response.status, 202, await response.text());
    }
    const died = await Promise.race([
      outpost.process.status,
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 20_000)),
    ]);
    assert.ok(died && !died.success, "the calibration took the process down");
    assert.match(outpost.log(), /out of memory/i);

    // The same manifest: without the quarantine this restart would die the same way.
    outpost = await startOutpost(manifest, { env });
    const wide = await device(outpost.url, "wide");
    assert.equal(wide.state, "quarantined");
    assert.match(wide.quarantine.reason, /died while calibrating on 2000 readings/);
    const ready = await json(`${outpost.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(ready.body.status, "degraded");
    assert.match(JSON.stringify(ready.body.checks), /1 device\(s\) quarantined/);
    assert.match(await (await fetch(`${outpost.url}/metrics`)).text(), /outpost_devices_quarantined 1/);

    // Normal ingest and detection go on; the quarantined device's new readings are kept and flagged.
    const recording = simulateRecording({ seed: 41, fault: "step", calibration: 2000, seconds: 2020 });
    await replay(outpost.url, "pump", recording.readings);
    const more = await postJson(`${outpost.url}/v1/readings`, {
      readings: wideReadings("wide", 1, 300, 1_763_807_700_000),
    });
    assert.equal(more.status, 202);
    await more.body?.cancel();
    const pump = await eventually(
      () => fetchReadings(outpost.url, "pump"),
      (r) => r.length === 2020 && r[2019].score !== null,
      15_000,
    );
    assert.ok(pump.slice(2000).every((r) => typeof r.score === "number"));
    const wideRows = await eventually(() => fetchReadings(outpost.url, "wide"), (r) => r[2000]?.flags !== undefined);
    assert.equal(wideRows[2000].flags, "device quarantined");

    assert.equal((await recalibrate(outpost.url, "nobody")).status, 404);
    assert.equal((await recalibrate(outpost.url, "wide")).status, 202);
    const lifted = await device(outpost.url, "wide");
    assert.deepEqual([lifted.state, lifted.quarantine], ["calibrating", null]);
    assert.equal((await json(`${outpost.url}/readyz`)).body.status, "ready");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readings of a scoring pass the process died in are skipped after the restart, flagged and counted", async () => {
  const dir = await Deno.makeTempDir();
  const lines = { detection: ["calibration: { readings: 50 }"], logLevel: "warn" };
  const manifest = await writeManifest(dir, lines);
  let outpost = await startOutpost(manifest);
  const recording = simulateRecording({ seed: 42, fault: "step", calibration: 50, seconds: 200 });
  try {
    await replay(outpost.url, "pump-a", recording.readings.slice(0, 100));
    await eventually(() => fetchReadings(outpost.url, "pump-a"), (r) => r.length === 100 && r[99].score !== null);
    await outpost.stop();
    // The next 50 readings stored by a process that does not score, then the marker a pass over
    // them leaves when the process dies in it.
    await writeManifest(dir, { ...lines, detection: ["enabled: false"], apiPort: new URL(outpost.url).port as never });
    outpost = await startOutpost(manifest);
    await replay(outpost.url, "pump-a", recording.readings.slice(100, 150));
    await outpost.stop();

    const [{ first, last }] = await query(
      outpost.dataDir,
      "SELECT min(id) AS first, max(id) AS last FROM readings WHERE score IS NULL AND id > 100",
    );
    new WorkMarkers(join(outpost.dataDir, "detect", "work")).begin({
      kind: "pass",
      fromId: Number(first),
      toId: Number(last),
      startedAt: new Date().toISOString(),
    });
    await writeManifest(dir, { ...lines, apiPort: new URL(outpost.url).port as never });
    outpost = await startOutpost(manifest);
    await replay(outpost.url, "pump-a", recording.readings.slice(150, 200));
    const rows = await eventually(
      () => fetchReadings(outpost.url, "pump-a"),
      (r) => r.length === 200 && r[199].score !== null,
    );
    assert.ok(
      rows.slice(100, 150).every((r) => r.score === null && /^not scored: the process died/.test(r.flags ?? "")),
    );
    assert.ok(rows.slice(150).every((r) => typeof r.score === "number"), "scoring goes on after the skipped pass");
    assert.match(
      await (await fetch(`${outpost.url}/metrics`)).text(),
      /outpost_unscored_readings_total\{reason="pass_interrupted"\} 50/,
    );
    assert.equal((await device(outpost.url, "pump-a")).readings, 200);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a model the process died running is deactivated for its scope after the restart; other devices keep scoring", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 50 }"], logLevel: "error" });
  let outpost = await startOutpost(manifest);
  const recording = simulateRecording({ seed: 43, fault: "spikes", calibration: 50, seconds: 120 });
  try {
    for (const name of ["pump-a", "pump-b"]) {
      await replay(outpost.url, name, recording.readings.slice(0, 60));
      await eventually(() => fetchReadings(outpost.url, name), (r) => r.length === 60 && r[59].score !== null);
    }
    const model = (await device(outpost.url, "pump-a")).model;
    await outpost.stop();
    // What a process that died inside this model's run leaves behind.
    new WorkMarkers(join(outpost.dataDir, "detect", "work")).begin({
      kind: "inference",
      modelId: model.id,
      rows: 10,
      startedAt: new Date().toISOString(),
    });
    outpost = await startOutpost(manifest);
    for (const name of ["pump-a", "pump-b"]) await replay(outpost.url, name, recording.readings.slice(60, 120));
    const b = await eventually(() => fetchReadings(outpost.url, "pump-b"), (r) => r[119]?.score !== null);
    assert.ok(b.slice(60).every((r) => typeof r.score === "number"));
    const a = await eventually(() => fetchReadings(outpost.url, "pump-a"), (r) => r[119]?.flags !== undefined);
    assert.ok(a.slice(60).every((r) => r.score === null && /^model deactivated: the process died/.test(r.flags!)));
    assert.match(
      (await device(outpost.url, "pump-a")).model.deactivated.reason,
      /the process died while this model ran/,
    );
    assert.match(
      await (await fetch(`${outpost.url}/metrics`)).text(),
      /outpost_model_deactivations_total\{cause="process_died"\} 1/,
    );
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a damaged baseline_json is not read as state, so loading the device cannot fail every pass", async () => {
  await withTempDatabase(async (database) => {
    const rows: [string, string][] = [
      ["not-json", "{not json"],
      ["number", "5"],
      ["array", "[1]"],
      ["centre-not-array", '{"modelId":3,"center":5}'],
      ["no-scoring", '{"modelId":3,"center":[1,2]}'],
      ["missing-shapeless", '{"missing":5}'],
      [
        "fault-shapeless",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"lastFault":{"peaks":1},"carry":{"carriers":[]}}',
      ],
      [
        "carry-seconds-shapeless",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"carry":{"peak":1,"peaks":[1],"carriers":[],"seconds":"60"}}',
      ],
      ["carry-primitive", '{"modelId":3,"center":[1,2],"scoring":[1,2],"carry":1,"lastFault":true}'],
      [
        "carry-seconds-negative",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"carry":{"peak":1,"peaks":[1],"carriers":[],"seconds":-1e12}}',
      ],
      [
        "carry-from-shapeless",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"carry":{"peak":1,"peaks":[1],"carriers":[],"from":"x"},"previousFrom":{"a":1}}',
      ],
      [
        "periods-shapeless",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"steady":1,"faded":{"ref":"x"},"gone":{"ref":[1],"sinceTs":5,"sum":[1],"count":1}}',
      ],
      [
        "carry-with-seconds",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"carry":{"peak":1,"peaks":[1],"carriers":[],"seconds":60}}',
      ],
      [
        "debounce-shapeless",
        '{"modelId":3,"center":[1,2],"scoring":[1,2],"debounce":{"recent":"x","quietRun":0,"modelId":3}}',
      ],
    ];
    await commitDerived(
      database.client,
      upsertDeviceStatements(
        rows.map(([device, baselineJson]) => ({
          device,
          state: "active" as const,
          calibrationAfterId: 0,
          readings: 1,
          lastReadingId: 1,
          anomaly: false,
          openEventId: null,
          baselineJson,
        })),
        Date.now(),
      ),
    );
    const devices = new DeviceStates(database.client, DETECTION);
    const loaded = Object.fromEntries(
      await Promise.all(rows.map(async ([device]) => [device, await devices.draft(device, 2)] as const)),
    );
    for (const device of ["not-json", "number", "array", "centre-not-array"]) {
      assert.equal(loaded[device].baseline, null);
    }
    assert.deepEqual(loaded["fault-shapeless"].baseline?.center, [1, 2]);
    assert.equal(loaded["fault-shapeless"].baseline?.lastFault, null);
    assert.equal(loaded["fault-shapeless"].baseline?.carry, null);
    // A string would be concatenated to, not added to, by the next step of the episode.
    assert.equal(loaded["carry-seconds-shapeless"].baseline?.carry, null);
    assert.equal(loaded["carry-with-seconds"].baseline?.carry?.seconds, 60);
    // A primitive where a fault belongs; a negative reading time would hold an episode for good.
    assert.equal(loaded["carry-primitive"].baseline?.carry, null);
    assert.equal(loaded["carry-primitive"].baseline?.lastFault, null);
    assert.equal(loaded["carry-seconds-negative"].baseline?.carry, null);
    assert.equal(loaded["carry-from-shapeless"].baseline?.carry, null);
    assert.equal(loaded["carry-from-shapeless"].baseline?.previousFrom, null);
    // A period that is not one would fail every copy of the state (its ref is spread).
    assert.equal(loaded["periods-shapeless"].baseline?.steady, null);
    assert.equal(loaded["periods-shapeless"].baseline?.faded, null);
    assert.deepEqual(loaded["periods-shapeless"].baseline?.gone, { ref: [1], sinceTs: 5, sum: [1], count: 1 });
    assert.equal(loaded["debounce-shapeless"].storedDebounce, null);
    assert.equal(loaded["missing-shapeless"].missing, null);
  });
});
