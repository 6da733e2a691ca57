/**
 * A device's adaptive baseline: the centres of the level, spread and rate terms, which follow
 * the plant slowly while the device is normal (an exponential average with a time constant of
 * `adaptSeconds` of reading time) and are frozen during an episode, since adapting then would make
 * the return to normal look like a new fault.
 *
 * An episode ends as `rebaselined` when the plant has settled somewhere else: either the deviation
 * has stayed below `settleRatio` of the episode's peak for `settleSeconds` (the fault went away, the
 * plant did not come back to where it was; judged on the terms of a state, level and spread, when
 * they alarmed, since a rate of change alarms only while a fault comes on), or no sensor's level has moved by more than
 * `settleTolerance` (in units of its alarm threshold) for `acceptSeconds` (a lasting change). The
 * baseline then moves to the mean of that settled period.
 *
 * For RECOVERY_PERIODS x `settleSeconds` after an episode that cleared (not one that rebaselined),
 * the baseline follows the plant at the faster `settleSeconds`, and a new episode needs a score
 * above RECOVERY_SCORE: a plant settling after a fault would otherwise start small episodes, one
 * after another (`countsAsAnomalous` in episode_evidence.ts).
 */
import {
  ADAPTIVE_TERMS,
  FEATURES,
  LEVEL,
  RATE,
  TERM_FEATURE,
  type TermParams,
  TERMS,
  termScores,
  WINDOW,
} from "./baseline_features.ts";

export interface BaselineOptions {
  adaptSeconds: number;
  settleSeconds: number;
  acceptSeconds: number;
  settleTolerance: number;
  settleRatio: number;
}

/** A stretch of an episode's readings: when it began, levels then, and the features' sum. */
export interface Period {
  ref: number[];
  sinceTs: number;
  sum: number[];
  count: number;
}

/**
 * Readings are scored against a copy of the centres taken every REFRESH_READINGS readings of the
 * device (counting all its readings), and right after the baseline moves at once (rebaseline,
 * operator). So a reading's score depends on the readings before it only, never on how they were
 * split into scoring passes: a pass ends before a device's next refresh.
 */
export const REFRESH_READINGS = 16;
/** After an episode, for this many `settleSeconds`, the baseline follows the plant faster... */
const RECOVERY_PERIODS = 3;
/** ...and a reading counts towards a new episode only with a score above this. */
export const RECOVERY_SCORE = 2;
/** A faded episode whose fault's terms no longer alarm at all settles this many times sooner. */
const GONE_SPEEDUP = 3;

/** The refresh block a device's n-th reading (counting from 1) belongs to. */
export function refreshBlock(readingCount: number): number {
  return Math.floor((readingCount - 1) / REFRESH_READINGS);
}

/** What is kept per device, and persisted (`devices.baseline_json`). */
export interface BaselineState {
  /** Centres of the adaptive terms, term-major (ADAPTIVE_TERMS x sensors), after every reading so far. */
  center: number[];
  /** The centres readings are scored against, and the refresh block they were taken for. */
  scoring: number[];
  scoringBlock: number;
  lastTs: number | null;
  /** During an episode: since when the score has stayed well below its peak... */
  faded: Period | null;
  /** ...and since when no sensor's level has moved. */
  steady: Period | null;
  /**
   * During an episode, what carries the fault (see `faultNow`): the largest z so far of the terms
   * that judge a state (level, spread, site bounds), each such term's own largest z (term-major,
   * TERMS x sensors), the terms that alarmed up to the state's peak, the episode's reading time
   * so far (each step's elapsed time, as the centres' adaptation counts it: a clock that steps
   * back adds nothing) and the level centres it began from (`countsAsAnomalous` in
   * episode_evidence.ts).
   */
  carry?: { peak: number; peaks: number[]; carriers: number[]; seconds?: number; from?: number[] } | null;
  /** ...and since when none of those terms alarms any more. */
  gone?: Period | null;
  /**
   * The carrying terms of the episode that cleared last, kept while the plant recovers from it
   * (until `recoverUntilTs`, a new episode, a rebaseline or an operator's word): while the window
   * still holds that fault, it opens no new episode (`countsAsAnomalous` in episode_evidence.ts).
   */
  lastFault?: { peaks: number[]; carriers: number[] } | null;
  /**
   * The level centres (one per sensor) the last episode that outlasted `acceptSeconds` began from:
   * a slow level back there does not hold a later episode (`countsAsAnomalous` in
   * episode_evidence.ts).
   */
  previousFrom?: number[] | null;
  /** The reading after which the debouncer was last settled (a rebaseline or an operator action). */
  settledAfterId?: number;
  /** Until then (reading time), the baseline adapts at the faster `settleSeconds` (after an episode). */
  recoverUntilTs?: number;
  /**
   * After an operator took the present state as normal: up to the device's reading of this count,
   * the centres move to each reading's features (see `followAccepted`).
   */
  followUntilCount?: number;
}

