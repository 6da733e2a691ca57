/**
 * The calibrated detector replayed in-process, without Outpost, onnxruntime or the store: the
 * reference numbers (baseline_features.ts), the adaptive baseline (baseline_tracker.ts) and the
 * debouncer, in the order scoring_pass.ts applies them. It is a diagnosis tool for the detector's
 * design (a run over a whole scenario set takes seconds and shows every reading's score and
 * deciding term); `deno task eval` through the real program stays the figure that is reported.
 *
 *   deno run --allow-read tests/bench/detect_offline.ts [--tuning] [--kind valve] [--trace NAME]
 */
import { parseArgs } from "node:util";
import { referenceScore, TERMS, WINDOW, windowFeatures } from "../../src/detect/baseline_features.ts";
import { fitBaseline } from "../../src/detect/baseline_fit.ts";
import { advanceBaseline, initialBaseline, scoringCentres, scoringTerms } from "../../src/detect/baseline_tracker.ts";
import { Debouncer } from "../../src/detect/debouncer.ts";
import { countsAsAnomalous } from "../../src/detect/episode_evidence.ts";
import { PLANT_CHANNELS, type PlantRecording, plantScenarios } from "../sim/plant_simulator.ts";
import { DEFAULT_DETECTION } from "../helpers/detection_defaults.ts";
import type { ScoredReading } from "../helpers/replay.ts";
import { formatResult, scoreSet } from "./detect_eval_scoring.ts";

const CALIBRATION = 400;

export interface OfflineReading {
  score: number;
  anomaly: boolean;
  /** The term and sensor that decided the score. */
  term: string;
  sensor: string;
  event: "start" | "end" | "rebaselined" | null;
}

/** Calibrates on the first 400 readings and scores the rest as Outpost's default manifest would. */
export function replayOffline(recording: PlantRecording, sensitivity = 1): (OfflineReading | null)[] {
  const sensors = PLANT_CHANNELS as string[];
  const rows = recording.readings.map((r) => sensors.map((s) => r.values[s]));
  const ts = recording.readings.map((r) => r.ts);
  const params = fitBaseline(sensors, rows.slice(0, CALIBRATION), ts.slice(0, CALIBRATION), {
    sensitivity,
    slowLevelTolerance: DEFAULT_DETECTION.baseline.slowLevelTolerance,
    sensors: {},
  });
  const state = initialBaseline(params, sensors.length);
  const debouncer = new Debouncer({ onCount: 3, ofLast: 5, clearAfter: 3 });
  let episodePeak: number | null = null;
  const out: (OfflineReading | null)[] = rows.map(() => null);
  for (let i = CALIBRATION; i < rows.length; i++) {
    const centres = scoringCentres(state, i + 1);
    const window = rows.slice(Math.max(0, i - WINDOW + 1), i + 1);
    const features = windowFeatures(window, params.floor);
    const terms = scoringTerms(params, state);
    const { score, contributions } = referenceScore(features, terms);
    const exceeds = countsAsAnomalous(state, params, {
      features,
      score,
      centres,
      threshold: 1,
      window,
      ts: ts[i],
      inEpisode: debouncer.anomaly,
    }, DEFAULT_DETECTION.baseline);
    const step = debouncer.push(exceeds);
    let event: OfflineReading["event"] = null;
    if (step.started) {
      episodePeak = score;
      event = "start";
    }
    if (episodePeak !== null) episodePeak = Math.max(episodePeak, score);
    let anomaly = step.anomaly;
    const peak = episodePeak ?? score;
    if (step.ended) {
      episodePeak = null;
      event = "end";
    }
    const moved = advanceBaseline(
      state,
      params,
      { features, score, inEpisode: anomaly, peakScore: peak, ts: ts[i] },
      DEFAULT_DETECTION.baseline,
    );
    if (moved && episodePeak !== null) {
      episodePeak = null;
      debouncer.settle();
      anomaly = false;
      event = "rebaselined";
    }
    const j = contributions.indexOf(Math.max(...contributions));
    const s = sensors.length;
    let term = "";
    const termsZ = TERMS.map((_, t) => {
      const d = features[[0, 1, 2, 0, 2][t] * s + j] - terms.center[t * s + j];
      return Math.max(d * terms.up[t * s + j], -d * terms.down[t * s + j]);
    });
    term = TERMS[termsZ.indexOf(Math.max(...termsZ))];
    out[i] = { score, anomaly, term, sensor: sensors[j], event };
  }
  return out;
}

function toScored(recording: PlantRecording, result: (OfflineReading | null)[]): ScoredReading[] {
  return recording.readings.map((r, i) => ({
    ts: new Date(r.ts).toISOString(),
    tsMs: r.ts,
    values: r.values,
    score: result[i]?.score ?? null,
    anomaly: result[i]?.anomaly ?? null,
  }));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      tuning: { type: "boolean" },
      kind: { type: "string" },
      trace: { type: "string" },
      sensitivity: { type: "string" },
      "no-normals": { type: "boolean" },
    },
  });
  const seeds = values.tuning ? "tuning" : "heldout";
  const scenarios = plantScenarios(seeds, values["no-normals"] ? { normals: 0 } : {});
  if (values.kind) scenarios.faults = scenarios.faults.filter((r) => r.fault === values.kind);
  const sensitivity = values.sensitivity ? Number(values.sensitivity) : 1;
  const scored = new Map<string, ScoredReading[]>();
  for (const recording of [...scenarios.faults, ...scenarios.normals]) {
    const result = replayOffline(recording, sensitivity);
    scored.set(recording.name, toScored(recording, result));
    if (values.trace === recording.name) {
      recording.readings.forEach((reading, i) => {
        const r = result[i];
        if (!r) return;
        const label = reading.anomalous ? "F" : ".";
        console.log(
          `${i} ${label} ${r.anomaly ? "A" : "-"} ${r.score.toFixed(2)} ${r.term}/${r.sensor} ${r.event ?? ""} ` +
            PLANT_CHANNELS.map((c) => reading.values[c]).join(" "),
        );
      });
    }
  }
  const result = scoreSet({
    set: "plant",
    seeds,
    scenarios,
    scored,
    calibration: CALIBRATION,
    deviceOf: (r) => r.name,
  });
  console.log(formatResult(result, 0));
}
