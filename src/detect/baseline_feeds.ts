/**
 * Packs readings of many devices into the shared graph's inputs (baseline_graph.ts): a window per
 * reading, padded to the widest device of the batch, and the parameters once per device row
 * (readings of a device in one round share its centres). A padded sensor has up = down = 0, so it
 * contributes nothing.
 *
 * Levels go in relative to the device's calibration level: float32 keeps about 7 digits, so a
 * level of 100 and a deviation of 0.01 would otherwise leave scores rounded differently by batch
 * shapes onnxruntime computes differently.
 *
 * A sensor a reading lacks is NaN in the window: its values go in at the calibration level and its
 * terms' up = down = 0 (a device row of its own), so the reading is scored without it.
 *
 * The hot path allocates nothing per reading: the inputs are typed arrays kept between runs
 * (`FeedBuffers`, handed out one set per run in flight) and the parameters are packed as float32
 * once per model.
 */
import { ADAPTIVE_TERMS, LEVEL, TERM_FEATURE, TERMS, WINDOW } from "./baseline_features.ts";
import { BASELINE_INPUTS } from "./baseline_model.ts";
import type { Feeds } from "./inference.ts";
import type { BundleManifest } from "./model_bundle.ts";

export type BaselineManifest = NonNullable<BundleManifest["baseline"]>;

export interface BaselineItem {
  /** The device's last readings, oldest first (at most WINDOW; a short window repeats its oldest). */
  rows: readonly (readonly number[])[];
  params: BaselineManifest;
  /** The adaptive terms' current centres (ADAPTIVE_TERMS x sensors); the rest come from `params`. */
  center: readonly number[];
}

export interface PackedParams {
  /** What each sensor's levels are fed relative to: its calibration level. */
  offsets: Float64Array;
  floor: Float32Array;
  up: Float32Array;
  down: Float32Array;
  /** The fixed terms' centres, relative where they read a level. */
  center: Float32Array;
}

/** One batch's inputs: views of a FeedBuffers' arrays, valid until it is packed again. */
export interface PackedBatch {
  feeds: Feeds;
  width: number;
  /** The items (index in the batch) scored without some sensors, and those sensors (ascending). */
  missing: Map<number, number[]> | null;
}

/**
 * Largest distance from the calibration level fed to the graph. float32 overflows when such
 * values are squared for the spread (about 4e18 and up): a reading of 1e20 or a PLC's 3.4e38
 * "bad value" would then make the run non-finite and deactivate the model. Clamped, it scores as
 * the huge deviation it is.
 */
const MAX_LEVEL_DISTANCE = 1e15;

/** Device row indices as int64, made once. */
const deviceIndices: bigint[] = [];

/** Input arrays reused from one batch to the next; one set per run in flight. */
export class FeedBuffers {
  #window = new Float32Array(0);
  #device = new BigInt64Array(0);
  #floor = new Float32Array(0);
  #center = new Float32Array(0);
  #up = new Float32Array(0);
  #down = new Float32Array(0);
  readonly #rowOf = new Map<readonly number[], number>();
  readonly #rowParams: BaselineManifest[] = [];