export interface BaselineStep {
  features: ArrayLike<number>;
  score: number;
  inEpisode: boolean;
  peakScore: number;
  ts: number;
}

export function initialBaseline(params: TermParams, sensors: number): BaselineState {
  const center = params.center.slice(0, ADAPTIVE_TERMS * sensors);
  return { center, scoring: [...center], scoringBlock: -1, lastTs: null, faded: null, steady: null };
}

/**
 * The centres to score the device's `readingCount`-th reading against, refreshed from the
 * adapting ones when it starts a new block.
 */
export function scoringCentres(state: BaselineState, readingCount: number): number[] {
  const block = refreshBlock(readingCount);
  if (block !== state.scoringBlock) {
    state.scoring = [...state.center];
    state.scoringBlock = block;
  }
  return state.scoring;
}

/** The terms' parameters with the centres the device's readings are scored against. */
export function scoringTerms(params: TermParams, state: BaselineState): TermParams {
  return termsAround(params, state.scoring);
}

/** The terms' parameters with `centres` for the adaptive terms (the site limits' stay). */
export function termsAround(params: TermParams, centres: readonly number[]): TermParams {
  return { ...params, center: [...centres, ...params.center.slice(centres.length)] };
}

export function copyBaseline(state: BaselineState): BaselineState {
  return {
    center: [...state.center],
    scoring: [...state.scoring],
    scoringBlock: state.scoringBlock,
    lastTs: state.lastTs,
    faded: copyPeriod(state.faded),
    steady: copyPeriod(state.steady),
    gone: copyPeriod(state.gone ?? null),
    carry: state.carry
      ? {
        ...state.carry,
        peaks: [...state.carry.peaks],
        carriers: [...state.carry.carriers],
        from: state.carry.from && [...state.carry.from],
      }
      : null,
    previousFrom: state.previousFrom ? [...state.previousFrom] : null,
    lastFault: state.lastFault ? { peaks: [...state.lastFault.peaks], carriers: [...state.lastFault.carriers] } : null,
    recoverUntilTs: state.recoverUntilTs,
    settledAfterId: state.settledAfterId,
    followUntilCount: state.followUntilCount,
  };
}

/**
 * Moves the baseline by one scored reading; returns "rebaselined" when the plant has settled at a
 * new operating point (the caller ends the episode).
 */
