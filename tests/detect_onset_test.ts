/**
 * What counts towards an episode (`countsAsAnomalous` in baseline_tracker.ts): a rate of change
 * that brings a level back towards its centre does not, and just after an episode a new one needs
 * a score above RECOVERY_SCORE, and a level fault is over once its sensor's latest readings are
 * normal again. Then on plant recordings, replayed offline and through the
 * real program.
 */
import assert from "node:assert/strict";
import { FEATURES, LEVEL, RATE, referenceScore, SPREAD, WINDOW } from "../src/detect/baseline_features.ts";
import { fitBaseline } from "../src/detect/baseline_fit.ts";
import {
  advanceBaseline,
  type BaselineOptions,
  countsAsAnomalous,
  initialBaseline,
  RECENT_READINGS,
  RECOVERY_SCORE,
  scoringCentres,
  scoringTerms,
} from "../src/detect/baseline_tracker.ts";
import { replayOffline } from "./bench/detect_offline.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay, scoredThrough } from "./helpers/replay.ts";
import { simulateFaultRecording } from "./sim/plant_simulator.ts";

const OPTIONS: BaselineOptions = {
  adaptSeconds: 600,
  settleSeconds: 60,
  settleTolerance: 0.5,
  settleRatio: 0.6,
  acceptSeconds: 900,
};

function calibrated(seed: number) {
  const recording = simulateFaultRecording({ seed, fault: "hot_water" });
  const sensors = Object.keys(recording.readings[0].values);
  const rows = recording.readings.map((r) => sensors.map((s) => r.values[s]));
  const params = fitBaseline(sensors, rows.slice(0, 400), recording.readings.slice(0, 400).map((r) => r.ts), {
    sensitivity: 1,
    slowLevelTolerance: 3,
    sensors: {},
  });
  const s = sensors.length;
  const state = initialBaseline(params, s);
  const centres = scoringCentres(state, 401);
  /** Features with `sensor`'s level and rate this many thresholds off their centres. */
  const off = (i: number, thresholds: number) =>
    thresholds === 0 ? 0 : thresholds / (thresholds > 0 ? params.up[i] : params.down[i]);
  const at = (sensor: number, level: number, rate: number) =>
    centres.slice(0, FEATURES.length * s).map((c, i) =>
      c + (i === LEVEL * s + sensor ? off(i, level) : i === RATE * s + sensor ? off(i, rate) : 0)
    );
  const judge = (features: number[], ts: number, inEpisode = false, window: number[][] = []) => {
    const { score } = referenceScore(features, scoringTerms(params, state));
    return { score, counts: countsAsAnomalous(state, params, { features, score, centres, window, ts, inEpisode }) };
  };
  /** Normal readings (the end of calibration), the last `shifted` of them with `sensor` moved by `thresholds` levels. */
  const window = (sensor = 0, thresholds = 0, shifted = 0) =>
    rows.slice(400 - WINDOW, 400).map((row, r) =>
      row.map((value, j) =>
        j === sensor && r >= WINDOW - shifted ? value + thresholds / params.up[LEVEL * s + sensor] : value
      )
    );
  return { sensors, params, state, at, judge, window };
}

Deno.test("a rate that brings a level back towards its centre is a return, not a fault; the same rate away from it counts", () => {
  const { sensors, at, judge } = calibrated(61);
  const fluid = sensors.indexOf("fluid_temperature");
  // The fluid 0.8 thresholds warm and cooling fast (hot water shut off): the rate alone exceeds.
  const cooling = judge(at(fluid, 0.8, -3), 1000);
  assert.ok(cooling.score > 2.5, `score ${cooling.score}`);
  assert.equal(cooling.counts, false);
  // Warming further, or cooling below its centre, moves it away: that counts.
  assert.equal(judge(at(fluid, 0.8, 3), 1000).counts, true);
  assert.equal(judge(at(fluid, -0.8, -3), 1000).counts, true);
  // A returning rate does not hide another term that exceeds: the level itself alarming still counts.
  assert.equal(judge(at(fluid, 1.5, -3), 1000).counts, true);
  // Below the threshold nothing counts.
  assert.equal(judge(at(fluid, 0.8, 0.9), 1000).counts, false);
});

