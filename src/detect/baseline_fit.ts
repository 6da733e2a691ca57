/**
 * Calibration of the drift-robust detector (baseline_features.ts) on a device's first readings,
 * taken as normal. Per sensor it decides a role and fits each term's centre and scale:
 *
 * - `fast` sensors (noise-dominated: vibration, current, flow...) are judged by level and spread
 *   against a baseline that adapts while the device is normal;
 * - `slow` sensors (smooth, drifting: temperatures) are kept from alarming by their level alone:
 *   they are judged by their rate of change, and by level only with a wide tolerance
 *   (`slowLevelTolerance` times the calibration scale) against the adapting baseline, plus site
 *   limits when the manifest gives them.
 *
 * The role comes from the manifest (`spec.detection.sensors.<name>.role`), else it is measured on
 * the calibration window: a sensor whose one-reading changes are much smaller than its spread of
 * levels (std(change) / std(level) below SLOW_RATIO; white noise gives 1.41, plant temperatures
 * about 0.35) is slow.
 */
import {
  ADAPTIVE_TERMS,
  FEATURES,
  LEVEL,
  LEVEL_READINGS,
  RATE,
  RATE_READINGS,
  SITE_BOUNDS,
  SITE_RISE,
  SPREAD,
  type TermParams,
  TERMS,
  WINDOW,
  windowFeatures,
} from "./baseline_features.ts";

export const SLOW_RATIO = 0.8;
/** Standard deviations of a feature that make a term reach 1 at sensitivity 1. */
export const Z_LIMIT = 6.5;

export type SensorRole = "fast" | "slow";

export interface SiteLimits {
  role?: SensorRole;
  min?: number;
  max?: number;
  maxRisePerMinute?: number;
}

export interface FitOptions {
  sensitivity: number;
  slowLevelTolerance: number;
  sensors: Readonly<Record<string, Readonly<SiteLimits>>>;
}

export interface BaselineParams extends TermParams {
  sensors: string[];
  roles: SensorRole[];
  /** Why each role was chosen: "manifest" or the measured change/level ratio. */
  roleSource: (number | "manifest")[];
  floor: number[];
  /**
   * Per feature (feature-major): the calibration scale, from which a slow sensor's level is judged at
   * a fast sensor's threshold while an episode holds (episode_evidence.ts).
   */
  scale: number[];
  /** Median seconds between calibration readings. */
  intervalSeconds: number;
  /** Sensors that never changed during calibration: judged by site limits only. */
  flatSensors: string[];
}

export function fitBaseline(
  sensors: string[],
  rows: readonly (readonly number[])[],
  timestamps: readonly number[],
  options: FitOptions,
): BaselineParams {
  if (rows.length < 20) throw new RangeError(`Calibration needs at least 20 readings, got ${rows.length}`);
  const s = sensors.length;
  const floor = sensors.map((_, j) => spreadFloor(rows.map((row) => row[j])));
  const first = Math.min(WINDOW - 1, rows.length - 10);
  const features: number[][] = [];
  for (let i = first; i < rows.length; i++) {
    features.push(windowFeatures(rows.slice(Math.max(0, i - WINDOW + 1), i + 1), floor));
  }
  const center = new Array<number>(TERMS.length * s).fill(0);
  const up = new Array<number>(TERMS.length * s).fill(0);
  const down = new Array<number>(TERMS.length * s).fill(0);
  const scale = new Array<number>(FEATURES.length * s).fill(0);
  const z = Z_LIMIT / options.sensitivity;
  const roles: SensorRole[] = [];
  const roleSource: (number | "manifest")[] = [];
  const flat: string[] = [];
  for (let j = 0; j < s; j++) {
    const values = rows.map((row) => row[j]);
    const site = options.sensors[sensors[j]] ?? {};
    const ratio = changeRatio(values);
    const role: SensorRole = site.role ?? (ratio < SLOW_RATIO ? "slow" : "fast");
    roles.push(role);
    roleSource.push(site.role ? "manifest" : round(ratio));
    const noise = samplingNoise(values);
    for (let f = 0; f < ADAPTIVE_TERMS; f++) {
      const series = features.map((row) => row[f * s + j]);
      const typical = median(series);
      center[f * s + j] = typical;
      scale[f * s + j] = Math.max(std(series), noise.bounds[f], 1e-6 * Math.max(1, Math.abs(typical)));
    }
    const gain = (f: number, tolerance = 1) => 1 / (scale[f * s + j] * z * tolerance);
    // A sensor that never moved during calibration (a flag, a setpoint) has no scale: any change
    // would look infinitely far. Only site limits judge it; recalibrate once it moves.
    if (noise.flat) {
      flat.push(sensors[j]);
    } else if (role === "fast") {
      up[LEVEL * s + j] = down[LEVEL * s + j] = gain(LEVEL);
      up[SPREAD * s + j] = down[SPREAD * s + j] = gain(SPREAD);
    } else {
      up[LEVEL * s + j] = down[LEVEL * s + j] = gain(LEVEL, options.slowLevelTolerance);
      up[RATE * s + j] = down[RATE * s + j] = gain(RATE);
    }
    fitSiteBounds(site, SITE_BOUNDS * s + j, { center, up, down });
  }
  const intervalSeconds = medianInterval(timestamps);
  for (let j = 0; j < s; j++) {
    const rise = options.sensors[sensors[j]]?.maxRisePerMinute;
    if (rise !== undefined) up[SITE_RISE * s + j] = 1 / (rise * intervalSeconds / 60);
  }
  return { sensors, roles, roleSource, floor, scale, intervalSeconds, center, up, down, flatSensors: flat };
}

