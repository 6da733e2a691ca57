/**
 * The drift-robust detector's parts, in process: the shared ONNX graph against the TypeScript
 * reference (with devices of different widths in one batch), calibration's roles and site limits,
 * and the baseline's adaptation, freeze and rebaseline.
 */
import assert from "node:assert/strict";
import {
  FEATURES,
  LEVEL,
  RATE,
  referenceScore,
  SITE_BOUNDS,
  SITE_RISE,
  TERMS,
  WINDOW,
  windowFeatures,
} from "../src/detect/baseline_features.ts";
import { fitBaseline } from "../src/detect/baseline_fit.ts";
import { buildBaselineGraph } from "../src/detect/baseline_graph.ts";
import { baselineGraph } from "../src/detect/baseline_model.ts";
import { type BaselineItem, scoreBaseline } from "../src/detect/baseline_scoring.ts";
import {
  advanceBaseline,
  type BaselineOptions,
  initialBaseline,
  REFRESH_READINGS,
  scoringCentres,
  scoringTerms,
} from "../src/detect/baseline_tracker.ts";
import { Inference } from "../src/detect/inference.ts";
import { sha256Hex } from "../src/sha256.ts";
import { DEFAULT_DETECTION } from "./helpers/detection_defaults.ts";
import { simulateFaultRecording } from "./sim/plant_simulator.ts";

const FIT = { sensitivity: 1, slowLevelTolerance: 3, sensors: {} };
const OPTIONS: BaselineOptions = DEFAULT_DETECTION.baseline;

function recordingRows(seed: number, fault: string) {
  const recording = simulateFaultRecording({ seed, fault });
  const sensors = Object.keys(recording.readings[0].values);
  const rows = recording.readings.map((r) => sensors.map((s) => r.values[s]));
  const params = fitBaseline(sensors, rows.slice(0, 400), recording.readings.slice(0, 400).map((r) => r.ts), FIT);
  return { recording, sensors, rows, params };
}

Deno.test("the shared graph computes the reference's features, score and contributions, for devices of different widths in one batch", async () => {
  const wide = recordingRows(41, "imbalance");
  const narrow = recordingRows(42, "valve");
  const keep = [5, 7]; // flow and fluid_temperature only
  const narrowRows = narrow.rows.map((row) => keep.map((j) => row[j]));
  const narrowParams = fitBaseline(
    keep.map((j) => narrow.sensors[j]),
    narrowRows.slice(0, 400),
    narrow.recording.readings.slice(0, 400).map((r) => r.ts),
    FIT,
  );
  const items: (BaselineItem & { expected: ReturnType<typeof referenceScore>; features: number[] })[] = [];
  for (let i = 420; i < 900; i += 7) {
    for (const [rows, params] of [[wide.rows, wide.params], [narrowRows, narrowParams]] as const) {
      const window = rows.slice(i - WINDOW + 1, i + 1);
      const features = windowFeatures(window, params.floor);
      items.push({
        rows: window,
        params: { ...params },
        center: params.center,
        features,
        expected: referenceScore(features, params),
      });
    }
  }
  const inference = new Inference(1);
  const bundle = { onnx: baselineGraph(), manifest: { ...manifestFor(wide.sensors, wide.params) } };
  const model = await inference.load(1, bundle);
  try {
    const results = await scoreBaseline(inference, model.session, items, 64);
    let largest = 0;
    results.forEach((result, i) => {
      const { expected, features } = items[i];
      const relative = (a: number, b: number) => Math.abs(a - b) / Math.max(1, Math.abs(b));
      largest = Math.max(largest, relative(result.score, expected.score));
      assert.equal(result.contributions.length, expected.contributions.length);
      expected.contributions.forEach((c, j) =>
        assert.ok(relative(result.contributions[j], c) < 1e-4, `row ${i} sensor ${j}`)
      );
      features.forEach((f, j) => assert.ok(relative(result.features[j], f) < 1e-4, `row ${i} feature ${j}`));
    });
    assert.ok(largest < 1e-4, `largest relative score difference ${largest}`);
    assert.ok(results.some((r) => r.score > 1), "the imbalance fault alarms");
  } finally {
    await inference.release();
  }
});

Deno.test("the graph the service loads is the one the builder makes (else: deno task graph)", () => {
  assert.deepEqual(baselineGraph(), Uint8Array.from(buildBaselineGraph()));
});

