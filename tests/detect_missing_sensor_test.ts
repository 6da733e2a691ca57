/**
 * A sensor that stops being sent (issue 10, review item 1), against the real program over
 * loopback: the device keeps being scored on the sensors it still sends, shows as degraded with
 * the missing sensor named in /v1/devices (across a restart), is whole again when the sensor
 * returns, and recalibrates on the sensors it has when an admin asks.
 */
import assert from "node:assert/strict";
import { eventually } from "./helpers/eventually.ts";
import { type OutpostProcess, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay, type ScoredReading } from "./helpers/replay.ts";
import { simulateFaultRecording } from "./sim/plant_simulator.ts";

const TOKEN = "missing-sensor-token";
const CALIBRATION = 400;
/** Readings in the detector's window: a returning sensor is scored again once it fills it. */
const WINDOW = 20;
const DROPPED = "pressure";

interface DeviceRow {
  device: string;
  state: string;
  model: { version: string; deactivated: unknown } | null;
  degraded: { missingSensors: { sensor: string; since: string }[]; scoring: string } | null;
  latestScore: { ts: string } | null;
}

async function deviceRow(url: string, device: string): Promise<DeviceRow | undefined> {
  const body = await (await fetch(`${url}/v1/devices`)).json();
  return body.devices.find((row: DeviceRow) => row.device === device);
}

/** Waits until every one of the device's `count` readings has been through scoring. */
async function processed(url: string, device: string, count: number): Promise<ScoredReading[]> {
  return await eventually(
    () => fetchReadings(url, device, 10_000),
    (rows) => rows.length === count && (rows[count - 1].score !== null || rows[count - 1].flags !== undefined),
    20_000,
  );
}

function without(readings: { ts: number; values: Record<string, number> }[], sensor: string) {
  return readings.map((reading) => {
    const { [sensor]: _dropped, ...values } = reading.values;
    return { ts: reading.ts, values };
  });
}

