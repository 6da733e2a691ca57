/**
 * The plant simulator measured against PLANT_BEHAVIOUR.md's figures for real pump rigs. Medians
 * over several seeds, with tolerances that survive a change of seeds but fail when a behaviour is
 * taken out. "cal-σ" is a channel's standard deviation over the first 400 readings.
 */
import assert from "node:assert/strict";
import {
  PLANT_CHANNELS,
  PLANT_FAULT_KINDS,
  type PlantRecording,
  plantScenarios,
  simulateFaultRecording,
  simulateNormalRecording,
} from "./sim/plant_simulator.ts";

const mean = (a: readonly number[]) => a.reduce((s, x) => s + x, 0) / a.length;
const std = (a: readonly number[]) => {
  const m = mean(a);
  return Math.sqrt(a.reduce((s, x) => s + (x - m) ** 2, 0) / (a.length - 1));
};
const corr = (a: readonly number[], b: readonly number[]) => {
  const ma = mean(a), mb = mean(b);
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += (a[i] - ma) * (b[i] - mb);
    aa += (a[i] - ma) ** 2;
    bb += (b[i] - mb) ** 2;
  }
  return ab / Math.sqrt(aa * bb);
};
const lag1 = (a: readonly number[]) => corr(a.slice(1), a.slice(0, -1));
const diff = (a: readonly number[]) => a.slice(1).map((x, i) => x - a[i]);
const quantile = (a: readonly number[], p: number) => [...a].sort((x, y) => x - y)[Math.floor(p * (a.length - 1))];
const median = (a: readonly number[]) => quantile(a, 0.5);
/** Std of 15-reading means relative to what white noise of the same std would give. */
const wander = (a: readonly number[]) => {
  const means: number[] = [];
  for (let i = 0; i + 15 <= a.length; i += 15) means.push(mean(a.slice(i, i + 15)));
  return std(means) / (std(a) / Math.sqrt(15));
};
/** Least-squares slope, in cal-σ per 10 minutes at 1 Hz. */
const trend = (a: readonly number[]) => {
  const mt = (a.length - 1) / 2, ma = mean(a);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (i - mt) * (a[i] - ma);
    den += (i - mt) ** 2;
  }
  return (num / den) * 600 / std(a);
};
/** Centred moving mean over 2 * half + 1 readings. */
const smooth = (a: readonly number[], half: number) =>
  a.map((_, i) => mean(a.slice(Math.max(0, i - half), i + half + 1)));
const column = (r: PlantRecording, channel: string, from = 0, to = r.readings.length) =>
  r.readings.slice(from, to).map((reading) => reading.values[channel]);
const calibration = (r: PlantRecording, channel: string) => column(r, channel, 0, 400);

const SEEDS = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22];
const recordings = SEEDS.map((seed, i) => simulateFaultRecording({ seed, fault: PLANT_FAULT_KINDS[i % 8] }));
const longNormal = simulateNormalRecording({ seed: 5, hours: 2.6 });

Deno.test("temperatures are smooth and trend inside calibration as on a real plant", () => {
  for (const channel of ["motor_temperature", "fluid_temperature"]) {
    const cal = recordings.map((r) => calibration(r, channel));
    const lags = median(cal.map(lag1));
    assert.ok(lags > 0.88 && lags < 0.975, `${channel} lag-1 ${lags} (real 0.92-0.94)`);
    const ratio = median(cal.map((c) => std(diff(c)) / std(c)));
    assert.ok(ratio > 0.22 && ratio < 0.48, `${channel} std(1-s change)/std(level) ${ratio} (real ≈ 0.35)`);
  }
  const trends = recordings.flatMap((r) =>
    ["motor_temperature", "fluid_temperature"].map((c) => Math.abs(trend(calibration(r, c))))
  );
  const [p10, p50, p90] = [0.1, 0.5, 0.9].map((p) => quantile(trends, p));
  assert.ok(p50 > 1.2 && p50 < 4, `median trend ${p50} cal-σ per 10 min (real 2.6)`);
  assert.ok(p10 < 1.2 && p90 > 3 && p90 < 5.5, `trend spread [${p10}, ${p90}] (real [0.4, 4.5])`);
});

