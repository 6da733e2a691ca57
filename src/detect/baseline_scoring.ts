/**
 * Runs the shared drift-robust graph (baseline_graph.ts) for readings of many devices at once:
 * each row carries its device's window and parameters, padded to the widest device of the batch
 * (a padded sensor has up = down = 0, so it contributes nothing).
 *
 * Levels go in relative to the device's calibration level (and come back absolute): float32
 * keeps about 7 digits, so a level of 100 and a deviation of 0.01 would otherwise leave scores
 * rounded differently by batch shapes onnxruntime computes differently.
 *
 * A sensor a reading lacks is NaN in the window. Until it has filled the window again, the reading
 * is scored without it, the way a padded sensor is: its values go in at the calibration level and
 * its terms' up = down = 0, so it contributes nothing; its features come back NaN (not measured).
 */
import type * as ort from "onnxruntime-node";
import { ADAPTIVE_TERMS, FEATURES, LEVEL, TERM_FEATURE, TERMS, WINDOW } from "./baseline_features.ts";
import { BASELINE_INPUTS, BASELINE_OUTPUTS } from "./baseline_model.ts";
import type { Feeds, Inference } from "./inference.ts";
import type { BundleManifest } from "./model_bundle.ts";
import { ModelRunError } from "./model_output.ts";

export type BaselineManifest = NonNullable<BundleManifest["baseline"]>;

export interface BaselineItem {
  /** The device's last readings, oldest first (at most WINDOW; a short window repeats its oldest). */
  rows: readonly (readonly number[])[];
  params: BaselineManifest;
  /** The adaptive terms' current centres (ADAPTIVE_TERMS x sensors); the rest come from `params`. */
  center: readonly number[];
}

export interface BaselineResult {
  score: number;
  contributions: Float32Array;
  /** Feature-major: level, spread and rate of each sensor. */
  features: Float64Array;
}

/** Scores items in onnxruntime calls of at most `batchSize`. Throws ModelRunError. */
export async function scoreBaseline(
  inference: Inference,
  session: ort.InferenceSession,
  items: readonly BaselineItem[],
  batchSize: number,
): Promise<BaselineResult[]> {
  const results: BaselineResult[] = [];
  for (let start = 0; start < items.length; start += batchSize) {
    const chunk = items.slice(start, start + batchSize).map(withoutMissing);
    const { feeds, width } = baselineFeeds(chunk);
    const outputs = await inference.runFeeds(session, feeds);
    const scores = finite(outputs, BASELINE_OUTPUTS.score, chunk.length);
    const contributions = finite(outputs, BASELINE_OUTPUTS.contributions, chunk.length * width);
    const features = finite(outputs, BASELINE_OUTPUTS.features, chunk.length * FEATURES.length * width);
    chunk.forEach((item, i) => {
      const sensors = item.params.floor.length;
      const own = new Float64Array(FEATURES.length * sensors);
      const offsets = packedParams(item.params).offsets;
      for (let f = 0; f < FEATURES.length; f++) {
        const from = (i * FEATURES.length + f) * width;
        for (let j = 0; j < sensors; j++) own[f * sensors + j] = features[from + j] + (f === LEVEL ? offsets[j] : 0);
      }
      for (const j of item.missing) for (let f = 0; f < FEATURES.length; f++) own[f * sensors + j] = NaN;
      results.push({
        score: scores[i],
        contributions: contributions.slice(i * width, i * width + sensors),
        features: own,
      });
    });
  }
  return results;
}

/** The sensors (indices) that are NaN somewhere in a window: not scored on until they fill it again. */
export function missingSensors(rows: readonly (readonly number[])[]): number[] {
  const missing: number[] = [];
  const width = rows[0]?.length ?? 0;
  for (let j = 0; j < width; j++) if (rows.some((row) => Number.isNaN(row[j]))) missing.push(j);
  return missing;
}

/** An item whose missing sensors are switched off: their values at the calibration level, up = down = 0. */
function withoutMissing(item: BaselineItem): BaselineItem & { missing: number[] } {
  const rows = item.rows.slice(-WINDOW);
  const missing = missingSensors(rows);
  if (missing.length === 0) return { ...item, missing };
  const { offsets } = packedParams(item.params);
  return {
    ...item,
    rows: rows.map((row) => row.map((value, j) => Number.isNaN(value) ? offsets[j] : value)),
    params: switchedOff(item.params, missing),
    missing,
  };
}

const switchedOffParams = new WeakMap<BaselineManifest, Map<string, BaselineManifest>>();

/** A device's parameters with `sensors` contributing nothing; one object per set, so rows still share it. */
function switchedOff(params: BaselineManifest, sensors: readonly number[]): BaselineManifest {
  const key = sensors.join(",");
  let variants = switchedOffParams.get(params);
  if (!variants) switchedOffParams.set(params, variants = new Map());
  let result = variants.get(key);
  if (!result) {
    const count = params.floor.length;
    const up = [...params.up];
    const down = [...params.down];
    for (const j of sensors) for (let t = 0; t < TERMS.length; t++) up[t * count + j] = down[t * count + j] = 0;
    variants.set(key, result = { ...params, up, down });
  }
  return result;
}