export function advanceBaseline(
  state: BaselineState,
  params: TermParams,
  step: BaselineStep,
  options: BaselineOptions,
): "rebaselined" | null {
  const sensors = state.center.length / ADAPTIVE_TERMS;
  const elapsed = state.lastTs === null
    ? 0
    : Math.min(Math.max(step.ts - state.lastTs, 0) / 1000, options.adaptSeconds / 10);
  // A device clock that steps back would stretch the recovery (and its higher bar, see
  // episode_evidence.ts) by the step: its end moves back with the clock.
  if (state.lastTs !== null && step.ts < state.lastTs && state.recoverUntilTs !== undefined) {
    state.recoverUntilTs -= state.lastTs - step.ts;
  }
  state.lastTs = step.ts;
  const recovering = state.recoverUntilTs !== undefined && step.ts < state.recoverUntilTs;
  if (!step.inEpisode || (recovering && step.score < RECOVERY_SCORE)) {
    // Just after an episode the plant settles somewhere else: follow it faster, and let a small
    // deviation that appears meanwhile be absorbed rather than become an episode that never fades.
    if (!step.inEpisode && (state.steady || state.faded)) {
      state.recoverUntilTs = step.ts + RECOVERY_PERIODS * options.settleSeconds * 1000;
    }
    if (!step.inEpisode) {
      if (state.carry) state.lastFault = { peaks: state.carry.peaks, carriers: state.carry.carriers };
      if (state.recoverUntilTs === undefined || step.ts >= state.recoverUntilTs) state.lastFault = null;
      state.steady = state.faded = null;
      keepWhereOutlastedBegan(state, options);
      state.carry = null;
      state.gone = null;
    }
    const alpha = 1 - Math.exp(-elapsed / (recovering ? options.settleSeconds : options.adaptSeconds));
    for (let i = 0; i < state.center.length; i++) state.center[i] += alpha * (step.features[i] - state.center[i]);
    if (!step.inEpisode) return null;
  }
  const width = FEATURES.length * sensors;
  // The fault went away: every term that alarmed has stayed well below its own peak.
  const fault = faultNow(state, params, step, options.settleRatio);
  state.carry!.seconds = (state.carry!.seconds ?? 0) + elapsed;
  state.faded = fault === "present" ? null : accumulate(state.faded, step, width);
  state.gone = fault === "gone" ? accumulate(state.gone ?? null, step, width) : null;
  // A lasting change: no sensor's level has moved since the steady period began.
  const moved = state.steady ? movedSince(state.steady.ref, step.features, params, sensors) : Infinity;
  state.steady = moved > options.settleTolerance ? null : state.steady;
  state.steady = accumulate(state.steady, step, width, sensors);
  // Once the fault's terms no longer alarm at all, what still deviates is where the plant settled.
  const settled = [
    state.gone && { period: state.gone, needed: options.settleSeconds / GONE_SPEEDUP },
    state.faded && {
      period: state.faded,
      needed: options.settleSeconds,
    },
    {
      period: state.steady,
      needed: options.acceptSeconds,
    },
  ].find((candidate) => candidate && (step.ts - candidate.period.sinceTs) / 1000 >= candidate.needed);
  if (!settled) return null;
  keepWhereOutlastedBegan(state, options);
  const { sum, count } = settled.period;
  acceptCurrent(state, sum.slice(0, state.center.length).map((total) => total / count));
  return "rebaselined";
}

/**
 * `features` with the centres in place of those not measured (NaN: a sensor missing from the
 * window), so that a missing sensor's centres stay where they are.
 */
export function heldWhereMissing(state: BaselineState, features: ArrayLike<number>): ArrayLike<number> {
  let held: number[] | null = null;
  for (let i = 0; i < state.center.length; i++) {
    if (!Number.isNaN(features[i])) continue;
    held ??= Array.from(features);
    held[i] = state.center[i];
  }
  return held ?? features;
}

/**
 * Takes the plant's present state as normal: the centres of level and spread move to `features`.
 * The rate's centres stay: a rate of change describes a transition, not an operating point, and
 * the period a plant settles over starts in the transition (a fluid cooling after hot water), so
 * its mean rate would make the settled plant's flat temperature look like a rise.
 */
export function acceptCurrent(state: BaselineState, features: ArrayLike<number>): void {
  const sensors = state.center.length / ADAPTIVE_TERMS;
  for (let i = 0; i < state.center.length; i++) {
    if (TERM_FEATURE[Math.floor(i / sensors)] !== RATE) state.center[i] = features[i];
  }
  state.scoring = [...state.center];
  state.steady = state.faded = null;
  state.carry = null;
  state.lastFault = null;
  state.gone = null;
}

/**
 * Whether the fault has gone. A rate of change alarms while a fault comes on (a temperature
 * rising) and falls back while the fault stays, and a fault's terms rise and fall at their own pace
 * (spikes that first lifted a level keep a spread raised), so the episode's score against its peak
 * score says little. The fault is carried by the terms of a state (level, spread, site bounds) that
 * alarmed up to the episode's largest state deviation; it has gone when each of them is below
 * `ratio` of its own peak. A term that alarms only later (the plant settling elsewhere after the
 * fault) does not hold the episode open. An episode of rates alone compares its score with its peak.
 */