Deno.test("the motor temperature cycles every ~85 s on about 40% of rigs", () => {
  const cycling =
    Array.from({ length: 30 }, (_, seed) => simulateFaultRecording({ seed, fault: "step" })).filter((r) => {
      const motor = column(r, "motor_temperature", 0, 600);
      const local = smooth(motor, 30);
      const detrended = motor.map((x, i) => x - local[i]);
      return corr(detrended.slice(85), detrended.slice(0, -85)) > 0.4;
    }).length;
  assert.ok(cycling >= 6 && cycling <= 20, `${cycling} of 30 recordings cycle (real ~40%)`);
});

Deno.test("fast channels have the measured noise, wander and quantisation", () => {
  const cv = (channel: string) =>
    median(recordings.map((r) => std(calibration(r, channel)) / mean(calibration(r, channel))));
  const med = (channel: string, f: (a: number[]) => number) =>
    median(recordings.map((r) => f(calibration(r, channel))));
  for (const axis of ["vibration_x", "vibration_y"]) {
    assert.ok(cv(axis) > 0.013 && cv(axis) < 0.022, `${axis} CV ${cv(axis)} (real 1.4-2.1%)`);
    assert.ok(
      med(axis, wander) > 1.45 && med(axis, wander) < 2.05,
      `${axis} wander ${med(axis, wander)} (real 1.6-1.8)`,
    );
    assert.ok(med(axis, lag1) < 0.35, `${axis} is near-white`);
  }
  assert.ok(cv("current") > 0.22 && cv("current") < 0.32, `current CV ${cv("current")} (real 27%)`);
  assert.ok(
    med("current", lag1) > 0.22 && med("current", lag1) < 0.45,
    `current lag-1 ${med("current", lag1)} (real 0.34)`,
  );
  assert.ok(med("current", wander) > 1.8 && med("current", wander) < 2.7, `current wander (real 2.2)`);
  assert.ok(cv("voltage") > 0.042 && cv("voltage") < 0.052, `voltage CV ${cv("voltage")} (real 4.7%)`);
  assert.ok(Math.abs(med("voltage", lag1)) < 0.08, "voltage is white");
  assert.ok(cv("flow") > 0.011 && cv("flow") < 0.017, `flow CV ${cv("flow")} (real 1.3%)`);
  assert.ok(med("flow", lag1) < 0.3, "flow is near-white");

  const levels = [...new Set(longNormal.readings.map((r) => r.values.pressure))].sort((a, b) => a - b);
  assert.equal(levels.length, 5, `pressure levels ${levels}`);
  for (const step of diff(levels)) assert.ok(Math.abs(step - 0.33) < 0.006, `pressure levels ${levels}`);
  assert.ok(Math.abs(lag1(column(longNormal, "pressure"))) < 0.05, "pressure is white");
  const flows = column(longNormal, "flow");
  assert.ok(flows.every(Number.isInteger), "flow is reported in whole l/min");
  assert.ok(new Set(flows).size >= 6, "flow takes several 1 l/min steps");
});

Deno.test("only the vibration axes and current-voltage correlate", () => {
  const coupled = (a: string, b: string) => median(recordings.map((r) => corr(calibration(r, a), calibration(r, b))));
  const vibration = coupled("vibration_x", "vibration_y");
  assert.ok(vibration > 0.4 && vibration < 0.6, `vibration x/y r ${vibration} (real 0.5)`);
  const electric = coupled("current", "voltage");
  assert.ok(electric > 0.25 && electric < 0.45, `current/voltage r ${electric} (real 0.35)`);
  // Over hours the levels of every drifting channel correlate through the drifts alone (warm-up,
  // vibration and flow drift), so the uncoupled pairs are judged on 1-s changes, which hold the noise.
  const changes = Object.fromEntries(PLANT_CHANNELS.map((c) => [c, diff(column(longNormal, c))]));
  for (const [i, a] of PLANT_CHANNELS.entries()) {
    for (const b of PLANT_CHANNELS.slice(i + 1)) {
      const r = corr(changes[a], changes[b]);
      const pair = `${a}/${b}`;
      if (pair === "vibration_x/vibration_y" || pair === "current/voltage") assert.ok(r > 0.3, `${pair} r ${r}`);
      else assert.ok(Math.abs(r) < 0.1, `${pair} r of 1-s changes ${r} (real |r| < 0.1)`);
    }
  }
});

