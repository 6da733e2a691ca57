/**
 * The calibrated detector, in plain TypeScript: windowed features, standardisation, PCA with
 * Hotelling's T² and the squared prediction error Q. `fitPca` fits it to a device's calibration
 * readings; `referenceScore` is the reference the ONNX graph (onnx_graph.ts) must match.
 *
 * Features per sensor over the last `window` readings: the last value and the window standard
 * deviation (spikes raise it, a stuck sensor drops it to zero). Adding the window mean was
 * measured worse (F1 0.876 vs 0.889 on the simulator), as was keeping fewer components (0.95 of
 * the variance: 0.780): with nearly all components kept, T² is close to a full Mahalanobis
 * distance, and Q catches what the calibration never varied.
 */
import { EVD, Matrix } from "ml-matrix";

export interface PcaParams {
  sensors: string[];
  window: number;
  /** Per feature (2 x sensors: last values, then window std): mean and 1/std over calibration. */
  mean: number[];
  invStd: number[];
  /** Loadings, features x components. */
  components: number[][];
  /** 1/eigenvalue per component. */
  invEigen: number[];
  t2Limit: number;
  qLimit: number;
}

export interface FitOptions {
  window: number;
  /** Share of variance the kept components explain. */
  varianceKept: number;
  /** Calibration quantile that sets each limit... */
  quantile: number;
  /** ...times this margin. */
  margin: number;
}

export interface Score {
  /** max(T²/T²limit, Q/Qlimit): above 1 is anomalous. */
  score: number;
  t2: number;
  q: number;
  /** Squared standardised deviation per sensor (the larger of its two features). */
  contributions: number[];
}

/** Features of one window (rows oldest first, each a value per sensor). */
export function windowFeatures(rows: readonly (readonly number[])[]): number[] {
  const sensors = rows[0].length;
  const last = rows[rows.length - 1];
  const mean = new Array(sensors).fill(0);
  const std = new Array(sensors).fill(0);
  for (const row of rows) for (let j = 0; j < sensors; j++) mean[j] += row[j] / rows.length;
  for (const row of rows) for (let j = 0; j < sensors; j++) std[j] += (row[j] - mean[j]) ** 2 / rows.length;
  return [...last, ...std.map(Math.sqrt)];
}

/** The window ending at `index`: the `window` rows up to it, the first row repeated when short. */
export function windowAt<T>(rows: readonly T[], index: number, window: number): T[] {
  const out: T[] = [];
  for (let i = index - window + 1; i <= index; i++) out.push(rows[Math.max(0, i)]);
  return out;
}

export function fitPca(sensors: string[], rows: readonly (readonly number[])[], options: FitOptions): PcaParams {
  if (rows.length < 10) throw new RangeError(`Calibration needs at least 10 readings, got ${rows.length}`);
  const features = rows.map((_, i) => windowFeatures(windowAt(rows, i, options.window)));
  const width = features[0].length;
  const mean = new Array(width).fill(0);
  for (const f of features) for (let j = 0; j < width; j++) mean[j] += f[j] / features.length;
  const invStd = mean.map((m, j) => {
    let variance = 0;
    for (const f of features) variance += (f[j] - m) ** 2 / (features.length - 1);
    return 1 / Math.max(Math.sqrt(variance), 1e-6 * Math.max(1, Math.abs(m)));
  });
  const standardised = new Matrix(features.map((f) => f.map((v, j) => (v - mean[j]) * invStd[j])));
  const covariance = standardised.transpose().mmul(standardised).div(features.length - 1);
  const evd = new EVD(covariance, { assumeSymmetric: true });
  const order = evd.realEigenvalues.map((value, index) => ({ value: Math.max(value, 0), index }))
    .sort((a, b) => b.value - a.value);
  const total = order.reduce((sum, e) => sum + e.value, 0);
  let kept = 0;
  let explained = 0;
  while (kept < order.length - 1 && explained < options.varianceKept * total) explained += order[kept++].value;
  const vectors = evd.eigenvectorMatrix;
  const components = Array.from({ length: width }, (_, j) => order.slice(0, kept).map((e) => vectors.get(j, e.index)));
  const invEigen = order.slice(0, kept).map((e) => 1 / Math.max(e.value, 1e-9));
  const params: PcaParams = {
    sensors,
    window: options.window,
    mean,
    invStd,
    components,
    invEigen,
    t2Limit: 1,
    qLimit: 1,
  };
  const stats = rows.map((_, i) => statistics(params, windowAt(rows, i, options.window)));
  params.t2Limit = quantile(stats.map((s) => s.t2), options.quantile) * options.margin;
  params.qLimit = Math.max(quantile(stats.map((s) => s.q), options.quantile) * options.margin, 1e-9);
  return params;
}

function statistics(params: PcaParams, rows: readonly (readonly number[])[]) {
  const z = windowFeatures(rows).map((v, j) => (v - params.mean[j]) * params.invStd[j]);
  const k = params.invEigen.length;
  const t = new Array(k).fill(0);
  for (let j = 0; j < z.length; j++) for (let c = 0; c < k; c++) t[c] += z[j] * params.components[j][c];
  let t2 = 0;
  for (let c = 0; c < k; c++) t2 += t[c] * t[c] * params.invEigen[c];
  let q = 0;
  for (let j = 0; j < z.length; j++) {
    let reconstructed = 0;
    for (let c = 0; c < k; c++) reconstructed += t[c] * params.components[j][c];
    q += (z[j] - reconstructed) ** 2;
  }
  return { z, t2, q };
}

export function referenceScore(params: PcaParams, rows: readonly (readonly number[])[]): Score {
  const { z, t2, q } = statistics(params, rows);
  const n = params.sensors.length;
  const contributions = params.sensors.map((_, j) => Math.max(z[j] ** 2, z[n + j] ** 2));
  return { score: Math.max(t2 / params.t2Limit, q / params.qLimit), t2, q, contributions };
}

export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const position = (sorted.length - 1) * q;
  const low = Math.floor(position);
  const high = Math.ceil(position);
  return sorted[low] + (sorted[high] - sorted[low]) * (position - low);
}
