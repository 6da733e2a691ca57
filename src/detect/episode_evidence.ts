/**
 * What counts towards an episode of a calibrated device: the debouncer (k of n readings to start,
 * n quiet ones to clear) is fed `countsAsAnomalous`, which looks behind the graph's score at the
 * terms that make it (their z, recomputed from the reading's features) and at the window's latest
 * readings:
 * - while the plant recovers from an episode that cleared (`recoverUntilTs`, baseline_tracker.ts)
 *   it settles a little off the centres it left: a new episode needs a score above RECOVERY_SCORE;
 * - a level fault is over once its sensor's latest readings are normal again, though the window's
 *   features still hold it (`backToNormal`); while the plant recovers, the same holds for the
 *   fault that just cleared, so that its window opens no new episode;
 * - within an episode's first `acceptSeconds`, a slow sensor whose rate alarmed in it keeps it
 *   going while its level stays where the rate took it (`movedSlowLevelHolds`).
 */
import {
  ADAPTIVE_TERMS,
  LEVEL,
  RATE,
  type TermParams,
  TERMS,
  termScores,
  windowFeatures,
} from "./baseline_features.ts";
import type { SensorRole } from "./baseline_fit.ts";
import { type BaselineState, RECOVERY_SCORE, termsAround } from "./baseline_tracker.ts";

/** A scored reading, as `countsAsAnomalous` judges it. */
export interface ScoredStep {
  /** The reading's features as the graph returned them (NaN: a sensor missing from the window). */
  features: ArrayLike<number>;
  /** The graph's score, against `centres` (the device's scoring centres for this reading). */
  score: number;
  centres: readonly number[];
  /** The model's threshold (1 for a calibrated model: terms are in units of their alarm threshold). */
  threshold: number;
  /** The readings of its window, oldest first, the reading last (NaN: a sensor not sent). */
  window: readonly (readonly number[])[];
  ts: number;
  /** Whether the device was in an episode before this reading. */
  inEpisode: boolean;
}

/** Term parameters with each sensor's spread floor, role and feature scales (as calibration fits them). */
export type CalibratedTerms = TermParams & {
  floor: readonly number[];
  roles: readonly SensorRole[];
  scale: readonly number[];
};

/** The latest readings that must look normal again for a level fault to be over (see `backToNormal`)... */
export const RECENT_READINGS = 12;
/**
 * ...once the fault's level has stood this many thresholds off. A 12-reading mean varies by about
 * 0.2 threshold, so a fault at 2 reads as normal on it only five of its deviations away; a fault
 * just past the threshold would often look over while it lasts.
 */
export const MIN_CLEARABLE_PEAK = 2;

/** The adaptive terms (TERMS: level, spread, rate; then the site limits'). */
const LEVEL_TERM = TERMS.indexOf("level");
const SPREAD_TERM = TERMS.indexOf("spread");
const RATE_TERM = TERMS.indexOf("rate");

/**
 * Whether the reading counts towards an episode (see the module's comment). `acceptSeconds`: after
 * this much reading time an episode's slow levels no longer hold it (a lasting change).
 */
export function countsAsAnomalous(
  state: BaselineState,
  params: CalibratedTerms,
  reading: ScoredStep,
  options: { acceptSeconds: number },
): boolean {
  const recovering = !reading.inEpisode && state.recoverUntilTs !== undefined && reading.ts < state.recoverUntilTs;
  const bar = reading.threshold * (recovering ? RECOVERY_SCORE : 1);
  if (!(reading.score > bar)) {
    return reading.inEpisode && movedSlowLevelHolds(state, params, reading, options.acceptSeconds);
  }
  // Within an episode, its fault; while the plant recovers, the fault that just cleared.
  const fault = reading.inEpisode ? state.carry : recovering ? state.lastFault : null;
  if (!fault) return true;
  const z = termScores(Array.from(reading.features), termsAround(params, reading.centres));
  const sensors = z.length / TERMS.length;
  // The terms over the bar (NaN, a sensor missing from the window, is one the graph scored 0).
  const counting = z.flatMap((value, i) => value > bar ? [i] : []);
  return !backToNormal(fault, counting, params, reading, sensors);
}