Deno.test("a sensor that stops being sent: the device is scored on the rest, degraded with the sensor named, whole again when it returns", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const manifests = await Promise.all(dirs.map((dir) => writeManifest(dir, { logLevel: "info" })));
  const env = { OUTPOST_ADMIN_TOKEN: TOKEN };
  // The same readings to two Outposts; one restarts while the sensor is missing.
  const [outpost, steady]: OutpostProcess[] = await Promise.all(manifests.map((m) => startOutpost(m, { env })));
  const started = [outpost, steady];
  let restarted = outpost;
  try {
    const device = "pump-m";
    // An imbalance (vibration) while pressure is not sent: still detected on the sensors present.
    const { readings, faultStart, faultEnd } = simulateFaultRecording({ seed: 2, fault: "imbalance" });
    const dropFrom = CALIBRATION + 30;
    const returnAt = faultEnd + 60;
    assert.ok(faultStart > dropFrom + 40 && returnAt + 100 < readings.length, `${faultStart}-${faultEnd}`);
    const send = async (to: OutpostProcess[], rows: ReturnType<typeof without>, count: number) => {
      await Promise.all(to.map((each) => replay(each.url, device, rows)));
      return (await Promise.all(to.map((each) => processed(each.url, device, count))))[0];
    };

    await send(started, readings.slice(0, dropFrom), dropFrom);
    assert.equal((await deviceRow(outpost.url, device))?.degraded, null);

    let rows = await send(started, without(readings.slice(dropFrom, faultStart - 20), DROPPED), faultStart - 20);
    const degradedRows = rows.slice(dropFrom);
    assert.ok(
      degradedRows.every((r) => typeof r.score === "number" && r.flags === `scored without: ${DROPPED}`),
      JSON.stringify(degradedRows.find((r) => r.score === null || r.flags !== `scored without: ${DROPPED}`)),
    );
    const flagged = degradedRows.filter((r) => r.anomaly).length;
    assert.ok(flagged <= 0.05 * degradedRows.length, `${flagged} of ${degradedRows.length} normal readings flagged`);
    const since = new Date(readings[dropFrom].ts).toISOString();
    const row = await deviceRow(outpost.url, device);
    assert.equal(row?.state, "active");
    assert.deepEqual(row?.degraded, { missingSensors: [{ sensor: DROPPED, since }], scoring: "other_sensors" });
    assert.equal(row?.latestScore?.ts, new Date(readings[faultStart - 21].ts).toISOString());
    const missingLine = outpost.log().split("\n").find((line) => line.includes('"detect.sensors_missing"'));
    assert.ok(missingLine, "a log line names the missing sensor");
    assert.deepEqual(JSON.parse(missingLine).sensors, [DROPPED]);

    // A restart: the device is still shown degraded, since the same reading.
    assert.equal(await outpost.stop(), 0);
    restarted = await startOutpost(manifests[0], { env });
    started[0] = restarted;
    assert.deepEqual((await deviceRow(restarted.url, device))?.degraded?.missingSensors, [{ sensor: DROPPED, since }]);

    // The fault on the sensors present is detected.
    rows = await send(started, without(readings.slice(faultStart - 20, returnAt), DROPPED), returnAt);
    const caught = rows.slice(faultStart, faultEnd).filter((r) => r.anomaly).length;
    assert.ok(caught >= 0.5 * (faultEnd - faultStart), `${caught} of ${faultEnd - faultStart} fault readings flagged`);
    const events = (await (await fetch(`${restarted.url}/v1/events?device=${device}`)).json()).events;
    assert.ok(events.some((e: { sensors: string[] }) => e.sensors[0]?.startsWith("vibration")), JSON.stringify(events));
    assert.ok(events.every((e: { sensors: string[] }) => !e.sensors.includes(DROPPED)), JSON.stringify(events));

    // The sensor comes back: whole again, scored on every sensor once it fills the window.
    rows = await send(started, readings.slice(returnAt, returnAt + 100), returnAt + 100);
    assert.equal((await deviceRow(restarted.url, device))?.degraded, null);
    assert.ok(rows.slice(returnAt, returnAt + WINDOW - 1).every((r) => r.flags === `scored without: ${DROPPED}`));
    assert.ok(rows.slice(returnAt + WINDOW - 1).every((r) => typeof r.score === "number" && r.flags === undefined));
    assert.ok(restarted.log().includes('"detect.sensors_returned"'));

    // The restart changed no score or flag.
    const other = await fetchReadings(steady.url, device, 10_000);
    const differ = rows.flatMap((r, i) =>
      r.score === other[i].score && r.anomaly === other[i].anomaly && r.flags === other[i].flags ? [] : [i]
    );
    assert.deepEqual(differ.slice(0, 10), [], `${differ.length} readings scored differently after the restart`);
  } finally {
    for (const each of started) await each.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sensor that stays away: POST /v1/devices/:device/calibrate recalibrates on the sensors the device still sends", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { readings: 100 }"], logLevel: "info" }),
    { env: { OUTPOST_ADMIN_TOKEN: TOKEN } },
  );
  try {
    const device = "pump-n";
    const { readings } = simulateFaultRecording({ seed: 5, fault: "step" });
    await replay(outpost.url, device, readings.slice(0, 120));
    await replay(outpost.url, device, without(readings.slice(120, 150), DROPPED));
    await processed(outpost.url, device, 150);
    assert.deepEqual((await deviceRow(outpost.url, device))?.degraded?.missingSensors.map((m) => m.sensor), [DROPPED]);

    // An operator accepts the present state while the sensor is away: its centres stay as they were.
    const post = (path: string) =>
      fetch(`${outpost.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
    const accepted = await post(`/v1/devices/${device}/accept`);
    assert.deepEqual(await accepted.json(), { device, endedEvent: null, baselineAccepted: true });
    await replay(outpost.url, device, without(readings.slice(150, 160), DROPPED));
    const afterAccept = (await processed(outpost.url, device, 160)).slice(150);
    assert.ok(afterAccept.every((r) => typeof r.score === "number" && r.score < 1), JSON.stringify(afterAccept));

    const answer = await post(`/v1/devices/${device}/calibrate`);
    assert.equal(answer.status, 202, await answer.text());
    await replay(outpost.url, device, without(readings.slice(160, 280), DROPPED));
    const rows = await processed(outpost.url, device, 280);
    const row = await eventually(() => deviceRow(outpost.url, device), (r) => r?.model?.version === "cal-2");
    assert.equal(row?.degraded, null, "the new model does not expect the sensor");
    assert.deepEqual([row?.state, row?.model?.deactivated], ["active", null]);
    assert.ok(rows.slice(120).every((r) => typeof r.score === "number"), "scored throughout the recalibration");
    assert.ok(rows.slice(261).every((r) => r.flags === undefined), JSON.stringify(rows.at(-1)));
    assert.ok(!outpost.log().includes('"detect.sensors_returned"'), "left out of the new model is not back");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