function faultNow(
  state: BaselineState,
  params: TermParams,
  step: BaselineStep,
  ratio: number,
): "present" | "faded" | "gone" {
  const z = termScores(Array.from(step.features), scoringTerms(params, state));
  const sensors = z.length / TERMS.length;
  const carry = state.carry && state.carry.peaks.length === z.length
    ? state.carry
    : (state.carry = { peak: 0, peaks: z.map(() => 0), carriers: [], from: levelCentres(state, sensors) });
  state.lastFault = null;
  let now = 0;
  for (let i = 0; i < z.length; i++) {
    carry.peaks[i] = Math.max(carry.peaks[i], z[i]);
    if (!RATE_TERMS.has(Math.floor(i / sensors))) now = Math.max(now, z[i]);
  }
  if (now >= carry.peak) {
    carry.peak = now;
    for (let i = 0; i < z.length; i++) {
      if (z[i] >= 1 && !RATE_TERMS.has(Math.floor(i / sensors)) && !carry.carriers.includes(i)) carry.carriers.push(i);
    }
  }
  if (carry.carriers.length === 0) return step.score < ratio * step.peakScore ? "faded" : "present";
  if (!carry.carriers.every((i) => z[i] < ratio * carry.peaks[i])) return "present";
  return carry.carriers.every((i) => z[i] < 1) ? "gone" : "faded";
}

/**
 * When an episode that outlasted `acceptSeconds` ends: keeps the level centres it began from, so
 * that a slow level back there holds no later episode (`countsAsAnomalous` in episode_evidence.ts).
 */
function keepWhereOutlastedBegan(state: BaselineState, options: BaselineOptions): void {
  const { carry } = state;
  if (carry?.from && (carry.seconds ?? 0) >= options.acceptSeconds) state.previousFrom = carry.from;
}

/** The centres of the level terms, one per sensor. */
function levelCentres(state: BaselineState, sensors: number): number[] {
  const level = TERM_FEATURE.indexOf(LEVEL);
  return state.center.slice(level * sensors, (level + 1) * sensors);
}

/** Terms that judge a rate of change rather than a state. */
const RATE_TERMS = new Set(TERMS.flatMap((_, t) => TERM_FEATURE[t] === RATE ? [t] : []));

/**
 * An operator's word that the present operating point is normal (accept, false alarm): the
 * centres move to the features of the device's window now, which `readingCount` readings have
 * filled so far. The window still holds readings from before the change the operator accepted (a
 * level is a 15-reading mean, a spread and a rate span 20 readings), so taking it alone as normal
 * would make the level walk away from the accepted one as the window fills with the new operating
 * point, and re-open an episode a dozen readings later. So for the next WINDOW readings the
 * centres keep following (`followAccepted`), until the window holds only readings from after the word.
 */
export function takeAsNormal(state: BaselineState, features: ArrayLike<number>, readingCount: number): void {
  acceptCurrent(state, heldWhereMissing(state, features));
  state.followUntilCount = readingCount + WINDOW;
}

/**
 * After `takeAsNormal`: moves the centres to this reading's features, unless the reading is
 * part of a new episode (then the following ends: a new change is not what the operator accepted).
 * True when the centres moved (the device's next reading is scored against them).
 */
export function followAccepted(
  state: BaselineState,
  step: { features: ArrayLike<number>; readingCount: number; ts: number; inEpisode: boolean },
): boolean {
  if (state.followUntilCount === undefined) return false;
  if (step.inEpisode || step.readingCount > state.followUntilCount) {
    state.followUntilCount = undefined;
    return false;
  }
  acceptCurrent(state, step.features);
  state.lastTs = step.ts;
  if (step.readingCount === state.followUntilCount) state.followUntilCount = undefined;
  return true;
}

/** Adds a reading to a period (starting one if there is none). */
function accumulate(period: Period | null, step: BaselineStep, width: number, sensors = 0): Period {
  if (!period) {
    return {
      ref: Array.from({ length: sensors }, (_, j) => step.features[LEVEL * sensors + j]),
      sinceTs: step.ts,
      sum: Array.from(step.features).slice(0, width),
      count: 1,
    };
  }
  for (let i = 0; i < width; i++) period.sum[i] += step.features[i];
  period.count++;
  return period;
}

function copyPeriod(period: Period | null): Period | null {
  return period && { ...period, ref: [...period.ref], sum: [...period.sum] };
}

/** The largest move of a sensor's level since `ref`, in units of its level term's threshold. */
function movedSince(ref: readonly number[], features: ArrayLike<number>, params: TermParams, sensors: number): number {
  let largest = 0;
  for (let j = 0; j < sensors; j++) {
    const gain = params.up[LEVEL * sensors + j];
    largest = Math.max(largest, Math.abs(features[LEVEL * sensors + j] - ref[j]) * gain);
  }
  return largest;
}