/**
 * Whether a reading of an episode whose score fell under the bar still counts: a slow sensor's
 * rate alarmed in this episode (hot water: the fluid's rise) and its level is still where the rate
 * took it (either side of its centre), judged as a fast sensor's level would be. The slow
 * tolerance is for drift over hours; an episode's centres stay where the plant was before it.
 * Without this, an episode ends once a slow rise stops (a rate alarms only while the level moves)
 * though the fluid is still hot, and a second one opens as it cools.
 *
 * The episode still ends when the level comes back. After `acceptSeconds` of the episode's reading
 * time (what the baseline takes for a lasting change) the level no longer holds it, so a slow
 * sensor that settled a little off cannot keep an episode open. Such an episode then clears and
 * the centres follow the hot fluid; its cooling back opens an episode that must not be held, so a
 * level back where it began (`previousFrom`) holds nothing (on a plant that warmed meanwhile the
 * cooling may still be held, for up to `acceptSeconds`). A reading over the bar is left to the
 * rules above: when its fault's sensors are back to normal, holding it would only lengthen the
 * episode's tail.
 */
function movedSlowLevelHolds(
  state: BaselineState,
  params: CalibratedTerms,
  reading: ScoredStep,
  acceptSeconds: number,
): boolean {
  const carry = state.carry;
  const sensors = params.roles.length;
  if (!carry || carry.peaks.length !== TERMS.length * sensors || !((carry.seconds ?? 0) < acceptSeconds)) return false;
  for (let j = 0; j < sensors; j++) {
    if (params.roles[j] !== "slow" || !(carry.peaks[RATE_TERM * sensors + j] > reading.threshold)) continue;
    // NaN (a sensor missing from the window) holds nothing.
    const level = reading.features[LEVEL * sensors + j];
    const gain = fastLevelGain(params, j, sensors);
    if (!(Math.abs(level - reading.centres[LEVEL_TERM * sensors + j]) * gain > reading.threshold)) continue;
    // Back where the last episode that outlasted the hold began (the plant returning after it).
    const before = state.previousFrom?.[j];
    if (before === undefined || Math.abs(level - before) * gain > reading.threshold) return true;
  }
  return false;
}

/**
 * The gain a slow sensor's level term would have if the sensor were fast: calibration gives both
 * roles' terms the same number of calibration scales to the threshold, which the sensor's rate
 * term shows (its gain is 1 / (rate scale x that number)), while its level term has it times the
 * slow tolerance. 0 when its scales are not positive (an uploaded baseline may set them so).
 */
function fastLevelGain(params: CalibratedTerms, j: number, sensors: number): number {
  const levelScale = params.scale[LEVEL * sensors + j];
  const gain = (params.up[RATE_TERM * sensors + j] * params.scale[RATE * sensors + j]) / levelScale;
  return levelScale > 0 && Number.isFinite(gain) ? gain : 0;
}

/**
 * Whether the fault (`fault`: the carrying terms of an episode) is over while the window's
 * features still hold it: a level is a 15-reading mean and a spread spans 20 readings, so after a
 * step ends they alarm for up to 20 readings more (the spread at the step's edge). It is over when
 * every term that counts is on a sensor whose level carried the fault, at least
 * MIN_CLEARABLE_PEAK thresholds off and more than its spread did (a fault of spread, such as
 * spikes, can leave a dozen quiet readings between spikes), and whose last RECENT_READINGS
 * readings have its normal level and spread (neither raised nor, as a stuck sensor's, lowered).
 */
function backToNormal(
  fault: { peaks: readonly number[]; carriers: readonly number[] },
  counting: readonly number[],
  params: CalibratedTerms,
  reading: ScoredStep,
  sensors: number,
): boolean {
  const rows = reading.window;
  if (counting.length === 0 || fault.peaks.length !== TERMS.length * sensors || rows.length < RECENT_READINGS) {
    return false;
  }
  let recent: number[] | null = null;
  for (const i of counting) {
    if (Math.floor(i / sensors) >= ADAPTIVE_TERMS) return false;
    const j = i % sensors;
    const level = LEVEL_TERM * sensors + j;
    if (!fault.carriers.includes(level) || fault.peaks[level] < MIN_CLEARABLE_PEAK * reading.threshold) return false;
    if (fault.peaks[SPREAD_TERM * sensors + j] >= fault.peaks[level]) return false;
    // The latest readings' level and spread, as the graph's features but over RECENT_READINGS.
    recent ??= termScores(
      windowFeatures(rows.slice(-RECENT_READINGS), params.floor),
      termsAround(params, reading.centres),
    );
    // NaN (a sensor not sent) is not normal.
    const normal = reading.threshold;
    if (!(recent[level] <= normal && recent[SPREAD_TERM * sensors + j] <= normal)) return false;
  }
  return true;
}
