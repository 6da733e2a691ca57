/**
 * Runs the shared drift-robust graph (baseline_graph.ts) for readings of many devices at once,
 * packed by baseline_feeds.ts (each row with its device's window and parameters, padded to the
 * widest device of the batch), and unpacks its outputs into columns: one array per output for the
 * whole call, each reading's values at its offset, levels made absolute again. Per-reading objects
 * are made only for callers that ask for them (`BaselineScores.result`).
 *
 * A sensor a reading lacks is NaN in the window. Until it has filled the window again, the reading
 * is scored without it, the way a padded sensor is; its features come back NaN (not measured).
 */
import type * as ort from "onnxruntime-node";
import { type BaselineItem, FeedBuffers, type PackedParams, packedParams } from "./baseline_feeds.ts";
import { FEATURES, LEVEL } from "./baseline_features.ts";
import { BASELINE_OUTPUTS } from "./baseline_model.ts";
import type { Inference, OnnxSession } from "./inference.ts";
import type { BundleManifest } from "./model_bundle.ts";
import { ModelRunError } from "./model_output.ts";

export { baselineFeeds, type BaselineItem, type BaselineManifest } from "./baseline_feeds.ts";

export interface BaselineResult {
  score: number;
  contributions: Float32Array;
  /** Feature-major: level, spread and rate of each sensor. */
  features: Float64Array;
}

/** The outputs of a call, as columns: reading `i`'s values start at `offsets[i]` x (1 or FEATURES.length). */
export class BaselineScores {
  readonly scores: Float32Array;
  /** Where each reading's sensors start (n + 1 entries: reading i has offsets[i + 1] - offsets[i]). */
  readonly offsets: Uint32Array;
  /** Each sensor's contribution. */
  readonly contributions: Float32Array;
  /** Per reading, feature-major: level, spread and rate of each of its sensors. */
  readonly features: Float64Array;

  constructor(items: readonly BaselineItem[]) {
    this.scores = new Float32Array(items.length);
    this.offsets = new Uint32Array(items.length + 1);
    for (let i = 0; i < items.length; i++) this.offsets[i + 1] = this.offsets[i] + items[i].params.floor.length;
    this.contributions = new Float32Array(this.offsets[items.length]);
    this.features = new Float64Array(this.offsets[items.length] * FEATURES.length);
  }

  get length(): number {
    return this.scores.length;
  }

  /** Reading `i`'s result; its arrays are views of the columns. */
  result(i: number): BaselineResult {
    const from = this.offsets[i];
    const to = this.offsets[i + 1];
    return {
      score: this.scores[i],
      contributions: this.contributions.subarray(from, to),
      features: this.features.subarray(from * FEATURES.length, to * FEATURES.length),
    };
  }
}

/** Scores items in onnxruntime calls of at most `batchSize`, as objects. Throws ModelRunError. */
export async function scoreBaseline(
  inference: Inference,
  session: OnnxSession,
  items: readonly BaselineItem[],
  batchSize: number,
): Promise<BaselineResult[]> {
  const scores = await scoreBaselineColumns(inference, session, items, batchSize);
  return Array.from({ length: scores.length }, (_, i) => scores.result(i));
}

/** Input buffers not in use by a run; a run takes one set and gives it back when it has ended. */
const idleBuffers: FeedBuffers[] = [];

/** Scores items in onnxruntime calls of at most `batchSize`, as columns. Throws ModelRunError. */
export async function scoreBaselineColumns(
  inference: Inference,
  session: OnnxSession,
  items: readonly BaselineItem[],
  batchSize: number,
): Promise<BaselineScores> {
  const out = new BaselineScores(items);
  const buffers = idleBuffers.pop() ?? new FeedBuffers();
  for (let start = 0; start < items.length; start += batchSize) {
    const end = Math.min(items.length, start + batchSize);
    const { feeds, width, missing } = buffers.pack(items, start, end);
    // A run that failed or timed out may still be reading the buffers: they are not reused then.
    const outputs = await inference.runFeeds(session, feeds);
    const n = end - start;
    const scores = finite(outputs, BASELINE_OUTPUTS.score, n);
    const contributions = finite(outputs, BASELINE_OUTPUTS.contributions, n * width);
    const features = finite(outputs, BASELINE_OUTPUTS.features, n * FEATURES.length * width);
    out.scores.set(scores, start);
    const ownContributions = out.contributions;
    const ownFeatures = out.features;
    const readingOffsets = out.offsets;
    let lastParams: BaselineItem["params"] | null = null;
    let fixed: PackedParams | null = null;
    for (let i = 0; i < n; i++) {
      const item = items[start + i];
      if (item.params !== lastParams) fixed = packedParams(lastParams = item.params);
      const offsets = fixed!.offsets;
      const sensors = offsets.length;
      const at = readingOffsets[start + i];
      const row = i * width;
      for (let j = 0; j < sensors; j++) ownContributions[at + j] = contributions[row + j];
      const own = at * FEATURES.length;
      for (let f = 0; f < FEATURES.length; f++) {
        const from = (i * FEATURES.length + f) * width;
        const to = own + f * sensors;
        if (f === LEVEL) { for (let j = 0; j < sensors; j++) ownFeatures[to + j] = features[from + j] + offsets[j]; }
        // + 0 as before: a -0 comes back as 0.
        else for (let j = 0; j < sensors; j++) ownFeatures[to + j] = features[from + j] + 0;
      }
    }
    if (missing) {
      for (const [i, sensors] of missing) {
        const count = items[start + i].params.floor.length;
        const own = out.offsets[start + i] * FEATURES.length;
        for (const j of sensors) for (let f = 0; f < FEATURES.length; f++) out.features[own + f * count + j] = NaN;
      }
    }
  }
  if (idleBuffers.length < 2) idleBuffers.push(buffers);
  return out;
}

/** The sensors (indices) that are NaN somewhere in a window: not scored on until they fill it again. */
export function missingSensors(rows: readonly (readonly number[])[]): number[] {
  const missing: number[] = [];
  const width = rows[0]?.length ?? 0;
  for (let j = 0; j < width; j++) if (rows.some((row) => Number.isNaN(row[j]))) missing.push(j);
  return missing;
}

/** The load test of a calibrated model: its own parameters on the given windows. */
export async function testBaseline(
  inference: Inference,
  session: OnnxSession,
  manifest: BundleManifest,
  windows: readonly (readonly (readonly number[])[])[],
): Promise<void> {
  const params = manifest.baseline!;
  await scoreBaseline(inference, session, windows.map((rows) => ({ rows, params, center: params.center })), 64);
}

function finite(outputs: ort.InferenceSession.OnnxValueMapType, name: string, length: number): Float32Array {
  const tensor = outputs[name];
  if (!tensor || tensor.type !== "float32" || tensor.data.length !== length) {
    throw new ModelRunError("wrong_output", `Output ${name} is missing or misshapen (expected ${length} values)`);
  }
  const data = tensor.data as Float32Array;
  for (let i = 0; i < data.length; i++) {
    // NaN and ±Infinity are the values for which x - x is not 0.
    if (data[i] - data[i] !== 0) throw new ModelRunError("not_finite", `Output ${name} is ${data[i]} at ${i}`);
  }
  return data;
}
