/**
 * Building blocks of the plant simulator: a seeded random source, AR(1) processes defined in
 * seconds (so that a 10 Hz recording has the same time constants as a 1 Hz one), and the shapes
 * that slow behaviours and faults are drawn with.
 */
import { rng } from "./pump_simulator.ts";

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Standard normal. */
  gaussian(): number;
  uniform(low: number, high: number): number;
  /** Log-normal with this median; `p90` sets the spread (p10 is median² / p90). */
  logNormal(median: number, p90: number): number;
  chance(probability: number): boolean;
  pick<T>(choices: readonly T[]): T;
}

export function random(seed: number): Random {
  const next = rng(seed * 2_654_435_761 + 12_345);
  const gaussian = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  return {
    next,
    gaussian,
    uniform: (low, high) => low + (high - low) * next(),
    logNormal: (median, p90) => median * Math.exp((Math.log(p90 / median) / 1.2816) * gaussian()),
    chance: (probability) => next() < probability,
    pick: (choices) => choices[Math.floor(next() * choices.length)],
  };
}

/**
 * A stationary AR(1) process of unit variance and time constant `tauSeconds`, stepped every
 * `dtSeconds`: its lag-1 autocorrelation at 1 Hz is exp(-1 / tau).
 */
export function ar1(random: Random, tauSeconds: number, dtSeconds: number): () => number {
  const rho = Math.exp(-dtSeconds / tauSeconds);
  const innovation = Math.sqrt(1 - rho * rho);
  let value = random.gaussian();
  return () => (value = rho * value + innovation * random.gaussian());
}

/** 0 before 0, 1 after 1, a smooth S between: the shape of a warm-up. */
export function smoothstep(x: number): number {
  const c = Math.min(1, Math.max(0, x));
  return c * c * (3 - 2 * c);
}

/** A raised-cosine bump: 0 outside [start, start + length], 1 at its middle. */
export function bump(t: number, start: number, length: number): number {
  if (t <= start || t >= start + length) return 0;
  return 0.5 - 0.5 * Math.cos((2 * Math.PI * (t - start)) / length);
}

/** 0 before `start`, rising towards 1 with half of the way done `halfSeconds` after it. */
export function approach(t: number, start: number, halfSeconds: number): number {
  return t < start ? 0 : 1 - Math.pow(0.5, (t - start) / Math.max(halfSeconds, 1e-3));
}

/** Start times of a Poisson process of `perHour` events between `from` and `to` seconds. */
export function poissonTimes(random: Random, perHour: number, from: number, to: number): number[] {
  const gap = () => -Math.log(1 - random.next()) * 3600 / perHour;
  const times: number[] = [];
  for (let t = from + gap(); t < to; t += gap()) times.push(t);
  return times;
}

export function roundTo(value: number, step: number): number {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return Number((Math.round(value / step) * step).toFixed(decimals));
}