Deno.test("just after an episode a new one needs a score above RECOVERY_SCORE; within an episode and later the bar is 1 again", () => {
  const { sensors, params, state, at, judge } = calibrated(62);
  const flow = sensors.indexOf("flow");
  let ts = 0;
  // A minute-long episode on flow, then the first reading after it (starts the recovery period).
  for (let k = 0; k < 60; k++) {
    advanceBaseline(state, params, {
      features: at(flow, 4, 0),
      score: 4,
      inEpisode: true,
      peakScore: 4,
      ts: ts += 1000,
    }, OPTIONS);
  }
  advanceBaseline(state, params, {
    features: at(flow, 0.5, 0),
    score: 0.5,
    inEpisode: false,
    peakScore: 0.5,
    ts: ts += 1000,
  }, OPTIONS);
  assert.equal(state.recoverUntilTs, ts + 3 * OPTIONS.settleSeconds * 1000);
  const settling = at(flow, 1.5, 0);
  assert.equal(judge(settling, ts + 1000).counts, false);
  assert.equal(judge(at(flow, RECOVERY_SCORE + 0.5, 0), ts + 1000).counts, true);
  // An episode already open keeps the bar at 1 (it is not ended by the recovery's bar)...
  assert.equal(judge(settling, ts + 1000, true).counts, true);
  // ...and once the recovery period is over, 1.5 thresholds off opens an episode again.
  assert.equal(judge(settling, state.recoverUntilTs! + 1000).counts, true);
});

Deno.test("a level fault is over once its sensor's latest readings are normal again, though the window still holds it", () => {
  const { sensors, params, state, at, judge, window } = calibrated(63);
  const s = sensors.length;
  const flow = sensors.indexOf("flow");
  const vibration = sensors.indexOf("vibration_x");
  let ts = 0;
  const inEpisode = (features: number[], score: number) =>
    advanceBaseline(state, params, { features, score, inEpisode: true, peakScore: score, ts: ts += 1000 }, OPTIONS);
  // A step of flow 4 thresholds off for a minute; it has ended: the window's level is still 3 off.
  for (let k = 0; k < 60; k++) inEpisode(at(flow, 4, 0), 4);
  const draining = at(flow, 3, 0);
  assert.equal(judge(draining, ts + 1000, true, window()).counts, false);
  // Not while any of the last RECENT_READINGS readings is still shifted...
  assert.equal(judge(draining, ts + 1000, true, window(flow, 4, RECENT_READINGS)).counts, true);
  assert.equal(judge(draining, ts + 1000, true, window(flow, 4, 1)).counts, true);
  // ...or while they swing around a normal mean: their spread is not normal.
  const swinging = window().map((row, r) =>
    row.map((v, j) => j === flow ? v + (r % 2 ? 3 : -3) / params.up[LEVEL * s + flow] : v)
  );
  assert.equal(judge(draining, ts + 1000, true, swinging).counts, true);
  // ...nor while another sensor alarms, nor on a window too short to tell.
  const alsoVibration = draining.map((f, i) => i === LEVEL * s + vibration ? at(vibration, 1.5, 0)[i] : f);
  assert.equal(judge(alsoVibration, ts + 1000, true, window()).counts, true);
  assert.equal(judge(draining, ts + 1000, true, window().slice(-RECENT_READINGS + 1)).counts, true);
  // Once it has ended: while the plant recovers, the window still holding it opens no new episode;
  // a fault on another sensor does.
  advanceBaseline(
    state,
    params,
    { features: draining, score: 3, inEpisode: false, peakScore: 3, ts: ts += 1000 },
    OPTIONS,
  );
  assert.ok(state.recoverUntilTs! > ts);
  assert.equal(judge(draining, ts + 1000, false, window()).counts, false);
  assert.equal(judge(at(vibration, 3, 0), ts + 1000, false, window()).counts, true);
});