Deno.test("hours of normal running warm the fluid, drift the fast channels and dip the flow", () => {
  const { readings } = longNormal;
  assert.ok(readings.every((r) => !r.anomalous) && longNormal.fault === null);
  const fluidCal = calibration(longNormal, "fluid_temperature");
  const lastTen = column(longNormal, "fluid_temperature", readings.length - 600);
  const warmed = mean(lastTen) - mean(fluidCal);
  assert.ok(warmed > 1.8 && warmed < 3, `fluid warmed ${warmed} °C (real ~2.4)`);
  assert.ok(warmed / std(fluidCal) > 25 && warmed / std(fluidCal) < 75, `${warmed / std(fluidCal)} cal-σ (real ~43)`);
  const plateau = mean(column(longNormal, "fluid_temperature", 5_800, 6_400));
  assert.ok(Math.abs(mean(lastTen) - plateau) < 0.3, "the fluid is flat after the warm-up");
  const drift = (c: string) =>
    (mean(column(longNormal, c, readings.length - 600)) / mean(calibration(longNormal, c)) - 1) * 100;
  const [up, down] = [drift("vibration_x"), drift("vibration_y")].sort((a, b) => b - a);
  assert.ok(
    up > 3 && up < 8.5 && down < -0.5 && down > -5.5,
    `vibration drifts ${up}% and ${down}% (real +4..7.5, -1..-4.6)`,
  );
  assert.ok(drift("flow") > 0.3 && drift("flow") < 4.5, `flow drift ${drift("flow")}% (real +1..4)`);
  // A dip: a minute's mean flow well below the 20 minutes around it.
  const flow = column(longNormal, "flow");
  const minute = smooth(flow, 30);
  const around = smooth(flow, 600);
  const deepest = Math.min(...minute.map((m, i) => m / around[i] - 1));
  assert.ok(deepest < -0.012, `deepest 1-minute flow dip ${deepest * 100}%`);
});

Deno.test("after a fault the plant settles at a new operating point", () => {
  const offset = (r: PlantRecording, c: string) => mean(column(r, c, r.faultEnd + 30)) / mean(calibration(r, c)) - 1;
  const vibration = median(recordings.map((r) => Math.abs(offset(r, "vibration_x")) * 100));
  assert.ok(vibration > 1 && vibration < 7, `vibration ends ${vibration}% off (real 1-7%)`);
  const flow = median(recordings.filter((r) => r.fault !== "cavitation").map((r) => Math.abs(offset(r, "flow")) * 100));
  assert.ok(flow > 0.4 && flow < 3, `flow ends ${flow}% off (real 0.5-2.5%)`);
  const fluid = median(recordings.map((r) => {
    const cal = calibration(r, "fluid_temperature");
    return Math.abs(mean(column(r, "fluid_temperature", r.faultEnd + 30)) - mean(cal)) / std(cal);
  }));
  assert.ok(fluid > 1.5 && fluid < 9, `fluid temperature ends ${fluid} cal-σ off (real ~3.5)`);
});

Deno.test("a partly closed valve lowers the flow a few percent, with an onset that lags", () => {
  const valves = Array.from({ length: 16 }, (_, i) => simulateFaultRecording({ seed: 300 + i, fault: "valve" }));
  const shifts: number[] = [], halves: number[] = [], recoveries: number[] = [], others: number[] = [];
  for (const r of valves) {
    const base = mean(calibration(r, "flow"));
    const fault = smooth(column(r, "flow", r.faultStart, r.faultEnd), 7);
    const deepest = Math.min(...fault.slice(0, fault.length - 60)) - base;
    shifts.push((deepest / base) * 100);
    halves.push(fault.findIndex((x) => x - base <= deepest / 2));
    recoveries.push(fault.length - fault.findLastIndex((x) => x - base <= deepest / 2));
    const before = column(r, "vibration_x", r.faultStart - 60, r.faultStart);
    others.push(Math.abs(mean(column(r, "vibration_x", r.faultStart + 60, r.faultEnd - 40)) / mean(before) - 1));
  }
  assert.ok(median(shifts) < -3 && median(shifts) > -12, `median flow shift ${median(shifts)}% (real -6%)`);
  assert.ok(Math.min(...shifts) > -24, "no valve closes flow by more than ~22%");
  assert.ok(median(halves) > 20 && median(halves) < 110, `half the shift after ${median(halves)} s (real ~55)`);
  assert.ok(quantile(halves, 0.1) < 30, `p10 of the half-shift delay ${quantile(halves, 0.1)} s (real 9)`);
  assert.ok(
    median(recoveries) > 15 && median(recoveries) < 60,
    `recovered ${median(recoveries)} s before the end (real ~35)`,
  );
  assert.ok(median(others) < 0.01, "the other channels move less than 1%");
});

