/**
 * The input a model is load-tested on before it is activated: several windows, not only zeros.
 * With sample rows (real readings of the scope, one value per feature, oldest first) the windows
 * are cut from them, as scoring would; without any, they are synthetic rows of different scales
 * and signs. A model must give finite outputs of the right shape for all of them.
 */
export const LOAD_TEST_ROWS = 8;

export function loadTestWindows(
  samples: readonly (readonly number[])[],
  features: number,
  window: number,
): number[][][] {
  if (samples.length > 0) {
    const count = Math.min(LOAD_TEST_ROWS, samples.length);
    return Array.from({ length: count }, (_, k) => {
      const end = samples.length - 1 - Math.floor(k * samples.length / count);
      return Array.from({ length: window }, (_, r) => [...samples[Math.max(0, end - window + 1 + r)]]);
    });
  }
  let seed = 0x2545f491;
  const random = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const patterns: ((feature: number, step: number) => number)[] = [
    () => 0,
    () => 1,
    (feature, step) => (feature + 1) / features + step / 100,
    () => random(),
    () => 10 * random(),
    () => 100 * random(),
    () => -random(),
    () => 1_000 * random(),
  ];
  return patterns.map((value) =>
    Array.from({ length: window }, (_, step) => Array.from({ length: features }, (_, feature) => value(feature, step)))
  );
}
