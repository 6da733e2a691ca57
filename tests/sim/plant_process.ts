/**
 * Normal running of one pump rig, channel by channel, with the magnitudes PLANT_BEHAVIOUR.md
 * measured on real rigs. Every time constant is in seconds, so the `hz` of a recording changes how
 * often the plant is sampled, not how it behaves.
 *
 * - temperatures: AR(1) with tau 12 s (lag-1 0.92 at 1 Hz), a slow wander, a warm-up of the fluid
 *   (S-shaped, ~2.4 °C over ~1.3 h, then flat) and of the motor, an ~85 s cycle on the motor in
 *   ~40% of rigs, and occasional 3-5 σ transients after calibration;
 * - vibration: near-white, CV 1.4-2.1%, with a slow part that makes 15-s means wander ~1.7x white;
 *   one axis drifts up 4-7.5% and the other down 1-4.6% per 2.6 h; the two axes correlate (r 0.5);
 * - current: CV 27%, a fast white part and a slow part (lag-1 ~0.34, 15-s means ~2.2x white);
 *   voltage: white, CV 4.7%, sharing part of current's white noise (r ~0.35);
 * - pressure: white over 5 levels 0.33 bar apart; flow: near-white CV 1.3%, whole l/min, dips of
 *   1-3 minutes, +1 to +4% per 2.6 h.
 */
import { ar1, bump, poissonTimes, type Random, smoothstep } from "./plant_noise.ts";

const DRIFT_HOURS = 2.6;

export interface PlantProcess {
  /** Each channel's noise σ at calibration, in its unit (sizes the sensor faults). */
  readonly sigma: Readonly<Record<string, number>>;
  /** Unrounded values at `t` seconds; call once per reading, in order. */
  step(t: number): Record<string, number>;
}

export interface PlantOptions {
  dt: number;
  seconds: number;
  /** Where the warm-up stands at the start: 0 is a cold plant, 1 or more a warm one. */
  warmupPhase: number;
  /** Seconds in which flow dips must not start (around a fault, whose label they would blur). */
  quiet?: { start: number; end: number };
  /** Transients come only after this many seconds (calibration). */
  transientsFrom: number;
}

