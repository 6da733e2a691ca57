/**
 * The faults of the plant simulator, sized as PLANT_BEHAVIOUR.md measured them on real pump rigs
 * (valve, imbalance, cavitation, hot water) plus the pump simulator's generic sensor faults (drift,
 * step, spikes, stuck) on the fast channels, sized in each channel's noise σ.
 */
import { approach, type Random } from "./plant_noise.ts";

export const PLANT_FAULT_KINDS = [
  "valve",
  "imbalance",
  "cavitation",
  "hot_water",
  "drift",
  "step",
  "spikes",
  "stuck",
] as const;
export type PlantFaultKind = typeof PLANT_FAULT_KINDS[number];

/** Seconds a fault of each kind lasts at least and at most. */
const DURATION: Record<PlantFaultKind, [number, number]> = {
  valve: [180, 420],
  imbalance: [120, 300],
  cavitation: [60, 240],
  hot_water: [150, 360],
  drift: [90, 240],
  step: [90, 240],
  spikes: [90, 240],
  stuck: [90, 240],
};

/** Channels the generic sensor faults land on: the ones whose noise a sensor fault can stand out of. */
const SENSOR_FAULT_CHANNELS = ["vibration_x", "vibration_y", "current", "voltage", "flow"] as const;

export interface FaultPlan {
  kind: PlantFaultKind;
  /** Seconds from the recording's start; the fault is labelled over [start, end). */
  start: number;
  end: number;
  /** The channel a sensor fault lands on (the main channel of a process fault). */
  channel: string;
  /** Changes the unrounded values of one reading at `t` seconds, before quantisation. */
  apply(t: number, values: Record<string, number>): void;
  /** Changes the rounded values (a stuck sensor repeats what it last reported). */
  applyRounded(t: number, values: Record<string, number>): void;
}

export function faultDuration(random: Random, kind: PlantFaultKind): number {
  const [low, high] = DURATION[kind];
  return Math.round(random.uniform(low, high));
}

/** Draws the parameters of one fault; `sigma` is each channel's noise σ in its own unit. */
export function planFault(
  random: Random,
  kind: PlantFaultKind,
  window: { start: number; end: number },
  sigma: Readonly<Record<string, number>>,
): FaultPlan {
  const { start, end } = window;
  const length = end - start;
  const inside = (t: number) => t >= start && t < end;
  const plan = (channel: string, apply: FaultPlan["apply"]): FaultPlan => ({
    kind,
    start,
    end,
    channel,
    apply,
    applyRounded: () => {},
  });
  switch (kind) {
    case "valve": {
      // Flow -1 to -22% (median -6%); half the shift ~55 s in (p10 9 s); back ~35 s before the end.
      const shift = -Math.min(0.22, Math.max(0.01, random.logNormal(0.06, 0.14)));
      const half = Math.min(0.45 * length, random.logNormal(60, 400));
      const recovered = end - Math.min(0.25 * length, random.uniform(25, 45));
      const other = random.uniform(-0.008, 0.008);
      return plan("flow", (t, v) => {
        if (t < start || t > end + 30) return;
        const shape = approach(t, start, half) * (1 - 1 / (1 + Math.exp(-(t - recovered) / 4)));
        v.flow *= 1 + shift * shape;
        v.current *= 1 + other * shape;
      });
    }
    case "imbalance": {
      // Vibration +135-155% on both axes, as a step, a ramp, an exponential rise or spikes.
      const gain = random.uniform(1.35, 1.55);
      const shape = random.pick(["step", "ramp", "exponential", "spikes"] as const);
      const tau = random.uniform(20, 60);
      return plan("vibration_x", (t, v) => {
        if (!inside(t)) return;
        const progress = (t - start) / length;
        const level = shape === "step"
          ? Math.min(1, (t - start) / 3)
          : shape === "ramp"
          ? progress
          : shape === "exponential"
          ? 1 - Math.exp(-(t - start) / tau)
          : random.chance(0.3)
          ? 1
          : 0;
        v.vibration_x *= 1 + gain * level;
        v.vibration_y *= 1 + gain * level * 0.9;
      });
    }
    case "cavitation": {
      const shift = -random.uniform(0.55, 0.65);
      return plan("flow", (t, v) => {
        if (!inside(t)) return;
        v.flow *= 1 + shift * Math.min(1, (t - start) / 5);
      });
    }
    case "hot_water": {
      // Fluid temperature +8-14%, rising and falling with the fluid's thermal lag.
      const gain = random.uniform(0.08, 0.14);
      const tau = random.uniform(15, 40);
      return plan("fluid_temperature", (t, v) => {
        if (t < start) return;
        const level = t < end
          ? 1 - Math.exp(-(t - start) / tau)
          : (1 - Math.exp(-length / tau)) * Math.exp(-(t - end) / 10);
        v.fluid_temperature *= 1 + gain * level;
      });
    }
    case "drift":
    case "step":
    case "spikes": {
      const channel = random.pick(SENSOR_FAULT_CHANNELS);
      const sign = random.chance(0.5) ? 1 : -1;
      const size = sigma[channel] * sign;
      const stepSize = random.uniform(5, 8);
      return plan(channel, (t, v) => {
        if (!inside(t)) return;
        const progress = (t - start) / length;
        if (kind === "drift") v[channel] += size * (3 + 12 * progress);
        else if (kind === "step") v[channel] += size * stepSize;
        else if (random.chance(0.35)) v[channel] += size * random.uniform(8, 15) * (random.chance(0.5) ? 1 : -1);
      });
    }
    case "stuck": {
      const channel = random.pick(SENSOR_FAULT_CHANNELS);
      let held: number | null = null;
      return {
        ...plan(channel, () => {}),
        applyRounded: (t, v) => {
          if (!inside(t)) return;
          held ??= v[channel];
          v[channel] = held;
        },
      };
    }
  }
}
