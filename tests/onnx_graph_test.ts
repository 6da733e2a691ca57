import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { pcaToOnnx } from "../src/detect/onnx_graph.ts";
import { fitPca, referenceScore, windowAt } from "../src/detect/pca_model.ts";
import { CHANNELS, FAULT_KINDS, simulateRecording } from "./sim/pump_simulator.ts";
import { Debouncer } from "../src/detect/debouncer.ts";

const OPTIONS = { window: 12, varianceKept: 0.999, quantile: 0.995, margin: 1.2 };

Deno.test("onnxruntime running the emitted graph matches the TypeScript reference within 1e-4", async () => {
  for (const fault of FAULT_KINDS) {
    const recording = simulateRecording({ seed: 31, fault });
    const rows = recording.readings.map((r) => CHANNELS.map((c) => r.values[c]));
    const params = fitPca([...CHANNELS], rows.slice(0, 400), OPTIONS);
    const session = await ort.InferenceSession.create(pcaToOnnx(params, "test"));
    const count = rows.length - 400;
    const input = new Float32Array(count * 12 * 8);
    for (let i = 0; i < count; i++) {
      windowAt(rows, 400 + i, 12).forEach((row, r) => input.set(row, i * 96 + r * 8));
    }
    const output = await session.run({ window: new ort.Tensor("float32", input, [count, 12, 8]) });
    const scores = output.score.data as Float32Array;
    const contributions = output.contributions.data as Float32Array;
    for (let i = 0; i < count; i++) {
      // The reference gets the float32-rounded inputs the graph sees.
      const window = windowAt(rows, 400 + i, 12).map((row) => row.map(Math.fround));
      const reference = referenceScore(params, window);
      const tolerance = 1e-4 * Math.max(1, Math.abs(reference.score));
      assert.ok(
        Math.abs(scores[i] - reference.score) <= tolerance,
        `${fault}[${i}]: ${scores[i]} vs ${reference.score}`,
      );
      for (let j = 0; j < 8; j++) {
        const expected = reference.contributions[j];
        assert.ok(
          Math.abs(contributions[i * 8 + j] - expected) <= 1e-4 * Math.max(1, expected),
          `${fault}[${i}] sensor ${j}`,
        );
      }
    }
    await session.release();
  }
});

Deno.test("calibration limits put about the chosen share of calibration readings above the threshold", () => {
  const recording = simulateRecording({ seed: 32, fault: "drift" });
  const rows = recording.readings.map((r) => CHANNELS.map((c) => r.values[c]));
  const params = fitPca([...CHANNELS], rows.slice(0, 400), { ...OPTIONS, margin: 1 });
  const above =
    rows.slice(0, 400).filter((_, i) => referenceScore(params, windowAt(rows, i, 12)).score > 1.0001).length;
  assert.ok(above <= 4, `${above} of 400 calibration readings above a 0.995-quantile limit`);
  assert.throws(() => fitPca(["a"], [[1], [2]], OPTIONS), RangeError);
});

Deno.test("the debouncer starts an episode at k of the last n exceedances and ends it after a quiet run", () => {
  const debouncer = new Debouncer({ onCount: 3, ofLast: 5, clearAfter: 4 });
  const steps = [1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1].map((e) => debouncer.push(e === 1));
  assert.deepEqual(steps.map((s) => s.anomaly ? 1 : 0), [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
  assert.deepEqual(steps.flatMap((s, i) => s.started ? [i] : []), [4]);
  assert.deepEqual(steps.flatMap((s, i) => s.ended ? [i] : []), [11]);
  const resumed = new Debouncer({ onCount: 3, ofLast: 5, clearAfter: 4 }, {
    anomaly: true,
    recent: [true, false, false],
  });
  assert.equal(resumed.push(false).anomaly, true);
  assert.equal(resumed.push(false).ended, true);
});
