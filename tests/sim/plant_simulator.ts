/**
 * A pump rig that behaves like the real ones issue 10 cites (PLANT_BEHAVIOUR.md, measured on real
 * rigs at 1 Hz; the figures are repeated in plant_process.ts and plant_faults.ts): drifting, smooth
 * temperatures with a warm-up, fast channels that wander, two quantised channels, weak correlations,
 * normal flow dips, faults whose onsets lag, and a plant that settles at a new operating point after
 * a fault. Deterministic for a seed.
 *
 * Recordings: 15-20 minutes with exactly one fault (the first 400 readings always normal), or
 * hours of normal running from a cold start. `plantScenarios` gives the tuning set and the
 * held-out set, whose seeds differ.
 */
import { FAULT_KINDS, type SimulatedReading, simulateRecording } from "./pump_simulator.ts";
import { faultDuration, type FaultPlan, planFault, PLANT_FAULT_KINDS, type PlantFaultKind } from "./plant_faults.ts";
import { approach, random, roundTo } from "./plant_noise.ts";
import { plantProcess } from "./plant_process.ts";

export { PLANT_FAULT_KINDS };
export type { PlantFaultKind };

export const PLANT_CHANNELS: readonly string[] = [
  "vibration_x",
  "vibration_y",
  "current",
  "voltage",
  "pressure",
  "flow",
  "motor_temperature",
  "fluid_temperature",
];

/** Resolution each channel is reported at: flow in whole l/min; pressure is already on its levels. */
const RESOLUTION: Record<string, number> = {
  vibration_x: 0.001,
  vibration_y: 0.001,
  current: 0.01,
  voltage: 0.1,
  pressure: 0.01,
  flow: 1,
  motor_temperature: 0.01,
  fluid_temperature: 0.01,
};

const CALIBRATION_READINGS = 400;
const DEFAULT_START = Date.parse("2026-11-22T08:00:00Z");

export type PlantReading = SimulatedReading;

export interface PlantRecording {
  name: string;
  /** The fault kind, or null for a normal recording. */
  fault: string | null;
  /** Index of the first reading of the fault, and one past its last (0 and 0 without a fault). */
  faultStart: number;
  faultEnd: number;
  readings: PlantReading[];
}

export interface FaultRecordingOptions {
  seed: number;
  fault: string;
  /** Length in minutes; 15-20 (drawn from the seed) by default. */
  minutes?: number;
  startTs?: number;
  hz?: number;
}

export function simulateFaultRecording(options: FaultRecordingOptions): PlantRecording {
  if (!(PLANT_FAULT_KINDS as readonly string[]).includes(options.fault)) {
    throw new RangeError(`Unknown fault kind: ${options.fault} (one of ${PLANT_FAULT_KINDS.join(", ")})`);
  }
  const kind = options.fault as PlantFaultKind;
  const rand = random(options.seed);
  const hz = options.hz ?? 1;
  const seconds = Math.round((options.minutes ?? rand.uniform(15, 20)) * 60);
  const earliest = Math.max(CALIBRATION_READINGS / hz, 400) + 60;
  // At least two minutes after the fault show where the plant settles.
  const length = Math.min(faultDuration(rand, kind), seconds - earliest - 120);
  if (length < 60) throw new RangeError(`A recording of ${seconds} s is too short for a fault`);
  const start = Math.round(rand.uniform(earliest, seconds - length - 120));
  const end = start + length;
  const plant = plantProcess(rand, {
    dt: 1 / hz,
    seconds,
    warmupPhase: rand.uniform(0, 1.8),
    quiet: { start: start - 60, end: end + 60 },
    transientsFrom: earliest,
  });
  const fault = planFault(rand, kind, { start, end }, plant.sigma);
  const settle = settlesElsewhere(rand, plant.sigma.fluid_temperature, end);
  return {
    name: `${kind}-${options.seed}`,
    fault: kind,
    faultStart: Math.round(start * hz),
    faultEnd: Math.round(end * hz),
    readings: sample(plant, { hz, seconds, startTs: options.startTs, fault, settle }),
  };
}

export interface NormalRecordingOptions {
  seed: number;
  hours: number;
  startTs?: number;
  hz?: number;
}

/** Hours of normal running from a cold start: the warm-up, the drifts, dips and transients. */
export function simulateNormalRecording(options: NormalRecordingOptions): PlantRecording {
  const rand = random(options.seed);
  const hz = options.hz ?? 1;
  const seconds = Math.round(options.hours * 3600);
  const plant = plantProcess(rand, { dt: 1 / hz, seconds, warmupPhase: 0, transientsFrom: CALIBRATION_READINGS / hz });
  return {
    name: `normal-${options.seed}`,
    fault: null,
    faultStart: 0,
    faultEnd: 0,
    readings: sample(plant, { hz, seconds, startTs: options.startTs }),
  };
}