/** Absolute bounds: z reaches 1 exactly at a bound (one-sided when only one is given). */
function fitSiteBounds(site: SiteLimits, index: number, params: TermParams): void {
  const { min, max } = site;
  if (min !== undefined && max !== undefined) {
    const half = Math.max((max - min) / 2, 1e-9);
    params.center[index] = (min + max) / 2;
    params.up[index] = params.down[index] = 1 / half;
  } else if (max !== undefined) {
    const span = Math.max(Math.abs(max) * 0.1, 1);
    params.center[index] = max - span;
    params.up[index] = 1 / span;
  } else if (min !== undefined) {
    const span = Math.max(Math.abs(min) * 0.1, 1);
    params.center[index] = min + span;
    params.down[index] = 1 / span;
  }
}

/**
 * Lower bounds on each feature's scale: what sampling noise alone gives a window of white noise
 * with the sensor's spread (level: σ/√15; spread: the sampling error of a log standard deviation
 * over 20 readings; rate: σ·√(2/10)/10), with σ at least half the sensor's resolution (its
 * smallest change) for quantised sensors. Overlapping windows of a short calibration underestimate a
 * feature's spread; these keep such a model from alarming at noise. `flat`: no change at all.
 */
function samplingNoise(values: readonly number[]): { bounds: [number, number, number]; flat: boolean } {
  const sigma = std(values);
  let resolution = Infinity;
  for (let i = 1; i < values.length; i++) {
    const change = Math.abs(values[i] - values[i - 1]);
    if (change > 0) resolution = Math.min(resolution, change);
  }
  const flat = resolution === Infinity;
  const quantum = flat ? 0 : resolution / 2;
  const bounds: [number, number, number] = [
    Math.max(sigma, quantum) / Math.sqrt(LEVEL_READINGS),
    1 / Math.sqrt(2 * (WINDOW - 1)),
    (Math.max(sigma, quantum) * Math.sqrt(2 / RATE_READINGS)) / (WINDOW - RATE_READINGS),
  ];
  return { bounds, flat };
}

/** A twentieth of the typical one-window spread: what a stuck sensor falls to. */
function spreadFloor(values: readonly number[]): number {
  const spreads: number[] = [];
  for (let i = WINDOW; i <= values.length; i += WINDOW) spreads.push(std(values.slice(i - WINDOW, i)));
  const typical = spreads.length > 0 ? median(spreads) : std(values);
  const mean = values.reduce((sum, v) => sum + v, 0) / values.length;
  return Math.max(typical / 20, 1e-9 * Math.max(1, Math.abs(mean)));
}

/** std(one-reading change) / std(level): 1.41 for white noise, small for smooth drifting channels. */
export function changeRatio(values: readonly number[]): number {
  const level = std(values);
  if (level === 0) return Math.SQRT2;
  const changes = values.slice(1).map((v, i) => v - values[i]);
  return std(changes) / level;
}

function medianInterval(timestamps: readonly number[]): number {
  const gaps = timestamps.slice(1).map((ts, i) => ts - timestamps[i]).filter((gap) => gap > 0);
  return gaps.length > 0 ? median(gaps) / 1000 : 1;
}

export function std(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const mean = values.reduce((sum, v) => sum + v, 0) / values.length;
  return Math.sqrt(values.reduce((sum, v) => sum + (v - mean) ** 2, 0) / (values.length - 1));
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
