/**
 * The figures of the detection evaluation, computed from the flags Outpost returned:
 * - pointwise counts over readings after calibration, per fault kind and in total (F1, false-alarm
 *   rate = flagged normal readings / normal readings, missed-alarm rate);
 * - on long normal recordings, the share of readings flagged and episodes (rising edges of the
 *   flag) per hour of running after calibration;
 * - detection delay: seconds from a fault's start to the first flagged reading inside it.
 * Targets are issue 10's: F1 >= 0.85 with false alarms <= 10% on held-out seeds; long normal
 * recordings <= 5% flagged and <= 2 episodes per hour.
 */
import type { ScoredReading } from "../helpers/replay.ts";
import type { PlantRecording, Scenarios } from "../sim/plant_simulator.ts";
import type { SetResult } from "./detect_eval.ts";

export interface Counts {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
  /** Normal readings after the fault ended, and how many of them were flagged. */
  afterFault: number;
  afterFaultFlagged: number;
}

export interface NormalStats {
  recordings: number;
  hours: number;
  readings: number;
  flagged: number;
  episodes: number;
}

export interface DelayStats {
  faults: number;
  /** Seconds, over the faults that were flagged at all; null when none was. */
  median: number | null;
  p90: number | null;
  neverFlagged: number;
}

export const TARGETS = { f1: 0.85, falseAlarms: 0.10, normalFlagged: 0.05, episodesPerHour: 2 };

export const f1 = (c: Counts) => (2 * c.tp) / Math.max(1, 2 * c.tp + c.fp + c.fn);
export const falseAlarmRate = (c: Counts) => c.fp / Math.max(1, c.fp + c.tn);
export const missedRate = (c: Counts) => c.fn / Math.max(1, c.fn + c.tp);

const emptyCounts = (): Counts => ({ tp: 0, fp: 0, fn: 0, tn: 0, afterFault: 0, afterFaultFlagged: 0 });

export function scoreSet(input: {
  set: SetResult["set"];
  seeds: SetResult["seeds"];
  scenarios: Scenarios;
  scored: Map<string, ScoredReading[]>;
  calibration: number;
  deviceOf: (recording: PlantRecording) => string;
}): SetResult {
  const { scenarios, calibration } = input;
  let unscored = 0;
  const flagsOf = (recording: PlantRecording): boolean[] => {
    const rows = input.scored.get(input.deviceOf(recording)) ?? [];
    const byTs = new Map(rows.map((row) => [row.tsMs, row]));
    return recording.readings.map((reading, i) => {
      const row = byTs.get(reading.ts);
      if (i >= calibration && (row === undefined || (row.anomaly === null && row.flags === undefined))) unscored++;
      return row?.anomaly === true;
    });
  };
  const byFault: Record<string, Counts> = {};
  const total = emptyCounts();
  const delays: number[] = [];
  let neverFlagged = 0;
  for (const recording of scenarios.faults) {
    const flags = flagsOf(recording);
    const counts = (byFault[recording.fault ?? "none"] ??= emptyCounts());
    let firstFlag: number | null = null;
    for (let i = calibration; i < recording.readings.length; i++) {
      const { anomalous } = recording.readings[i];
      const flagged = flags[i];
      for (const c of [counts, total]) {
        if (flagged && anomalous) c.tp++;
        else if (flagged) c.fp++;
        else if (anomalous) c.fn++;
        else c.tn++;
        if (i >= recording.faultEnd) {
          c.afterFault++;
          if (flagged) c.afterFaultFlagged++;
        }
      }
      if (flagged && anomalous && firstFlag === null) firstFlag = i;
    }
    if (firstFlag === null) neverFlagged++;
    else delays.push((recording.readings[firstFlag].ts - recording.readings[recording.faultStart].ts) / 1000);
  }
  let normal: NormalStats | null = null;
  for (const recording of scenarios.normals) {
    const flags = flagsOf(recording).slice(calibration);
    const readings = recording.readings.slice(calibration);
    normal ??= { recordings: 0, hours: 0, readings: 0, flagged: 0, episodes: 0 };
    normal.recordings++;
    normal.hours += (readings.at(-1)!.ts - readings[0].ts + 1000) / 3_600_000;
    normal.readings += flags.length;
    normal.flagged += flags.filter(Boolean).length;
    normal.episodes += flags.filter((flag, i) => flag && (i === 0 || !flags[i - 1])).length;
  }
  delays.sort((a, b) => a - b);
  const quantile = (p: number) =>
    delays.length ? delays[Math.min(delays.length - 1, Math.floor(p * delays.length))] : null;
  return {
    set: input.set,
    seeds: input.seeds,
    recordings: scenarios.faults.length + scenarios.normals.length,
    byFault,
    total,
    normal,
    delay: { faults: scenarios.faults.length, median: quantile(0.5), p90: quantile(0.9), neverFlagged },
    unscored,
  };
}

const percent = (value: number) => `${(value * 100).toFixed(1)}%`;
const mark = (ok: boolean) => (ok ? "ok" : "MISSED");

export function formatResult(result: SetResult, seconds: number): string {
  const { total, normal, delay } = result;
  const lines = [
    `\n### ${result.set} simulator, ${result.seeds === "heldout" ? "held-out" : "tuning"} seeds: ` +
    `${delay.faults} fault recordings${normal ? `, ${normal.recordings} normal (${normal.hours.toFixed(1)} h)` : ""}` +
    ` (${seconds.toFixed(0)} s)`,
    `  fault recordings, after calibration: F1 ${f1(total).toFixed(3)} (target >= ${TARGETS.f1}, ${
      mark(f1(total) >= TARGETS.f1)
    }), false alarms ${percent(falseAlarmRate(total))} (target <= ${percent(TARGETS.falseAlarms)}, ${
      mark(falseAlarmRate(total) <= TARGETS.falseAlarms)
    }), missed ${percent(missedRate(total))}`,
    `    after the fault ended: ${
      percent(total.afterFaultFlagged / Math.max(1, total.afterFault))
    } of normal readings flagged`,
  ];
  for (const [fault, counts] of Object.entries(result.byFault)) {
    lines.push(
      `    ${fault.padEnd(18)} F1 ${f1(counts).toFixed(3)}  false alarms ${
        percent(falseAlarmRate(counts)).padStart(6)
      }` +
        `  missed ${percent(missedRate(counts)).padStart(6)}`,
    );
  }
  lines.push(
    `  detection delay: median ${delay.median ?? "-"} s, p90 ${
      delay.p90 ?? "-"
    } s; never flagged: ${delay.neverFlagged} of ${delay.faults}`,
  );
  if (normal) {
    const share = normal.flagged / Math.max(1, normal.readings);
    const perHour = normal.episodes / Math.max(1e-9, normal.hours);
    lines.push(
      `  long normal running, after calibration: ${percent(share)} of readings flagged (target <= ${
        percent(TARGETS.normalFlagged)
      }, ${mark(share <= TARGETS.normalFlagged)}), ${
        perHour.toFixed(1)
      } episodes per hour (target <= ${TARGETS.episodesPerHour}, ${mark(perHour <= TARGETS.episodesPerHour)})`,
    );
  }
  if (result.unscored > 0) lines.push(`  WARNING: ${result.unscored} readings after calibration were never scored`);
  return lines.join("\n");
}