/**
 * After a fault the plant settles at a new operating point: vibration 1-7% off, flow 0.5-2.5%,
 * fluid temperature ~3.5 σ (p90 7), reached about 20 s after the fault ends.
 */
function settlesElsewhere(rand: ReturnType<typeof random>, fluidSigma: number, end: number) {
  const sign = () => (rand.chance(0.5) ? 1 : -1);
  const vibrationX = sign() * rand.uniform(0.01, 0.07);
  const vibrationY = vibrationX * rand.uniform(0.3, 1.1);
  const flow = sign() * rand.uniform(0.005, 0.025);
  const fluid = sign() * rand.logNormal(3.5, 7) * fluidSigma * 0.8;
  return (t: number, values: Record<string, number>) => {
    const level = approach(t, end, 10);
    if (level === 0) return;
    values.vibration_x *= 1 + vibrationX * level;
    values.vibration_y *= 1 + vibrationY * level;
    values.flow *= 1 + flow * level;
    values.fluid_temperature += fluid * level;
  };
}

function sample(
  plant: ReturnType<typeof plantProcess>,
  options: {
    hz: number;
    seconds: number;
    startTs?: number;
    fault?: FaultPlan;
    settle?: (t: number, values: Record<string, number>) => void;
  },
): PlantReading[] {
  const startTs = options.startTs ?? DEFAULT_START;
  const count = Math.round(options.seconds * options.hz);
  const readings: PlantReading[] = [];
  for (let i = 0; i < count; i++) {
    const t = i / options.hz;
    const values = plant.step(t);
    options.settle?.(t, values);
    options.fault?.apply(t, values);
    const rounded: Record<string, number> = {};
    for (const channel of PLANT_CHANNELS) rounded[channel] = roundTo(values[channel], RESOLUTION[channel]);
    options.fault?.applyRounded(t, rounded);
    const anomalous = options.fault !== undefined && t >= options.fault.start && t < options.fault.end;
    readings.push({ ts: startTs + Math.round(t * 1000), values: rounded, anomalous });
  }
  return readings;
}

/** Seeds the detector's defaults may be tuned on, and different seeds for the reported figures. */
export const TUNING_SEEDS: readonly number[] = [101, 102, 103, 104, 105, 106, 107, 108];
export const HELD_OUT_SEEDS: readonly number[] = [7001, 7002, 7003, 7004, 7005, 7006, 7007, 7008];
/**
 * The held-out set continues past its 8 reported seeds (7009, 7010, ...), never tuned on either,
 * for a wider estimate with less luck of the draw in it: `deno task eval --set plant --per-kind 32`.
 */
export const MAX_HELD_OUT_PER_KIND = 64;

export interface ScenarioOptions {
  /**
   * Fault recordings per kind; 8 by default. The tuning set has 8 seeds; the held-out set takes up
   * to MAX_HELD_OUT_PER_KIND, its first 8 being HELD_OUT_SEEDS.
   */
  perKind?: number;
  /** Long normal recordings (2.6-4 h each); 3 by default. */
  normals?: number;
  /** Length of each normal recording in hours, overriding the 2.6-4 h spread (a quick run). */
  normalHours?: number;
}

export interface Scenarios {
  faults: PlantRecording[];
  normals: PlantRecording[];
}

/** The plant simulator's recordings of one seed set. */
export function plantScenarios(set: "tuning" | "heldout", options: ScenarioOptions = {}): Scenarios {
  const wanted = options.perKind ?? HELD_OUT_SEEDS.length;
  const seeds = set === "tuning"
    ? TUNING_SEEDS
    : Array.from({ length: Math.max(HELD_OUT_SEEDS.length, Math.min(MAX_HELD_OUT_PER_KIND, wanted)) }, (_, i) =>
      HELD_OUT_SEEDS[0] + i);
  const perKind = Math.min(seeds.length, wanted);
  const faults = PLANT_FAULT_KINDS.flatMap((fault, k) =>
    seeds.slice(0, perKind).map((seed) => simulateFaultRecording({ seed: seed * 100 + k, fault }))
  );
  const normalHours = [2.6, 3.3, 4];
  const normals = normalHours.slice(0, options.normals ?? 3).map((hours, j) =>
    simulateNormalRecording({ seed: seeds[j] * 100 + 99, hours: options.normalHours ?? hours })
  );
  return { faults, normals };
}

/** Today's pump simulator scenarios (the "legacy" set), in the plant recordings' shape. */
export function legacyScenarios(set: "tuning" | "heldout", options: { perKind?: number } = {}): Scenarios {
  const firstSeed = set === "tuning" ? 1_000 : 100_000;
  const faults = FAULT_KINDS.flatMap((fault, k) =>
    Array.from({ length: options.perKind ?? 10 }, (_, i) => {
      const recording = simulateRecording({ seed: firstSeed + k * 1000 + i, fault });
      return { name: `${fault}-${i}`, ...recording };
    })
  );
  return { faults, normals: [] };
}
