/**
 * The scoring stage's packing and unpacking (baseline_feeds.ts, baseline_scoring.ts) against the
 * straightforward packing it replaced, kept here as the reference: on a recorded batch of devices
 * of different widths, with missing sensors, short windows, extreme values and adapted centres,
 * every score, contribution and feature must be bit for bit what the reference gives, also when
 * the stage's reused buffers go from wide to narrow batches and when two calls run at once.
 */
import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { ADAPTIVE_TERMS, FEATURES, LEVEL, TERM_FEATURE, TERMS, WINDOW } from "../src/detect/baseline_features.ts";
import { fitBaseline } from "../src/detect/baseline_fit.ts";
import { BASELINE_INPUTS, BASELINE_OUTPUTS, baselineGraph } from "../src/detect/baseline_model.ts";
import { type BaselineItem, type BaselineResult, scoreBaseline } from "../src/detect/baseline_scoring.ts";
import { SWITCHED_OFF_VARIANTS, switchedOffVariants } from "../src/detect/baseline_feeds.ts";
import { Inference } from "../src/detect/inference.ts";
import { sha256Hex } from "../src/sha256.ts";
import { simulateFaultRecording } from "./sim/plant_simulator.ts";

const FIT = { sensitivity: 1, slowLevelTolerance: 3, sensors: {} };

function device(seed: number, fault: string, keep?: number[]) {
  const recording = simulateFaultRecording({ seed, fault });
  const all = Object.keys(recording.readings[0].values);
  const columns = keep ?? all.map((_, j) => j);
  const rows = recording.readings.map((r) => columns.map((j) => r.values[all[j]]));
  const timestamps = recording.readings.slice(0, 400).map((r) => r.ts);
  const params = fitBaseline(columns.map((j) => all[j]), rows.slice(0, 400), timestamps, FIT);
  return { rows, params };
}

/** A recorded batch: three devices interleaved, each with what the stage must handle. */
function recordedBatch(): BaselineItem[] {
  const devices = [device(61, "imbalance"), device(62, "valve", [5, 7]), device(63, "spikes", [0, 1, 2, 5, 7])];
  const items: BaselineItem[] = [];
  // Adapted centres: the level moved a little, one array shared by a device's readings of a round.
  const adapted = devices.map(({ params }) =>
    params.center.slice(0, ADAPTIVE_TERMS * params.floor.length).map((c, i) => c + (i % 3) * 0.01)
  );
  for (let i = 420; i < 700; i += 3) {
    devices.forEach(({ rows, params }, d) => {
      let window = rows.slice(i - WINDOW + 1, i + 1).map((row) => [...row]);
      if (d === 0 && i % 9 === 0) window = window.slice(-5); // a short window repeats its oldest row
      if (d === 1 && i >= 500 && i < 530) window[WINDOW - 1][0] = NaN; // a sensor missing from the window
      if (d === 2 && i >= 600 && i < 610) window[WINDOW - 1][1] = i === 603 ? 3.4e38 : -1e20; // extreme values
      items.push({ rows: window, params, center: i % 2 === 0 ? adapted[d] : params.center });
    });
  }
  return items;
}

