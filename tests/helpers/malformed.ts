/**
 * Deterministic generator of malformed reading bodies: each mutates a valid body in one way
 * that the contract must refuse (wrong types, non-finite numbers, missing or unknown fields,
 * broken JSON, oversized names, bad times).
 */
export function malformedBodies(count: number, seed = 42): string[] {
  let state = seed;
  const random = () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const valid = () => ({ device: `dev-${Math.floor(random() * 5)}`, ts: 1_763_805_600_000, values: { a: 1.5, b: 2 } });
  const wrongValues: unknown[] = [
    "1",
    null,
    true,
    [],
    {},
    "NaN",
    "Infinity",
    { nested: 1 },
  ];
  const mutations: (() => string)[] = [
    () => JSON.stringify({ ...valid(), values: { a: pick(wrongValues) } }),
    () =>
      JSON.stringify({
        ...valid(),
        ts: pick(["", "2026-13-01T00:00:00Z", "tomorrow", 1.5, -1, null, 1_763_805_600, "2026-11-22"]),
      }),
    () => JSON.stringify({ ...valid(), device: pick(["", "x".repeat(129), 7, null, ["a"]]) }),
    () => JSON.stringify({ ...valid(), extra: "field" }),
    () => JSON.stringify({ readings: [valid(), { ...valid(), values: {} }] }),
    () => JSON.stringify({ readings: pick([[], null, "x", {}, [null], [1]]) }),
    () => JSON.stringify({ readings: [valid()], more: true }),
    () => JSON.stringify(pick([[], "text", 12, null, true])),
    () => JSON.stringify(valid()).slice(0, Math.floor(random() * 40)),
    () =>
      `{"device":"d","ts":1763805600000,"values":{"a":${
        pick(["NaN", "Infinity", "-Infinity", "1e999", "0x10", "01"])
      }}}`,
    () => JSON.stringify({ ...valid(), values: { ["s".repeat(129)]: 1 } }),
    () => JSON.stringify({ ts: 1_763_805_600_000, values: { a: 1 } }),
  ];
  return Array.from({ length: count }, () => pick(mutations)());
}
