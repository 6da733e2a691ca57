/**
 * A pump/motor simulator: 8 correlated channels at 1 Hz driven by a shared load, with one
 * labelled fault episode. Deterministic for a seed. Used by the detection tests, the evaluation
 * harness and the benchmarks.
 */
export const CHANNELS = [
  "temperature",
  "pressure",
  "flow",
  "rpm",
  "current",
  "vibration_x",
  "vibration_y",
  "power",
] as const;

export const FAULT_KINDS = ["drift", "step", "spikes", "stuck", "vibration", "correlation_break"] as const;
export type FaultKind = typeof FAULT_KINDS[number];

export interface SimulatedReading {
  ts: number;
  values: Record<string, number>;
  anomalous: boolean;
}

export interface Recording {
  fault: FaultKind;
  channel: string;
  faultStart: number;
  faultEnd: number;
  readings: SimulatedReading[];
}

export function rng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4_294_967_296;
  };
}

function gaussian(random: () => number): number {
  const u = Math.max(random(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** Noise scale per channel, so that faults can be sized in standard deviations. */
const NOISE: Record<string, number> = {
  temperature: 0.15,
  pressure: 0.03,
  flow: 0.25,
  rpm: 4,
  current: 0.08,
  vibration_x: 0.02,
  vibration_y: 0.02,
  power: 0.05,
};

export interface RecordingOptions {
  seed: number;
  fault: FaultKind;
  /** Total length in seconds (12-22 minutes in the evaluation). */
  seconds?: number;
  calibration?: number;
  startTs?: number;
}

export function simulateRecording(options: RecordingOptions): Recording {
  const random = rng(options.seed);
  const seconds = options.seconds ?? 720 + Math.floor(random() * 600);
  const calibration = options.calibration ?? 400;
  const startTs = options.startTs ?? Date.parse("2026-11-22T08:00:00Z");
  const faultLength = 90 + Math.floor(random() * 150);
  const faultStart = calibration + 60 + Math.floor(random() * Math.max(1, seconds - calibration - 60 - faultLength));
  const faultEnd = Math.min(seconds, faultStart + faultLength);
  const channelChoices = options.fault === "vibration"
    ? ["vibration_x"]
    : options.fault === "correlation_break"
    ? ["flow"]
    : ["temperature", "pressure", "flow", "current", "power"];
  const channel = channelChoices[Math.floor(random() * channelChoices.length)];
  const phase = random() * 2 * Math.PI;
  let ar = 0;
  let temperature = 60;
  let stuckValue: number | null = null;
  let brokenFlow = 0;
  const readings: SimulatedReading[] = [];
  for (let t = 0; t < seconds; t++) {
    ar = 0.97 * ar + 0.25 * gaussian(random);
    const load = Math.sin((2 * Math.PI * t) / 600 + phase) * 0.6 + ar * 0.5;
    const rpm = 1450 + 40 * load;
    const current = 10 + 1.5 * load;
    temperature += (58 + 2.5 * current / 10 - temperature) * 0.02;
    const values: Record<string, number> = {
      temperature: temperature,
      pressure: 4 + 0.5 * load,
      flow: 30 + 4 * load,
      rpm,
      current,
      vibration_x: 0.4 + 0.03 * load,
      vibration_y: 0.35 + 0.025 * load,
      power: 5.5 + 0.9 * load,
    };
    for (const name of CHANNELS) values[name] += NOISE[name] * gaussian(random);
    const anomalous = t >= faultStart && t < faultEnd;
    if (anomalous) {
      const progress = (t - faultStart) / Math.max(1, faultEnd - faultStart);
      const sigma = NOISE[channel];
      switch (options.fault) {
        case "drift":
          values[channel] += sigma * (3 + 12 * progress);
          break;
        case "step":
          values[channel] += sigma * 8;
          break;
        case "spikes":
          values[channel] += random() < 0.35 ? sigma * (10 + 10 * random()) * (random() < 0.5 ? -1 : 1) : 0;
          break;
        case "stuck":
          stuckValue ??= values[channel];
          values[channel] = stuckValue;
          break;
        case "vibration":
          values.vibration_x += NOISE.vibration_x * (3 + 12 * progress);
          values.vibration_y += NOISE.vibration_y * (2 + 8 * progress);
          break;
        case "correlation_break":
          brokenFlow = 0.9 * brokenFlow + 0.6 * gaussian(random);
          values.flow = 30 + 4 * brokenFlow * 0.5 - 4 * load * 0.8 + NOISE.flow * gaussian(random);
          break;
      }
    }
    readings.push({ ts: startTs + t * 1000, values: roundValues(values), anomalous });
  }
  return { fault: options.fault, channel, faultStart, faultEnd, readings };
}

function roundValues(values: Record<string, number>): Record<string, number> {
  const rounded: Record<string, number> = {};
  for (const [name, value] of Object.entries(values)) rounded[name] = Math.round(value * 10_000) / 10_000;
  return rounded;
}