/** The packing the stage had before it reused buffers: fresh arrays, one pass per input. */
function referenceFeeds(items: readonly BaselineItem[]) {
  const width = Math.max(...items.map((item) => item.params.floor.length));
  const n = items.length;
  const offsetsOf = (item: BaselineItem) =>
    item.params.floor.map((_, j) => item.params.center[LEVEL * item.params.floor.length + j]);
  const missingOf = (item: BaselineItem) => {
    const rows = item.rows.slice(-WINDOW);
    return item.params.floor.map((_, j) => j).filter((j) => rows.some((row) => Number.isNaN(row[j])));
  };
  const window = new Float32Array(n * WINDOW * width);
  const deviceOf = new BigInt64Array(n);
  const floor = new Float32Array(n * width).fill(1);
  const center = new Float32Array(n * TERMS.length * width);
  const up = new Float32Array(n * TERMS.length * width);
  const down = new Float32Array(n * TERMS.length * width);
  items.forEach((item, i) => {
    const sensors = item.params.floor.length;
    const offsets = offsetsOf(item);
    const missing = missingOf(item);
    const rows = item.rows.slice(-WINDOW);
    for (let r = 0; r < WINDOW; r++) {
      const row = rows[Math.max(0, rows.length - WINDOW + r)];
      for (let j = 0; j < sensors; j++) {
        const value = Number.isNaN(row[j]) ? offsets[j] : row[j];
        window[(i * WINDOW + r) * width + j] = Math.max(-1e15, Math.min(1e15, value - offsets[j]));
      }
    }
    // One parameter row per reading (the stage shares rows between readings; the values are the same).
    deviceOf[i] = BigInt(i);
    for (let j = 0; j < sensors; j++) floor[i * width + j] = item.params.floor[j];
    for (let t = 0; t < TERMS.length; t++) {
      for (let j = 0; j < sensors; j++) {
        const at = (i * TERMS.length + t) * width + j;
        const own = t * sensors + j;
        const relative = TERM_FEATURE[t] === LEVEL ? offsets[j] : 0;
        center[at] = (t < ADAPTIVE_TERMS ? item.center[own] : item.params.center[own]) - relative;
        up[at] = missing.includes(j) ? 0 : item.params.up[own];
        down[at] = missing.includes(j) ? 0 : item.params.down[own];
      }
    }
  });
  const terms = [n, TERMS.length, width];
  return {
    width,
    offsetsOf,
    missingOf,
    feeds: {
      [BASELINE_INPUTS.window]: new ort.Tensor("float32", window, [n, WINDOW, width]),
      [BASELINE_INPUTS.device]: new ort.Tensor("int64", deviceOf, [n]),
      [BASELINE_INPUTS.floor]: new ort.Tensor("float32", floor, [n, width]),
      [BASELINE_INPUTS.center]: new ort.Tensor("float32", center, terms),
      [BASELINE_INPUTS.up]: new ort.Tensor("float32", up, terms),
      [BASELINE_INPUTS.down]: new ort.Tensor("float32", down, terms),
    },
  };
}

/** The reference's results, batch by batch as the stage cuts them. */
async function referenceResults(
  session: ort.InferenceSession,
  items: readonly BaselineItem[],
  batchSize: number,
): Promise<BaselineResult[]> {
  const results: BaselineResult[] = [];
  for (let start = 0; start < items.length; start += batchSize) {
    const chunk = items.slice(start, start + batchSize);
    const { width, feeds, offsetsOf, missingOf } = referenceFeeds(chunk);
    const outputs = await session.run(feeds);
    const scores = outputs[BASELINE_OUTPUTS.score].data as Float32Array;
    const contributions = outputs[BASELINE_OUTPUTS.contributions].data as Float32Array;
    const features = outputs[BASELINE_OUTPUTS.features].data as Float32Array;
    chunk.forEach((item, i) => {
      const sensors = item.params.floor.length;
      const offsets = offsetsOf(item);
      const own = new Float64Array(FEATURES.length * sensors);
      for (let f = 0; f < FEATURES.length; f++) {
        for (let j = 0; j < sensors; j++) {
          own[f * sensors + j] = features[(i * FEATURES.length + f) * width + j] + (f === LEVEL ? offsets[j] : 0);
        }
      }
      for (const j of missingOf(item)) for (let f = 0; f < FEATURES.length; f++) own[f * sensors + j] = NaN;
      results.push({
        score: scores[i],
        contributions: contributions.slice(i * width, i * width + sensors),
        features: own,
      });
    });
  }
  return results;
}

