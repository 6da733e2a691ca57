/**
 * What an operator sees and does with the drift-robust detector (issue 10, parts 2 and 4), on the
 * plant simulator, against the real program over loopback: episodes in the log, /v1/events,
 * /v1/devices and /metrics with live figures; false alarms and accepted operating points; a
 * baseline that survives a restart unchanged; calibration by seconds; sensor roles.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type OutpostProcess, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay, scoredThrough } from "./helpers/replay.ts";
import { type PlantRecording, simulateFaultRecording, simulateNormalRecording } from "./sim/plant_simulator.ts";

const TOKEN = "operator-test-token";
const CALIBRATION = 400;
const SCORED_MS = 20_000;

interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** A JSON API call; POSTs carry the admin token unless `token` is null. */
async function call(
  url: string,
  path: string,
  options: { post?: boolean; token?: string | null } = {},
): Promise<Answer> {
  const token = options.token === undefined ? TOKEN : options.token;
  const response = await fetch(`${url}${path}`, {
    method: options.post ? "POST" : "GET",
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const text = await response.text();
  const type = response.headers.get("content-type") ?? "";
  assert.match(type, /application\/json/, `${path}: ${response.status} ${type} ${text}`);
  return { status: response.status, body: JSON.parse(text) };
}

const post = (url: string, path: string, token?: string | null) => call(url, path, { post: true, token });

/** The child's JSON log lines with this `event`. */
function logLines(outpost: OutpostProcess, event: string): Record<string, unknown>[] {
  return outpost.log().split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line))
    .filter((entry) => entry.event === event);
}