  /** Packs `items[from..to)`. The views returned are overwritten by the next call. */
  pack(items: readonly BaselineItem[], from: number, to: number): PackedBatch {
    const n = to - from;
    let width = 0;
    for (let i = from; i < to; i++) width = Math.max(width, items[i].params.floor.length);
    this.#reserve(n, width);
    const window = this.#window;
    const deviceOf = this.#device;
    const rowOf = this.#rowOf;
    const rowParams = this.#rowParams;
    rowOf.clear();
    let devices = 0;
    let missing: Map<number, number[]> | null = null;
    let lastParams: BaselineManifest | null = null;
    let fixed: PackedParams | null = null;
    let lastCenter: readonly number[] | null = null;
    let lastRowParams: BaselineManifest | null = null;
    let lastRow = 0;
    for (let i = 0; i < n; i++) {
      const item = items[from + i];
      if (item.params !== lastParams) fixed = packedParams(lastParams = item.params);
      const offsets = fixed!.offsets;
      const sensors = offsets.length;
      const { rows } = item;
      // The last WINDOW rows; a short window repeats its oldest.
      const first = Math.max(0, rows.length - WINDOW);
      const count = rows.length - first;
      let absent: number[] | null = null;
      for (let r = 0; r < WINDOW; r++) {
        const row = rows[first + Math.max(0, count - WINDOW + r)];
        const at = (i * WINDOW + r) * width;
        for (let j = 0; j < sensors; j++) {
          const distance = row[j] - offsets[j];
          // One well-predicted test for the usual case; NaN fails it too.
          if (distance <= MAX_LEVEL_DISTANCE && distance >= -MAX_LEVEL_DISTANCE) window[at + j] = distance;
          else if (row[j] === row[j]) window[at + j] = distance > 0 ? MAX_LEVEL_DISTANCE : -MAX_LEVEL_DISTANCE;
          else {
            // NaN: the sensor is missing from the window; this value goes in at the calibration level.
            window[at + j] = 0;
            if (absent === null) absent = [j];
            else if (!absent.includes(j)) absent.push(j);
          }
        }
        if (sensors < width) window.fill(0, at + sensors, at + width);
      }
      let params = item.params;
      if (absent !== null) {
        absent.sort((a, b) => a - b);
        (missing ??= new Map()).set(i, absent);
        params = switchedOff(params, absent);
      }
      const center = item.center;
      if (center !== lastCenter || params !== lastRowParams) {
        let row = rowOf.get(center);
        if (row === undefined || rowParams[row] !== params) {
          rowOf.set(center, row = devices++);
          rowParams[row] = params;
          this.#packDevice(row, width, params === item.params ? fixed! : packedParams(params), center);
        }
        lastCenter = center;
        lastRowParams = params;
        lastRow = row;
      }
      deviceOf[i] = deviceIndices[lastRow] ??= BigInt(lastRow);
    }
    rowParams.length = 0;
    rowOf.clear();
    const terms = [devices, TERMS.length, width];
    const termValues = devices * TERMS.length * width;
    return {
      width,
      missing,
      feeds: {
        [BASELINE_INPUTS.window]: { data: window.subarray(0, n * WINDOW * width), dims: [n, WINDOW, width] },
        [BASELINE_INPUTS.device]: { data: deviceOf.subarray(0, n), dims: [n] },
        [BASELINE_INPUTS.floor]: { data: this.#floor.subarray(0, devices * width), dims: [devices, width] },
        [BASELINE_INPUTS.center]: { data: this.#center.subarray(0, termValues), dims: terms },
        [BASELINE_INPUTS.up]: { data: this.#up.subarray(0, termValues), dims: terms },
        [BASELINE_INPUTS.down]: { data: this.#down.subarray(0, termValues), dims: terms },
      },
    };
  }

  /** Grows the arrays to hold `n` readings (and as many device rows) of `width` sensors. */
  #reserve(n: number, width: number): void {
    if (this.#window.length < n * WINDOW * width) this.#window = new Float32Array(n * WINDOW * width);
    if (this.#device.length < n) this.#device = new BigInt64Array(n);
    if (this.#floor.length < n * width) this.#floor = new Float32Array(n * width);
    if (this.#center.length < n * TERMS.length * width) {
      this.#center = new Float32Array(n * TERMS.length * width);
      this.#up = new Float32Array(n * TERMS.length * width);
      this.#down = new Float32Array(n * TERMS.length * width);
    }
  }

  /** Writes device row `row`'s parameters, padded to `width` (floor 1, the rest 0). */
  #packDevice(row: number, width: number, fixed: PackedParams, adaptive: readonly number[]): void {
    const { offsets } = fixed;
    const sensors = offsets.length;
    const floor = this.#floor;
    const center = this.#center;
    const up = this.#up;
    const down = this.#down;
    floor.set(fixed.floor, row * width);
    floor.fill(1, row * width + sensors, (row + 1) * width);
    for (let t = 0; t < TERMS.length; t++) {
      const from = t * sensors;
      const to = (row * TERMS.length + t) * width;
      up.set(fixed.up.subarray(from, from + sensors), to);
      down.set(fixed.down.subarray(from, from + sensors), to);
      if (t >= ADAPTIVE_TERMS) center.set(fixed.center.subarray(from, from + sensors), to);
      else {
        const relative = TERM_FEATURE[t] === LEVEL;
        for (let j = 0; j < sensors; j++) center[to + j] = adaptive[from + j] - (relative ? offsets[j] : 0);
      }
      up.fill(0, to + sensors, to + width);
      down.fill(0, to + sensors, to + width);
      center.fill(0, to + sensors, to + width);
    }
  }
}

/**
 * The graph's inputs for `items` in arrays of their own (not reused): for a run outside the
 * scoring stage, such as the benchmark's raw `session.run`.
 */
export function baselineFeeds(items: readonly BaselineItem[]): { feeds: Feeds; width: number } {
  const { feeds, width } = new FeedBuffers().pack(items, 0, items.length);
  const copies: Feeds = {};
  for (const [name, { data, dims }] of Object.entries(feeds)) copies[name] = { data: data.slice(), dims };
  return { feeds: copies, width };
}

const switchedOffParams = new WeakMap<BaselineManifest, Map<string, BaselineManifest>>();

/**
 * Sets of missing sensors kept per model. The sets come from what devices send: a device leaving
 * out a different subset each reading would otherwise add a variant (about 11 KB with its packed
 * copy) per reading for the model's lifetime. Beyond the bound the oldest set is dropped and made
 * again when it recurs.
 */
export const SWITCHED_OFF_VARIANTS = 16;

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
    if (variants.size >= SWITCHED_OFF_VARIANTS) variants.delete(variants.keys().next().value!);
    variants.set(key, result = { ...params, up, down });
  }
  return result;
}

/** How many sets of missing sensors are kept for `params` (for tests). */
export function switchedOffVariants(params: BaselineManifest): number {
  return switchedOffParams.get(params)?.size ?? 0;
}

const packed = new WeakMap<BaselineManifest, PackedParams>();

/** A device's fixed parameters as float32, made once per model (parameters never change). */
export function packedParams(params: BaselineManifest): PackedParams {
  let result = packed.get(params);
  if (result) return result;
  const sensors = params.floor.length;
  const offsets = Float64Array.from({ length: sensors }, (_, j) => params.center[LEVEL * sensors + j]);
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
