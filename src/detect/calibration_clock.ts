/**
 * How much reading time a calibration has covered (`calibration.seconds`), on a device clock that
 * may step. The time is the sum of the gaps between consecutive calibration readings, in arrival
 * order, that are typical of the device: a gap back in time does not count, nor one longer than
 * about MAX_GAP_FACTOR times the median gap (a clock stepping forward, a stop of the line, a client
 * sending timestamps far apart). So a clock step can neither end a calibration early nor keep it
 * from ending; `MAX_CALIBRATION_READINGS` (scoring_pass.ts) bounds it whatever the timestamps say.
 *
 * The gaps are kept as a histogram in quarter-octave buckets (count and sum of each): a few hundred
 * numbers per calibrating device, cheap to copy for a pass's draft, order-independent once the gaps
 * are known, and rebuilt exactly from the stored readings after a restart.
 */

const BUCKETS_PER_OCTAVE = 4;
/** Gaps from 1 ms to 2^44 ms (about 550 years); longer ones go to the last bucket. */
const BUCKETS = 44 * BUCKETS_PER_OCTAVE;
/** Gaps up to about this many times the median gap count. */
export const MAX_GAP_FACTOR = 8;
const COUNTED_BUCKETS_ABOVE_MEDIAN = Math.round(BUCKETS_PER_OCTAVE * Math.log2(MAX_GAP_FACTOR));

export interface CalibrationClock {
  /** The previous calibration reading's time. */
  lastTs: number | null;
  /** Per bucket: how many forward gaps, and their sum in ms. */
  counts: number[];
  sums: number[];
}

export function newCalibrationClock(): CalibrationClock {
  return { lastTs: null, counts: new Array(BUCKETS).fill(0), sums: new Array(BUCKETS).fill(0) };
}

export function copyCalibrationClock(clock: CalibrationClock): CalibrationClock {
  return { lastTs: clock.lastTs, counts: [...clock.counts], sums: [...clock.sums] };
}

/** Adds the next calibration reading's time (arrival order). */
export function tickCalibrationClock(clock: CalibrationClock, ts: number): void {
  const gap = clock.lastTs === null ? 0 : ts - clock.lastTs;
  clock.lastTs = ts;
  if (gap <= 0) return;
  const bucket = Math.min(BUCKETS - 1, Math.max(0, Math.floor(BUCKETS_PER_OCTAVE * Math.log2(gap))));
  clock.counts[bucket]++;
  clock.sums[bucket] += gap;
}

/** Seconds of reading time covered: the sum of the gaps up to about MAX_GAP_FACTOR x the median. */
export function coveredSeconds(clock: CalibrationClock): number {
  let total = 0;
  for (const count of clock.counts) total += count;
  if (total === 0) return 0;
  let median = 0;
  for (let seen = 0; median < BUCKETS; median++) {
    seen += clock.counts[median];
    if (seen * 2 >= total) break;
  }
  let covered = 0;
  const last = Math.min(BUCKETS - 1, median + COUNTED_BUCKETS_ABOVE_MEDIAN);
  for (let bucket = 0; bucket <= last; bucket++) covered += clock.sums[bucket];
  return covered / 1000;
}