function assertIdentical(actual: readonly BaselineResult[], expected: readonly BaselineResult[], what: string) {
  assert.equal(actual.length, expected.length);
  actual.forEach((result, i) => {
    assert.ok(Object.is(result.score, expected[i].score), `${what}: score of reading ${i}`);
    assert.deepEqual([...result.contributions], [...expected[i].contributions], `${what}: contributions of ${i}`);
    assert.equal(result.features.length, expected[i].features.length);
    result.features.forEach((value, j) =>
      assert.ok(Object.is(value, expected[i].features[j]), `${what}: feature ${j} of reading ${i}`)
    );
  });
}

/** The calibrated graph in a session of the reference (public API) and one of the stage. */
async function sessions() {
  const onnx = baselineGraph();
  const inference = new Inference(1);
  // The options Inference uses: an optimised graph could round differently.
  const session = await ort.InferenceSession.create(onnx, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "disabled",
    enableCpuMemArena: false,
    enableMemPattern: false,
  });
  const model = await inference.load(1, {
    onnx,
    manifest: {
      name: "baseline/test",
      version: "cal-1",
      features: ["a"],
      window: WINDOW,
      input: "window",
      output: "score",
      contributions: "contributions",
      outputMeaning: "test",
      threshold: 1,
      sha256: sha256Hex(onnx),
      provenance: {},
    },
  });
  return {
    session,
    inference,
    model,
    async release() {
      await session.release();
      await inference.release();
    },
  };
}

Deno.test("the scoring stage gives bit for bit the scores, contributions and features of the packing it replaced", async () => {
  const items = recordedBatch();
  assert.ok(items.some((item) => item.rows.some((row) => row.some(Number.isNaN))), "the batch has missing sensors");
  const { session, inference, model, release } = await sessions();
  try {
    for (const batchSize of [7, 64, 256]) {
      const expected = await referenceResults(session, items, batchSize);
      assert.ok(expected.some((result) => result.score > 1), "the batch has alarms");
      assertIdentical(await scoreBaseline(inference, model.session, items, batchSize), expected, `batch ${batchSize}`);
    }
    // Reused buffers: a wide batch, then only the narrow device, then both again.
    const narrow = items.filter((item) => item.params.floor.length === 2);
    assertIdentical(
      await scoreBaseline(inference, model.session, narrow, 64),
      await referenceResults(session, narrow, 64),
      "narrow after wide",
    );
    // Two calls at once each get their own buffers.
    const [first, second] = await Promise.all([
      scoreBaseline(inference, model.session, items, 32),
      scoreBaseline(inference, model.session, [...items].reverse(), 32),
    ]);
    assertIdentical(first, await referenceResults(session, items, 32), "concurrent, first");
    assertIdentical(second, await referenceResults(session, [...items].reverse(), 32), "concurrent, second");
  } finally {
    await release();
  }
});

Deno.test("a device leaving out a different set of sensors each reading keeps a bounded number of parameter variants", async () => {
  const { rows, params } = device(64, "imbalance");
  const sensors = params.floor.length;
  // 120 readings, each missing a different non-empty, not-complete subset of the sensors.
  const items: BaselineItem[] = Array.from({ length: 120 }, (_, i) => {
    const window = rows.slice(420 + i - WINDOW + 1, 421 + i).map((row) => [...row]);
    const subset = (i % (2 ** sensors - 2)) + 1;
    for (let j = 0; j < sensors; j++) if (subset & (1 << j)) window[WINDOW - 1][j] = NaN;
    return { rows: window, params, center: params.center };
  });
  const { session, inference, model, release } = await sessions();
  try {
    // Twice: the second time every set is made again after the bound dropped it, with equal results.
    for (const round of [1, 2]) {
      assertIdentical(
        await scoreBaseline(inference, model.session, items, 7),
        await referenceResults(session, items, 7),
        `round ${round}`,
      );
      assert.equal(switchedOffVariants(params), SWITCHED_OFF_VARIANTS);
    }
  } finally {
    await release();
  }
});