Deno.test("one session serves every calibrated model: models with the same graph share it", async () => {
  const { sensors, params } = recordingRows(43, "step");
  const inference = new Inference(1);
  try {
    const first = await inference.load(1, { onnx: baselineGraph(), manifest: manifestFor(sensors, params) });
    const second = await inference.load(2, {
      onnx: baselineGraph(),
      manifest: manifestFor(sensors.slice(0, 4), params),
    });
    assert.equal(first.session, second.session);
  } finally {
    await inference.release();
  }
});

Deno.test("calibration measures roles: smooth drifting temperatures are slow, noisy channels fast; the manifest overrides", () => {
  const { recording, sensors, rows } = recordingRows(44, "valve");
  const timestamps = recording.readings.slice(0, 400).map((r) => r.ts);
  const measured = fitBaseline(sensors, rows.slice(0, 400), timestamps, FIT);
  const role = (params: typeof measured, name: string) => params.roles[sensors.indexOf(name)];
  for (const name of ["motor_temperature", "fluid_temperature"]) assert.equal(role(measured, name), "slow", name);
  for (const name of ["vibration_x", "vibration_y", "current", "voltage", "flow"]) {
    assert.equal(role(measured, name), "fast", name);
  }
  const s = sensors.length;
  const slow = sensors.indexOf("fluid_temperature");
  assert.ok(measured.up[LEVEL * s + slow] > 0 && measured.up[LEVEL * s + slow] < measured.up[LEVEL * s + 0] / 10);
  const overridden = fitBaseline(sensors, rows.slice(0, 400), timestamps, {
    ...FIT,
    sensors: { fluid_temperature: { role: "fast" } },
  });
  assert.equal(role(overridden, "fluid_temperature"), "fast");
  assert.equal(overridden.roleSource[slow], "manifest");
});

Deno.test("site limits alarm exactly beyond their bound and above the maximum rate of rise", () => {
  const { recording, sensors, rows } = recordingRows(45, "hot_water");
  const timestamps = recording.readings.slice(0, 400).map((r) => r.ts);
  const params = fitBaseline(sensors, rows.slice(0, 400), timestamps, {
    ...FIT,
    sensors: { fluid_temperature: { max: 40, maxRisePerMinute: 0.6 } },
  });
  const s = sensors.length;
  const j = sensors.indexOf("fluid_temperature");
  const bound = (level: number) => {
    const d = level - params.center[SITE_BOUNDS * s + j];
    return Math.max(d * params.up[SITE_BOUNDS * s + j], -d * params.down[SITE_BOUNDS * s + j]);
  };
  assert.ok(bound(39.99) < 1 && bound(40.01) > 1 && bound(0) <= 0);
  // 0.6 °C per minute at 1 Hz is 0.01 °C per reading.
  assert.ok(Math.abs(params.up[SITE_RISE * s + j] * 0.01 - 1) < 1e-9);
  assert.equal(params.down[SITE_RISE * s + j], 0, "falling temperature does not break a rise limit");
});

Deno.test("a stuck sensor alarms on its spread", () => {
  const { rows, params } = recordingRows(46, "valve");
  const window = rows.slice(500 - WINDOW, 500).map((row) => [...row]);
  const normal = referenceScore(windowFeatures(window, params.floor), params);
  for (const row of window) row[0] = window[0][0];
  const stuck = referenceScore(windowFeatures(window, params.floor), params);
  assert.ok(normal.score < 1, `normal ${normal.score}`);
  assert.ok(stuck.contributions[0] > 1, `stuck vibration_x contributes ${stuck.contributions[0]}`);
});

Deno.test("the baseline follows slow drift while normal, freezes in an episode, and rebaselines once the plant settles elsewhere", () => {
  const { rows, params } = recordingRows(47, "step");
  const s = rows[0].length;
  const state = initialBaseline(params, s);
  const features = windowFeatures(rows.slice(400 - WINDOW, 400), params.floor);
  const shifted = features.map((f, i) => i < s ? f + 1 / params.up[LEVEL * s + i] * 0.5 : f);
  let ts = 0;
  for (let k = 0; k < 600; k++) {
    advanceBaseline(
      state,
      params,
      { features: shifted, score: 0.5, inEpisode: false, peakScore: 0, ts: ts += 1000 },
      OPTIONS,
    );
  }
  const followed = (state.center[0] - params.center[0]) / (shifted[0] - params.center[0]);
  assert.ok(followed > 0.55 && followed < 0.7, `after one time constant the baseline moved ${followed} of the way`);
  const frozen = [...state.center];
  const far = shifted.map((f, i) => i < s ? f + 3 / params.up[LEVEL * s + i] : f);
  for (let k = 0; k < 30; k++) {
    assert.equal(
      advanceBaseline(
        state,
        params,
        { features: far, score: 3, inEpisode: true, peakScore: 3, ts: ts += 1000 },
        OPTIONS,
      ),
      null,
    );
  }
  assert.deepEqual(state.center, frozen, "frozen during the episode");
  // The fault goes; the plant settles 1.2 thresholds from where it was, well below the fault's 3.
  const settled = shifted.map((f, i) => i < s ? f + 1.2 / params.up[LEVEL * s + i] : f);
  let moved: string | null = null;
  let seconds = 0;
  while (moved === null && seconds < 200) {
    moved = advanceBaseline(
      state,
      params,
      { features: settled, score: 1.4, inEpisode: true, peakScore: 3, ts: ts += 1000 },
      OPTIONS,
    );
    seconds++;
  }
  assert.equal(moved, "rebaselined");
  assert.ok(seconds >= 60 && seconds <= 62, `rebaselined after ${seconds} s of a faded score`);
  assert.ok(Math.abs(state.center[0] - settled[0]) < 1e-9, "the baseline is where the plant settled");
  assert.deepEqual(state.scoring, state.center, "and readings are scored against it at once");
});