/** The child's log without the lines of other components, for failure messages. */
function detectLog(outpost: OutpostProcess): string {
  return outpost.log().split("\n").filter((line) => !/"event":"(store|forward|http|outpost)\./.test(line)).join("\n");
}

/** The log line named `event` about anomaly event `id` (given as `eventId`, or `id`). */
function eventLine(outpost: OutpostProcess, events: string[], id: number): Record<string, unknown> | undefined {
  return events.flatMap((event) => logLines(outpost, event)).find((line) => line.eventId === id || line.id === id);
}

async function deviceRow(url: string, device: string) {
  const { body } = await call(url, "/v1/devices");
  return body.devices.find((row: { device: string }) => row.device === device);
}

async function events(url: string, device: string) {
  const { status, body } = await call(url, `/v1/events?device=${encodeURIComponent(device)}`);
  assert.equal(status, 200);
  return body.events as {
    id: number;
    open: boolean;
    start: string;
    end: string | null;
    peakScore: number;
    model: string;
    sensors: string[];
    readings: number;
    endReason: string | null;
    verdict: { kind: string; at: string } | null;
  }[];
}

/** The value of a per-device series in a Prometheus text exposition, or undefined. */
function sample(metrics: string, name: string, device: string): number | undefined {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name}{device="${device}"} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

async function calibratedModel(dataDir: string) {
  const root = join(dataDir, "models", "calibrated");
  const dirs = [...Deno.readDirSync(root)].map((entry) => join(root, entry.name));
  assert.equal(dirs.length, 1, dirs.join(", "));
  return JSON.parse(await Deno.readTextFile(join(dirs[0], "model.json")));
}

Deno.test("a fault shows as an episode in the log, /v1/events, /v1/devices and /metrics, with live figures while open", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir));
  try {
    const device = "pump imbalance";
    const recording = simulateFaultRecording({ seed: 1, fault: "imbalance" });
    const { readings, faultStart, faultEnd } = recording;
    assert.ok(faultStart >= CALIBRATION + 30 && faultEnd - faultStart > 80, `${faultStart}-${faultEnd}`);

    // Into the fault, and stop there: the episode is open.
    await replay(outpost.url, device, readings.slice(0, faultStart + 20));
    await scoredThrough(outpost.url, device, readings[faultStart + 19].ts, SCORED_MS);
    const [open] = (await events(outpost.url, device)).filter((e) => e.open);
    assert.ok(open, JSON.stringify(await events(outpost.url, device)));
    assert.ok(open.readings > 0 && open.peakScore > 1 && open.sensors.length > 0, JSON.stringify(open));
    const started = eventLine(outpost, ["detect.episode_started"], open.id);
    assert.ok(started, `no detect.episode_started line for event ${open.id}:\n${detectLog(outpost)}`);
    assert.equal(started.device, device);
    assert.equal(typeof started.score, "number");
    assert.ok((started.score as number) > 1, JSON.stringify(started));
    assert.ok(Array.isArray(started.sensors) && started.sensors.length > 0, JSON.stringify(started));
    assert.equal(started.model, open.model);
    assert.match(open.model, /^baseline\/pump imbalance@cal-1$/);

    const row = await deviceRow(outpost.url, device);
    assert.equal(row.openEvent?.id, open.id, JSON.stringify(row));
    assert.equal(row.anomaly, true);
    let metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.equal(sample(metrics, "outpost_device_anomaly", device), 1, metrics);
    assert.equal(sample(metrics, "outpost_device_score", device), row.latestScore.score);

    // Forty more fault readings: the open event's figures follow them.
    await replay(outpost.url, device, readings.slice(faultStart + 20, faultStart + 60));
    await scoredThrough(outpost.url, device, readings[faultStart + 59].ts, SCORED_MS);
    const later = (await events(outpost.url, device)).find((e) => e.id === open.id)!;
    assert.equal(later.open, true);
    assert.ok(later.readings >= open.readings + 30, `readings ${open.readings} → ${later.readings}: frozen`);
    assert.ok(later.peakScore >= open.peakScore);
    assert.equal((await deviceRow(outpost.url, device)).openEvent.peakScore, later.peakScore);

    // The rest: the fault ends and so does the episode.
    await replay(outpost.url, device, readings.slice(faultStart + 60));
    const last = await scoredThrough(outpost.url, device, readings.at(-1)!.ts, SCORED_MS);
    const ended = (await events(outpost.url, device)).find((e) => e.id === open.id)!;
    assert.equal(ended.open, false, JSON.stringify(ended));
    assert.ok(ended.endReason === "cleared" || ended.endReason === "rebaselined", JSON.stringify(ended));
    assert.ok(ended.peakScore > 1 && ended.readings >= later.readings);
    assert.ok(Date.parse(ended.end!) >= Date.parse(ended.start));
    const endLine = eventLine(outpost, ["detect.episode_ended", "detect.rebaselined"], open.id);
    assert.ok(
      endLine,
      `no detect.episode_ended or detect.rebaselined line for event ${open.id}:\n${detectLog(outpost)}`,
    );
    assert.equal(endLine.device, device);
    assert.equal(endLine.model, ended.model);
    assert.equal(endLine.readings, ended.readings);
    assert.equal(endLine.event === "detect.rebaselined" ? "rebaselined" : endLine.reason, ended.endReason);

    assert.equal(last.lastSeen, new Date(readings.at(-1)!.ts).toISOString());
    assert.equal(typeof last.latestScore.score, "number");
    metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.equal(sample(metrics, "outpost_device_score", device), last.latestScore.score, metrics);
    assert.equal(sample(metrics, "outpost_device_anomaly", device), last.anomaly ? 1 : 0);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Replays a step fault up to `faultStart + into` and returns its open event. */
async function openEpisode(outpost: OutpostProcess, device: string, recording: PlantRecording, into: number) {
  const { readings, faultStart } = recording;
  await replay(outpost.url, device, readings.slice(0, faultStart + into));
  await scoredThrough(outpost.url, device, readings[faultStart + into - 1].ts, SCORED_MS);
  const open = (await events(outpost.url, device)).filter((e) => e.open);
  assert.equal(open.length, 1, JSON.stringify(open));
  return open[0];
}

Deno.test("operators mark false alarms and accept operating points with the admin token; the baseline takes the present state", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir);
  const noToken = await startOutpost(manifest);
  try {
    for (const path of ["/v1/events/1/false-alarm", "/v1/devices/pump-a/accept"]) {
      const answer = await post(noToken.url, path, null);
      assert.deepEqual([answer.status, answer.body.error], [403, "admin_disabled"], path);
    }
  } finally {
    await noToken.stop();
  }
  await Deno.remove(join(dir, "data"), { recursive: true });

  const outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } });
  try {
    // A step on a fast channel the operator knows is fine (a new setpoint): a false alarm.
    const step = simulateFaultRecording({ seed: 3, fault: "step" });
    const { readings, faultStart, faultEnd } = step;
    assert.ok(faultEnd - faultStart >= 90, `${faultStart}-${faultEnd}`);
    const open = await openEpisode(outpost, "pump-a", step, 25);

    const wrong = await post(outpost.url, `/v1/events/${open.id}/false-alarm`, "not-the-token");
    assert.deepEqual([wrong.status, wrong.body.error], [401, "unauthorized"]);
    assert.equal((await events(outpost.url, "pump-a")).find((e) => e.id === open.id)!.open, true);

    const before = Date.now();
    const marked = await post(outpost.url, `/v1/events/${open.id}/false-alarm`);
    const after = Date.now();
    assert.equal(marked.status, 200, JSON.stringify(marked.body));
    assert.deepEqual(marked.body, {
      event: open.id,
      verdict: "false_alarm",
      device: "pump-a",
      endedEvent: open.id,
      baselineAccepted: true,
    });
    const [event] = await events(outpost.url, "pump-a");
    assert.equal(event.id, open.id);
    assert.deepEqual([event.open, event.endReason, event.verdict?.kind], [false, "false_alarm", "false_alarm"]);
    const at = Date.parse(event.verdict!.at);
    assert.ok(at >= before - 1 && at <= after + 1, `verdict at ${event.verdict!.at}`);
    assert.equal(eventLine(outpost, ["detect.false_alarm"], open.id)?.baselineAccepted, true, detectLog(outpost));
    const row = await deviceRow(outpost.url, "pump-a");
    assert.deepEqual([row.openEvent, row.anomaly], [null, false]);

    // The step goes on: at the accepted level, the following readings are normal.
    await replay(outpost.url, "pump-a", readings.slice(faultStart + 25, faultEnd - 5));
    await scoredThrough(outpost.url, "pump-a", readings[faultEnd - 6].ts, SCORED_MS);
    const rows = await fetchReadings(outpost.url, "pump-a", 10_000);
    const flagged = rows.slice(faultStart + 25).filter((r) => r.anomaly).length;
    assert.equal(flagged, 0, `${flagged} of ${rows.length - faultStart - 25} readings after the false alarm flagged`);
    assert.deepEqual((await events(outpost.url, "pump-a")).map((e) => e.id), [open.id]);

    // Accepting an operating point ends the open episode as `accepted`; with none open it ends nothing.
    const other = simulateFaultRecording({ seed: 4, fault: "step" });
    const second = await openEpisode(outpost, "pump-b", other, 25);
    const accepted = await post(outpost.url, "/v1/devices/pump-b/accept");
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.deepEqual(accepted.body, { device: "pump-b", endedEvent: second.id, baselineAccepted: true });
    const [closed] = await events(outpost.url, "pump-b");
    assert.deepEqual([closed.id, closed.open, closed.endReason, closed.verdict], [second.id, false, "accepted", null]);
    assert.ok(logLines(outpost, "detect.operating_point_accepted").some((l) => l.device === "pump-b"));
    const again = await post(outpost.url, "/v1/devices/pump-b/accept");
    assert.deepEqual([again.status, again.body], [200, { device: "pump-b", endedEvent: null, baselineAccepted: true }]);

    const unknownDevice = await post(outpost.url, "/v1/devices/no-such-pump/accept");
    assert.deepEqual([unknownDevice.status, unknownDevice.body.error], [404, "unknown_device"]);
    const unknownEvent = await post(outpost.url, "/v1/events/999999/false-alarm");
    assert.deepEqual([unknownEvent.status, unknownEvent.body.error], [404, "unknown_event"]);
    for (const id of ["abc", "0", "-1", "1.5", "01"]) {
      const bad = await post(outpost.url, `/v1/events/${id}/false-alarm`);
      assert.deepEqual([bad.status, bad.body.error], [400, "bad_request"], id);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Replays `readings` and waits until the last one is scored; returns every reading of the device. */
async function replayScored(outpost: OutpostProcess, device: string, readings: PlantRecording["readings"]) {
  await replay(outpost.url, device, readings);
  await scoredThrough(outpost.url, device, readings.at(-1)!.ts, SCORED_MS);
  return await fetchReadings(outpost.url, device, 10_000);
}

Deno.test("a restart keeps the baseline: 1.5 h of normal running scores the same in one go or in two halves, and ≤ 5% is flagged", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const manifests = await Promise.all(dirs.map((dir) => writeManifest(dir, { logLevel: "warn" })));
  const recording = simulateNormalRecording({ seed: 31, hours: 1.5 });
  const { readings } = recording;
  // Not on a multiple of the 16-reading refresh of the scoring centres, nor of a replay batch.
  const half = 2_713;
  const started: OutpostProcess[] = [];
  try {
    const [whole, split] = await Promise.all(manifests.map((manifest) => startOutpost(manifest)));
    started.push(whole, split);
    const device = "pump-long";
    const [inOneGo, firstHalf] = await Promise.all([
      replayScored(whole, device, readings),
      replayScored(split, device, readings.slice(0, half)),
    ]);
    assert.equal(await split.stop(), 0);
    const restarted = await startOutpost(manifests[1]);
    started.push(restarted);
    const inTwo = await replayScored(restarted, device, readings.slice(half));

    assert.equal(inOneGo.length, readings.length);
    assert.equal(inTwo.length, readings.length);
    const scored = inOneGo.slice(CALIBRATION);
    assert.ok(scored.every((r) => typeof r.score === "number"));
    const share = scored.filter((r) => r.anomaly).length / scored.length;
    assert.ok(share <= 0.05, `${(share * 100).toFixed(1)}% of normal readings flagged`);

    assert.deepEqual(inTwo.slice(0, half).map((r) => r.score), firstHalf.map((r) => r.score), "rescored after restart");
    assert.equal((await deviceRow(restarted.url, device)).model.version, "cal-1", "calibrated again after restart");
    const different = inOneGo.flatMap((r, i) => {
      const [x, y] = [r.score, inTwo[i].score];
      const relative = x === y
        ? 0
        : x === null || y === null
        ? Infinity
        : Math.abs(x - y) / Math.max(Math.abs(x), 0.01);
      return relative <= 1e-6 && r.anomaly === inTwo[i].anomaly
        ? []
        : [`#${i}: ${x}/${r.anomaly} vs ${y}/${inTwo[i].anomaly} (${relative.toExponential(1)})`];
    });
    assert.deepEqual(different.slice(0, 10), [], `${different.length} readings differ between one go and two halves`);
  } finally {
    for (const outpost of started) await outpost.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("calibration.seconds: a 10 Hz device calibrates on 60 s of readings, not on the first 400", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { seconds: 60 }"], logLevel: "info" }),
  );
  try {
    const device = "fast-pump";
    const recording = simulateNormalRecording({ seed: 41, hours: 75 / 3600, hz: 10 });
    const { readings } = recording;
    assert.equal(readings.length, 750);
    assert.equal(readings[1].ts - readings[0].ts, 100);
    const rows = await replayScored(outpost, device, readings);
    const firstScored = rows.findIndex((r) => r.score !== null);
    assert.ok(firstScored >= 599 && firstScored <= 602, `first scored reading #${firstScored}`);
    assert.ok(rows.slice(firstScored).every((r) => r.score !== null));

    const model = await calibratedModel(outpost.dataDir);
    const calibrated = model.provenance.readings;
    assert.ok(calibrated >= 599 && calibrated <= 602, `calibrated on ${calibrated} readings`);
    assert.equal(Date.parse(model.provenance.lastTs) - Date.parse(model.provenance.firstTs), (calibrated - 1) * 100);
    const line = logLines(outpost, "detect.calibrated").find((l) => l.device === device);
    assert.equal(line?.readings, calibrated, detectLog(outpost));
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sensor roles: plant temperatures are measured slow and vibration fast; the manifest's role overrides", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const manifests = await Promise.all([
    writeManifest(dirs[0], { logLevel: "warn" }),
    writeManifest(dirs[1], { detection: ["sensors: { fluid_temperature: { role: fast } }"], logLevel: "warn" }),
  ]);
  const readings = simulateNormalRecording({ seed: 51, hours: 0.15 }).readings.slice(0, CALIBRATION + 20);
  const started: OutpostProcess[] = [];
  try {
    started.push(...await Promise.all(manifests.map((manifest) => startOutpost(manifest))));
    await Promise.all(started.map((outpost) => replayScored(outpost, "pump-r", readings)));
    const [measured, overridden] = await Promise.all(started.map((outpost) => calibratedModel(outpost.dataDir)));
    const role = (
      model: { features: string[]; baseline: { roles: string[]; roleSource: unknown[] } },
      sensor: string,
    ) => {
      const j = model.features.indexOf(sensor);
      assert.ok(j >= 0, `${sensor} not in ${model.features}`);
      return [model.baseline.roles[j], model.baseline.roleSource[j]];
    };
    for (const sensor of ["motor_temperature", "fluid_temperature"]) {
      const [kind, source] = role(measured, sensor);
      assert.equal(kind, "slow", sensor);
      assert.ok(typeof source === "number" && source < 0.8, `${sensor}: ${source}`);
    }
    for (const sensor of ["vibration_x", "vibration_y"]) {
      const [kind, source] = role(measured, sensor);
      assert.equal(kind, "fast", sensor);
      assert.equal(typeof source, "number", sensor);
    }
    assert.ok(!measured.baseline.roleSource.includes("manifest"));

    assert.deepEqual(role(overridden, "fluid_temperature"), ["fast", "manifest"]);
    assert.deepEqual(role(overridden, "motor_temperature"), role(measured, "motor_temperature"));
    assert.deepEqual(overridden.provenance.slowSensors, ["motor_temperature"]);
    assert.ok(measured.provenance.slowSensors.includes("fluid_temperature"));
  } finally {
    for (const outpost of started) await outpost.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});