Deno.test("process faults have the measured signatures", () => {
  const during = (r: PlantRecording, c: string) => column(r, c, r.faultStart, r.faultEnd);
  for (let seed = 0; seed < 8; seed++) {
    const imbalance = simulateFaultRecording({ seed, fault: "imbalance" });
    const peak = quantile(during(imbalance, "vibration_x"), 0.97) / mean(calibration(imbalance, "vibration_x"));
    assert.ok(peak > 2.2 && peak < 2.7, `imbalance peaks at ${peak}x (real +135-155%)`);
    const cavitation = simulateFaultRecording({ seed, fault: "cavitation" });
    const low = median(during(cavitation, "flow")) / mean(calibration(cavitation, "flow"));
    assert.ok(low > 0.33 && low < 0.47, `cavitation flow at ${low} (real -60%)`);
    const hot = simulateFaultRecording({ seed, fault: "hot_water" });
    const heat = Math.max(...during(hot, "fluid_temperature")) / mean(calibration(hot, "fluid_temperature")) - 1;
    assert.ok(heat > 0.06 && heat < 0.17, `hot water heats the fluid by ${heat} (real 8-14%)`);
  }
});

Deno.test("labels cover the whole fault interval, after an always-normal calibration window", () => {
  for (const r of [...recordings, ...plantScenarios("heldout", { perKind: 1, normals: 0 }).faults]) {
    assert.ok(r.faultStart >= 400 && r.faultEnd > r.faultStart && r.faultEnd < r.readings.length);
    assert.ok(r.readings.length >= 900 && r.readings.length <= 1200, "15-20 minutes at 1 Hz");
    r.readings.forEach((reading, i) => assert.equal(reading.anomalous, i >= r.faultStart && i < r.faultEnd));
  }
});

Deno.test("a seed gives the same recording, and another seed a different one", () => {
  assert.deepEqual(
    simulateFaultRecording({ seed: 42, fault: "valve" }),
    simulateFaultRecording({ seed: 42, fault: "valve" }),
  );
  assert.notDeepEqual(
    simulateFaultRecording({ seed: 42, fault: "valve" }),
    simulateFaultRecording({ seed: 43, fault: "valve" }),
  );
  assert.deepEqual(simulateNormalRecording({ seed: 9, hours: 0.2 }), simulateNormalRecording({ seed: 9, hours: 0.2 }));
  const tuning = plantScenarios("tuning", { perKind: 1, normals: 1, normalHours: 0.1 });
  const heldOut = plantScenarios("heldout", { perKind: 1, normals: 1, normalHours: 0.1 });
  assert.notDeepEqual(tuning.faults[0].readings, heldOut.faults[0].readings, "held-out seeds differ from tuning seeds");
});

Deno.test("a wider held-out set starts with the reported one and goes on with new seeds", () => {
  const reported = plantScenarios("heldout", { normals: 0 }).faults;
  const wider = plantScenarios("heldout", { perKind: 9, normals: 0 }).faults;
  assert.equal(reported.length, 8 * 8);
  assert.equal(wider.length, 9 * 8);
  // Per kind: the 8 reported recordings, then a ninth unlike any of them.
  for (let k = 0; k < 8; k++) {
    const kind = wider.slice(k * 9, k * 9 + 9);
    assert.deepEqual(kind.slice(0, 8), reported.slice(k * 8, k * 8 + 8));
    for (const earlier of kind.slice(0, 8)) assert.notDeepEqual(kind[8].readings, earlier.readings);
  }
});

Deno.test("at 10 Hz a recording keeps its length in time and its calibration readings normal", () => {
  const r = simulateFaultRecording({ seed: 7, fault: "cavitation", minutes: 16, hz: 10 });
  assert.equal(r.readings.length, 9_600);
  assert.equal(r.readings[1].ts - r.readings[0].ts, 100);
  assert.ok(r.faultStart >= 4_600, "the fault starts after 460 s, as at 1 Hz");
  assert.ok(r.readings.slice(0, 400).every((reading) => !reading.anomalous));
});