Deno.test("a fault that alarmed on a rate while coming on is not rebaselined while its level deviation lasts", () => {
  // Hot water: the fluid temperature's rate alarms (z 3.3) while it rises, then its level holds
  // 1.7 thresholds above the baseline (a slow sensor's level is judged 3x wider) for minutes. The
  // score has fallen to half its peak, but the fault has not gone.
  const { rows, params } = recordingRows(49, "hot_water");
  const s = rows[0].length;
  const fluid = s - 1;
  const state = initialBaseline(params, s);
  const at = (level: number, rate: number) =>
    params.center.slice(0, FEATURES.length * s).map((c, i) =>
      i === LEVEL * s + fluid ? c + level / params.up[i] : i === RATE * s + fluid ? c + rate / params.up[i] : c
    );
  let ts = 0;
  const step = (features: number[], score: number, peakScore: number) =>
    advanceBaseline(state, params, { features, score, inEpisode: true, peakScore, ts: ts += 1000 }, OPTIONS);
  for (let k = 0; k < 20; k++) assert.equal(step(at(0.2 + k * 0.075, 3.3), 3.3, 3.3), null);
  for (let k = 0; k < 300; k++) assert.equal(step(at(1.7, 0.2), 1.7, 3.3), null, `rebaselined after ${k} s`);
  // The water is shut off: the level falls back and stays a little off (the plant settled elsewhere).
  // The fluid cools fast (its rate alarms the other way), yet the rate's centre is not moved to
  // that transition: a settled plant's temperature is flat.
  const rateCentre = state.center[RATE * s + fluid];
  let moved: string | null = null;
  for (let k = 0; k < 90 && moved === null; k++) moved = step(at(0.5, k < 20 ? -3 : 0), 1, 3.3);
  assert.equal(moved, "rebaselined");
  assert.equal(state.center[RATE * s + fluid], rateCentre);
  assert.ok(Math.abs(state.center[LEVEL * s + fluid] - at(0.5, 0)[LEVEL * s + fluid]) < 1e-9);
});

Deno.test("an episode is not held open by a deviation that appears once the fault has gone, and settles sooner once the fault's terms are quiet", () => {
  // A step on flow (z 4) ends; meanwhile vibration settles 1.5 thresholds off (PLANT_BEHAVIOUR.md:
  // the plant settles elsewhere). The step's terms faded: the episode rebaselines after settleSeconds,
  // or after a third of it when the step's terms no longer alarm at all.
  const { rows, params } = recordingRows(50, "step");
  const s = rows[0].length;
  const settleAfter = (flowAfter: number) => {
    const state = initialBaseline(params, s);
    const at = (flow: number, vibration: number) =>
      params.center.slice(0, FEATURES.length * s).map((c, i) =>
        i === LEVEL * s + 5 ? c + flow / params.up[i] : i === LEVEL * s ? c + vibration / params.up[i] : c
      );
    let ts = 0;
    const step = (features: number[], score: number) =>
      advanceBaseline(state, params, { features, score, inEpisode: true, peakScore: 4, ts: ts += 1000 }, OPTIONS);
    for (let k = 0; k < 60; k++) assert.equal(step(at(4, 0), 4), null);
    let seconds = 0;
    let moved: string | null = null;
    while (moved === null && seconds < 200) {
      moved = step(at(flowAfter, 1.5), 1.5);
      seconds++;
    }
    assert.equal(moved, "rebaselined");
    return seconds;
  };
  const quiet = settleAfter(0.1);
  assert.ok(quiet >= 20 && quiet <= 22, `rebaselined ${quiet} s after the step's terms went quiet`);
  const faded = settleAfter(1.3);
  assert.ok(faded >= 60 && faded <= 62, `rebaselined ${faded} s after the step faded to 1.3 of 4`);
});