Deno.test("a fault of spread, or one just past the threshold, is not judged over on its latest readings", () => {
  const { sensors, params, state, at, judge, window } = calibrated(64);
  const s = sensors.length;
  const flow = sensors.indexOf("flow");
  let ts = 0;
  const inEpisode = (features: number[], score: number) =>
    advanceBaseline(state, params, { features, score, inEpisode: true, peakScore: score, ts: ts += 1000 }, OPTIONS);
  // Spikes: the spread 5 thresholds up, the level 2.5 (the spikes move the mean too).
  const spiky = at(flow, 2.5, 0).map((f, i) => i === SPREAD * s + flow ? f + 5 / params.up[i] : f);
  for (let k = 0; k < 30; k++) inEpisode(spiky, 5);
  assert.equal(judge(spiky, ts + 1000, true, window()).counts, true);
  // A fault 1.5 thresholds off: 12 readings cannot tell it from normal.
  const marginal = calibrated(64);
  for (let k = 0; k < 30; k++) {
    advanceBaseline(marginal.state, params, {
      features: marginal.at(flow, 1.5, 0),
      score: 1.5,
      inEpisode: true,
      peakScore: 1.5,
      ts: k * 1000,
    }, OPTIONS);
  }
  assert.equal(marginal.judge(marginal.at(flow, 1.5, 0), 31_000, true, marginal.window()).counts, true);
});

/** Development seeds (neither tuned on nor reported), with how many readings may be flagged after the fault. */
const REPLAYED = [[320011, "imbalance", 13], [322032, "cavitation", 13], [321000, "hot_water", 24]] as const;

Deno.test("replayed plant recordings: no episode reopens as the plant settles after a fault, and none lingers while the fluid cools", () => {
  // Recordings (development seeds) whose episodes, before, reopened two or three times after the
  // fault (the plant settling about one threshold off), or stayed open ~40 s while the fluid cooled.
  for (const [seed, fault, most] of REPLAYED) {
    const recording = simulateFaultRecording({ seed, fault });
    const after = replayOffline(recording).slice(recording.readings.findLastIndex((r) => r.anomalous) + 1);
    const starts = after.filter((r) => r?.event === "start").length;
    const flagged = after.filter((r) => r?.anomaly).length;
    assert.equal(starts, 0, `${fault} ${seed}: ${starts} episodes after the fault`);
    // Flagged until the sensor's last 12 readings are normal again, then 2 more to clear (the
    // window, 20 readings, still holds the fault for longer).
    assert.ok(flagged <= most, `${fault} ${seed}: ${flagged} readings flagged after the fault`);
  }
});

Deno.test("the real program flags those recordings as the offline replay does: the scoring pass applies the same rule", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost-onset-" });
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const recordings = REPLAYED.map(([seed, fault]) => simulateFaultRecording({ seed, fault }));
    await Promise.all(recordings.map((recording) => replay(outpost.url, recording.name, recording.readings)));
    for (const recording of recordings) {
      const last = recording.readings[recording.readings.length - 1];
      await scoredThrough(outpost.url, recording.name, last.ts);
      const rows = await fetchReadings(outpost.url, recording.name);
      const offline = replayOffline(recording);
      const differ = rows.filter((row, i) => i >= 400 && row.anomaly !== offline[i]!.anomaly).length;
      // The graph computes in float32, the replay in float64: a score right at the bar may differ.
      assert.ok(differ <= 2, `${recording.name}: ${differ} of ${rows.length - 400} flags differ from the replay`);
      const end = recording.readings.findLastIndex((r) => r.anomalous);
      const events = await (await fetch(`${outpost.url}/v1/events?device=${recording.name}`)).json();
      const after = events.events.filter((e: { start: string }) => Date.parse(e.start) > recording.readings[end].ts);
      assert.deepEqual(after, [], `${recording.name}: episodes opened after the fault`);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
