/**
 * The drift-robust detector's numbers, in plain TypeScript: the reference that the ONNX graph
 * (baseline_graph.ts) must match, and what calibration fits on.
 *
 * Over the last WINDOW readings, per sensor, three features:
 * - level: the mean of the last LEVEL_READINGS readings (one reading cannot see a valve fault;
 *   a 15-reading mean can);
 * - spread: log(standard deviation over the window + floor): spikes raise it, a stuck sensor
 *   drops it to log(floor);
 * - rate: the mean of the last RATE_READINGS minus the mean of the first RATE_READINGS, per
 *   reading of distance between them.
 *
 * Each of TERMS.length scoring terms reads one feature and compares it with a centre:
 * z = max((f - centre) x up, (centre - f) x down). `up` and `down` fold in the scale, the alarm
 * threshold and which side counts, so a term is 0 where it is switched off and above 1 where it
 * alarms. The score is the largest z of all terms (a combiner that trusts no covariance), and a
 * sensor's contribution its largest z.
 */
export const WINDOW = 20;
export const LEVEL_READINGS = 15;
export const RATE_READINGS = 10;

export const FEATURES = ["level", "spread", "rate"] as const;
export const LEVEL = 0;
export const SPREAD = 1;
export const RATE = 2;

/** Terms: deviation of level, spread and rate from the adaptive baseline; site bounds; site rate of rise. */
export const TERMS = ["level", "spread", "rate", "site_bounds", "site_rise"] as const;
/** The feature each term reads. */
export const TERM_FEATURE = [LEVEL, SPREAD, RATE, LEVEL, RATE] as const;
/** Terms whose centre follows the plant (the baseline); the others are fixed site limits. */
export const ADAPTIVE_TERMS = 3;
export const SITE_BOUNDS = 3;
export const SITE_RISE = 4;

/** Per-device parameters, each term-major: index `term * sensors + sensor`. */
export interface TermParams {
  center: number[];
  up: number[];
  down: number[];
}

/** Features of one window (rows oldest first, at most WINDOW of them): feature-major, 3 x sensors. */
export function windowFeatures(rows: readonly (readonly number[])[], floor: readonly number[]): number[] {
  const sensors = floor.length;
  const n = rows.length;
  const out = new Array<number>(FEATURES.length * sensors);
  const levelFrom = Math.max(0, n - LEVEL_READINGS);
  const rateCount = Math.min(RATE_READINGS, n);
  for (let j = 0; j < sensors; j++) {
    let sum = 0;
    let levelSum = 0;
    let firstSum = 0;
    let lastSum = 0;
    for (let i = 0; i < n; i++) {
      const value = rows[i][j];
      sum += value;
      if (i >= levelFrom) levelSum += value;
      if (i < rateCount) firstSum += value;
      if (i >= n - rateCount) lastSum += value;
    }
    const mean = sum / n;
    let squares = 0;
    for (let i = 0; i < n; i++) squares += (rows[i][j] - mean) ** 2;
    out[LEVEL * sensors + j] = levelSum / (n - levelFrom);
    out[SPREAD * sensors + j] = Math.log(Math.sqrt(squares / n) + floor[j]);
    out[RATE * sensors + j] = (lastSum - firstSum) / rateCount / Math.max(1, n - rateCount);
  }
  return out;
}

/** z of every term (term-major) for the given features. */
export function termScores(features: readonly number[], params: TermParams): number[] {
  const sensors = features.length / FEATURES.length;
  return params.center.map((center, index) => {
    const term = Math.floor(index / sensors);
    const d = features[TERM_FEATURE[term] * sensors + (index % sensors)] - center;
    return Math.max(d * params.up[index], -d * params.down[index]);
  });
}

/** The score (largest z) and each sensor's contribution (its largest z). */
export function referenceScore(
  features: readonly number[],
  params: TermParams,
): { score: number; contributions: number[] } {
  const z = termScores(features, params);
  const sensors = features.length / FEATURES.length;
  const contributions = Array.from({ length: sensors }, (_, j) => {
    let largest = -Infinity;
    for (let term = 0; term < TERMS.length; term++) largest = Math.max(largest, z[term * sensors + j]);
    return largest;
  });
  return { score: Math.max(...contributions), contributions };
}