Deno.test("scoring centres change only at refresh blocks, whatever the adapting centres do in between", () => {
  const { rows, params } = recordingRows(48, "step");
  const state = initialBaseline(params, rows[0].length);
  const first = scoringCentres(state, 401);
  const features = windowFeatures(rows.slice(400 - WINDOW, 400), params.floor).map((f) => f + 1);
  for (let n = 401; n < 401 + 3 * REFRESH_READINGS; n++) {
    const block = scoringCentres(state, n);
    if (Math.floor((n - 1) / REFRESH_READINGS) === Math.floor(400 / REFRESH_READINGS)) assert.equal(block, first);
    advanceBaseline(state, params, { features, score: 0, inEpisode: false, peakScore: 0, ts: n * 1000 }, OPTIONS);
  }
  assert.notDeepEqual(scoringTerms(params, state).center.slice(0, FEATURES.length), first.slice(0, FEATURES.length));
  assert.equal(scoringTerms(params, state).center.length, TERMS.length * rows[0].length);
});

function manifestFor(sensors: string[], params: ReturnType<typeof fitBaseline>) {
  const s = sensors.length;
  const onnx = baselineGraph();
  return {
    name: "baseline/test",
    version: "cal-1",
    features: sensors,
    window: WINDOW,
    input: "window",
    output: "score",
    contributions: "contributions",
    outputMeaning: "test",
    threshold: 1,
    sha256: sha256Hex(onnx),
    provenance: {},
    baseline: {
      roles: params.roles.slice(0, s),
      roleSource: params.roleSource.slice(0, s),
      floor: params.floor.slice(0, s),
      scale: params.scale,
      center: params.center,
      up: params.up,
      down: params.down,
      intervalSeconds: params.intervalSeconds,
    },
  };
}

Deno.test("a sensor that never moved in calibration is judged by site limits only, not by an infinitely small scale", () => {
  const { recording, sensors, rows } = recordingRows(49, "step");
  const withFlag = rows.map((row) => [...row, 0]);
  const names = [...sensors, "door_open"];
  const timestamps = recording.readings.slice(0, 400).map((r) => r.ts);
  const params = fitBaseline(names, withFlag.slice(0, 400), timestamps, FIT);
  assert.deepEqual(params.flatSensors, ["door_open"]);
  const window = withFlag.slice(420 - WINDOW, 420).map((row) => [...row.slice(0, -1), 1]);
  const scored = referenceScore(windowFeatures(window, params.floor), params);
  assert.equal(scored.contributions[names.length - 1], 0, "the flag moving alone does not alarm");
});

Deno.test("a short calibration of white noise does not alarm at noise: feature scales are floored by sampling noise", () => {
  let seed = 11;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const gauss = () => Math.sqrt(-2 * Math.log(Math.max(random(), 1e-12))) * Math.cos(2 * Math.PI * random());
  let over = 0;
  let total = 0;
  for (let repeat = 0; repeat < 10; repeat++) {
    const rows = Array.from({ length: 620 }, () => Array.from({ length: 8 }, () => 50 + gauss()));
    const params = fitBaseline([..."abcdefgh"], rows.slice(0, 20), rows.slice(0, 20).map((_, i) => i * 1000), FIT);
    for (let i = 40; i < rows.length; i++) {
      total++;
      if (referenceScore(windowFeatures(rows.slice(i - WINDOW + 1, i + 1), params.floor), params).score > 1) over++;
    }
  }
  assert.ok(
    over / total < 0.02,
    `${((over / total) * 100).toFixed(1)}% of normal readings over 1 after a 20-reading calibration`,
  );
});

Deno.test("an extreme reading (1e20, a PLC's 3.4e38) scores as a huge finite deviation: the model is not deactivated", async () => {
  const { rows, params } = recordingRows(50, "step");
  const window = rows.slice(500 - WINDOW, 500).map((row) => [...row]);
  window[WINDOW - 1][0] = 3.4e38;
  window[WINDOW - 2][0] = 1e20;
  const inference = new Inference(1);
  const model = await inference.load(1, { onnx: baselineGraph(), manifest: manifestFor(Object.keys(rows[0]), params) });
  try {
    const [result] = await scoreBaseline(inference, model.session, [{
      rows: window,
      params: { ...params },
      center: params.center,
    }], 8);
    assert.ok(Number.isFinite(result.score) && result.score > 1, `score ${result.score}`);
  } finally {
    await inference.release();
  }
});