/**
 * The graph's inputs for `items`, padded to the most sensors among them: a window per reading,
 * and the parameters once per device (readings of a device in one round share its centres).
 */
export function baselineFeeds(items: readonly BaselineItem[]): { feeds: Feeds; width: number } {
  let width = 0;
  for (const item of items) width = Math.max(width, item.params.floor.length);
  const n = items.length;
  const window = new Float32Array(n * WINDOW * width);
  const rowOf = new Map<readonly number[], number>();
  const deviceOf = new BigInt64Array(n);
  const devices: BaselineItem[] = [];
  items.forEach((item, i) => {
    const fixed = packedParams(item.params);
    const sensors = fixed.offsets.length;
    const { rows } = item;
    for (let r = 0; r < WINDOW; r++) {
      const row = rows[Math.max(0, rows.length - WINDOW + r)];
      const at = (i * WINDOW + r) * width;
      for (let j = 0; j < sensors; j++) window[at + j] = clampLevel(row[j] - fixed.offsets[j]);
    }
    let device = rowOf.get(item.center);
    if (device === undefined || devices[device].params !== item.params) {
      rowOf.set(item.center, device = devices.length);
      devices.push(item);
    }
    deviceOf[i] = BigInt(device);
  });
  const d = devices.length;
  const floor = new Float32Array(d * width).fill(1);
  const center = new Float32Array(d * TERMS.length * width);
  const up = new Float32Array(d * TERMS.length * width);
  const down = new Float32Array(d * TERMS.length * width);
  devices.forEach((item, k) => {
    const fixed = packedParams(item.params);
    const sensors = fixed.offsets.length;
    floor.set(fixed.floor, k * width);
    for (let t = 0; t < TERMS.length; t++) {
      const from = t * sensors;
      const to = (k * TERMS.length + t) * width;
      up.set(fixed.up.subarray(from, from + sensors), to);
      down.set(fixed.down.subarray(from, from + sensors), to);
      if (t >= ADAPTIVE_TERMS) center.set(fixed.center.subarray(from, from + sensors), to);
      else {
        const relative = TERM_FEATURE[t] === LEVEL;
        for (let j = 0; j < sensors; j++) center[to + j] = item.center[from + j] - (relative ? fixed.offsets[j] : 0);
      }
    }
  });
  const terms = [d, TERMS.length, width];
  return {
    width,
    feeds: {
      [BASELINE_INPUTS.window]: { data: window, dims: [n, WINDOW, width] },
      [BASELINE_INPUTS.device]: { data: deviceOf, dims: [n] },
      [BASELINE_INPUTS.floor]: { data: floor, dims: [d, width] },
      [BASELINE_INPUTS.center]: { data: center, dims: terms },
      [BASELINE_INPUTS.up]: { data: up, dims: terms },
      [BASELINE_INPUTS.down]: { data: down, dims: terms },
    },
  };
}

/** The load test of a calibrated model: its own parameters on the given windows. */
export async function testBaseline(
  inference: Inference,
  session: ort.InferenceSession,
  manifest: BundleManifest,
  windows: readonly (readonly (readonly number[])[])[],
): Promise<void> {
  const params = manifest.baseline!;
  await scoreBaseline(inference, session, windows.map((rows) => ({ rows, params, center: params.center })), 64);
}

/**
 * Largest distance from the calibration level fed to the graph. float32 overflows when such
 * values are squared for the spread (about 4e18 and up): a reading of 1e20 or a PLC's 3.4e38
 * "bad value" would then make the run non-finite and deactivate the model. Clamped, it scores as
 * the huge deviation it is.
 */
const MAX_LEVEL_DISTANCE = 1e15;

function clampLevel(distance: number): number {
  return Math.max(-MAX_LEVEL_DISTANCE, Math.min(MAX_LEVEL_DISTANCE, distance));
}

interface PackedParams {
  offsets: Float64Array;
  floor: Float32Array;
  up: Float32Array;
  down: Float32Array;
  /** The fixed terms' centres, relative where they read a level. */
  center: Float32Array;
}

const packed = new WeakMap<BaselineManifest, PackedParams>();

/** A device's fixed parameters as float32, made once per model (parameters never change). */
function packedParams(params: BaselineManifest): PackedParams {
  let result = packed.get(params);
  if (result) return result;
  const sensors = params.floor.length;
  const offsets = Float64Array.from({ length: sensors }, (_, j) => levelOffset(params, j));
  const center = Float32Array.from(params.center, (value, index) => {
    const relative = TERM_FEATURE[Math.floor(index / sensors)] === LEVEL;
    return value - (relative ? offsets[index % sensors] : 0);
  });
  result = {
    offsets,
    floor: Float32Array.from(params.floor),
    up: Float32Array.from(params.up),
    down: Float32Array.from(params.down),
    center,
  };
  packed.set(params, result);
  return result;
}

/** What a sensor's levels are fed to the graph relative to: its calibration level. */
function levelOffset(params: BaselineManifest, sensor: number): number {
  return params.center[LEVEL * params.floor.length + sensor];
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