export function plantProcess(random: Random, options: PlantOptions): PlantProcess {
  const { dt, seconds } = options;
  const vibration = { x: random.uniform(1.6, 2.4), y: random.uniform(1.3, 2.0), cv: random.uniform(0.014, 0.02) };
  const upAxis = random.chance(0.5) ? "x" : "y";
  const vibrationDrift = {
    x: upAxis === "x" ? random.uniform(0.04, 0.075) : -random.uniform(0.01, 0.046),
    y: upAxis === "y" ? random.uniform(0.04, 0.075) : -random.uniform(0.01, 0.046),
  };
  const current = random.uniform(3.5, 5);
  const voltage = random.uniform(225, 235);
  const pressure = Number(random.uniform(1.8, 2.4).toFixed(2));
  const flow = random.uniform(70, 90);
  const flowDrift = random.uniform(0.01, 0.04);
  const motor = { base: random.uniform(50, 60), sigma: random.uniform(0.1, 0.16), warmup: random.uniform(4, 7) };
  const fluid = { base: random.uniform(25, 35), sigma: random.uniform(0.04, 0.055), warmup: random.uniform(2.1, 2.7) };
  const warmupSeconds = random.uniform(1.1, 1.5) * 3600;
  // The motor warms on its own schedule (load history): its temperature does not track the fluid's.
  const motorPhase = options.warmupPhase === 0 ? 0 : random.uniform(0, 1.8);
  const cycle = random.chance(0.4) ? { period: random.uniform(80, 90), phase: random.uniform(0, 2 * Math.PI) } : null;

  const noise = {
    vibX: ar1(random, 45, dt),
    vibY: ar1(random, 45, dt),
    currentSlow: ar1(random, 25, dt),
    flowSlow: ar1(random, 45, dt),
    motor: ar1(random, 10, dt),
    fluid: ar1(random, 10, dt),
    motorWander: ar1(random, 500, dt),
    fluidWander: ar1(random, 500, dt),
  };
  const dips = poissonTimes(random, 2, 0, seconds)
    .filter((t) => !options.quiet || t + 180 < options.quiet.start || t > options.quiet.end)
    .map((start) => ({ start, length: random.uniform(60, 180), depth: random.uniform(0.015, 0.04) }));
  const transients = (["motor_temperature", "fluid_temperature"] as const).flatMap((channel) =>
    poissonTimes(random, 1.5, options.transientsFrom, seconds).map((start) => ({
      channel,
      start,
      length: random.uniform(30, 90),
      size: random.uniform(3.5, 5.5) * (random.chance(0.7) ? 1 : -1),
    }))
  );
  const sigma = {
    vibration_x: vibration.x * vibration.cv,
    vibration_y: vibration.y * vibration.cv,
    current: current * 0.27,
    voltage: voltage * 0.047,
    pressure: 0.33,
    flow: flow * 0.013,
    motor_temperature: motor.sigma,
    fluid_temperature: fluid.sigma,
  };

  return {
    sigma,
    step(t) {
      const drift = t / (DRIFT_HOURS * 3600);
      // Vibration: 78% white, 22% slow; the axes share half of each part (r ≈ 0.5).
      const white = random.gaussian();
      const whiteY = 0.5 * white + Math.sqrt(0.75) * random.gaussian();
      const slowX = noise.vibX();
      const slowY = 0.5 * slowX + Math.sqrt(0.75) * noise.vibY();
      const vib = (level: number, w: number, s: number, d: number) =>
        level * (1 + vibration.cv * (Math.sqrt(0.78) * w + Math.sqrt(0.22) * s) + d * drift);
      // Current: 40% slow, 60% white; voltage shares 0.45 of current's white part (r ≈ 0.35).
      const currentWhite = random.gaussian();
      const currentZ = Math.sqrt(0.4) * noise.currentSlow() + Math.sqrt(0.6) * currentWhite;
      const voltageZ = 0.45 * currentWhite + Math.sqrt(1 - 0.45 * 0.45) * random.gaussian();
      const level = Math.max(-2, Math.min(2, Math.round(0.9 * random.gaussian())));
      const dip = dips.reduce((sum, d) => sum + d.depth * bump(t, d.start, d.length), 0);
      const flowZ = Math.sqrt(0.9) * random.gaussian() + Math.sqrt(0.1) * noise.flowSlow();
      const warm = smoothstep(options.warmupPhase + t / warmupSeconds);
      const motorWarm = smoothstep(motorPhase + t / warmupSeconds);
      const values: Record<string, number> = {
        vibration_x: vib(vibration.x, white, slowX, vibrationDrift.x),
        vibration_y: vib(vibration.y, whiteY, slowY, vibrationDrift.y),
        current: Math.max(0, current * (1 + 0.28 * currentZ)),
        voltage: voltage * (1 + 0.047 * voltageZ),
        pressure: pressure + 0.33 * level,
        flow: flow * (1 + 0.013 * flowZ + flowDrift * drift - dip),
        motor_temperature: motor.base + motor.warmup * motorWarm +
          motor.sigma * (noise.motor() + 0.8 * noise.motorWander()) +
          (cycle ? 0.3 * Math.SQRT2 * Math.sin((2 * Math.PI * t) / cycle.period + cycle.phase) : 0),
        fluid_temperature: fluid.base + fluid.warmup * warm + fluid.sigma * (noise.fluid() + 0.8 * noise.fluidWander()),
      };
      for (const transient of transients) {
        values[transient.channel] += transient.size * sigma[transient.channel] *
          bump(t, transient.start, transient.length);
      }
      return values;
    },
  };
}
