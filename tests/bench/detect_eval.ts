/**
 * Detection evaluation, the way the independent evaluation runs: each labelled recording (one
 * device, 8 channels at 1 Hz, first 400 readings normal) is replayed through POST /v1/readings into
 * a real Outpost on its default detection settings; the per-reading `anomaly` flags are read back
 * from GET /v1/readings and scored against the labels over the readings after calibration.
 *
 * Two scenario sets: "plant" (tests/sim/plant_simulator.ts: drift, warm-up, wander, post-fault
 * shifts, lagging onsets, with hours-long normal recordings) and "legacy" (today's pump simulator,
 * kept so that old figures stay comparable). Held-out seeds by default; `--tuning` for the seeds
 * the defaults may be tuned on; `--quick` for a small subset (CI).
 *
 *   deno task eval [--tuning] [--quick] [--per-kind N]
 */
import { parseArgs } from "node:util";
import { startOutpost, writeManifest } from "../helpers/outpost_process.ts";
import { fetchReadings, replay, type ScoredReading } from "../helpers/replay.ts";
import { legacyScenarios, type PlantRecording, plantScenarios, type Scenarios } from "../sim/plant_simulator.ts";
import { type Counts, type DelayStats, formatResult, type NormalStats, scoreSet } from "./detect_eval_scoring.ts";

export type { Counts, DelayStats, NormalStats };

const CALIBRATION = 400;
/** Devices replayed at once. */
const CONCURRENCY = 4;

export interface SetResult {
  set: "plant" | "legacy";
  seeds: "tuning" | "heldout";
  recordings: number;
  byFault: Record<string, Counts>;
  total: Counts;
  /** Null when the set has no long normal recordings. */
  normal: NormalStats | null;
  delay: DelayStats;
  /** Readings after calibration that were still unscored when the wait ended (counted as not flagged). */
  unscored: number;
}

export interface EvaluationOptions {
  seeds?: "tuning" | "heldout";
  quick?: boolean;
  /**
   * Fault recordings per kind; 8 plant and 10 legacy by default, 1 each when quick. The plant set
   * has 8 tuning seeds and 64 held-out ones (the first 8 reported); a larger count is cut to those.
   */
  perKind?: number;
  /** Which sets to run; both by default. */
  sets?: readonly ("plant" | "legacy")[];
  /** `spec.detection.sensitivity` of the Outpost under test (its default when absent). */
  sensitivity?: number;
  signal?: AbortSignal;
}

/** Runs each scenario set against a fresh Outpost and returns its figures (also printed). */
export async function evaluateDetectionSets(options: EvaluationOptions = {}): Promise<SetResult[]> {
  const seeds = options.seeds ?? "heldout";
  const quick = options.quick ?? false;
  const results: SetResult[] = [];
  for (const set of options.sets ?? ["plant", "legacy"] as const) {
    const scenarios: Scenarios = set === "plant"
      ? plantScenarios(seeds, quick ? { perKind: 1, normals: 1 } : { perKind: options.perKind })
      : legacyScenarios(seeds, { perKind: quick ? 1 : options.perKind });
    const started = performance.now();
    const result = await evaluateScenarios(set, seeds, scenarios, options);
    console.log(formatResult(result, (performance.now() - started) / 1000));
    results.push(result);
  }
  return results;
}

/**
 * The bench's entry (tests/bench/run_all.ts): the reported held-out sets (8 plant and 10 legacy
 * recordings per kind), or one recording per kind when quick.
 */
export function evaluateDetection(options: { quick: boolean }): Promise<SetResult[]> {
  return evaluateDetectionSets({ quick: options.quick });
}

async function evaluateScenarios(
  set: SetResult["set"],
  seeds: SetResult["seeds"],
  scenarios: Scenarios,
  { signal, sensitivity }: Pick<EvaluationOptions, "signal" | "sensitivity">,
): Promise<SetResult> {
  const dir = await Deno.makeTempDir({ prefix: "outpost-eval-" });
  const detection = sensitivity === undefined ? undefined : [`sensitivity: ${sensitivity}`];
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn", detection }));
  try {
    // Longest first, so that the long normal recordings do not finish alone at the end.
    const recordings = [...scenarios.normals, ...scenarios.faults];
    await forEachConcurrently(recordings, CONCURRENCY, (recording) => {
      signal?.throwIfAborted();
      return replay(outpost.url, deviceOf(recording), recording.readings);
    });
    const scored = await waitUntilScored(outpost.url, recordings, signal);
    return scoreSet({ set, seeds, scenarios, scored, calibration: CALIBRATION, deviceOf });
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function deviceOf(recording: PlantRecording): string {
  return recording.name.replaceAll(/[^A-Za-z0-9_.-]/g, "-");
}

/**
 * Reads every device's rows back until each reading after calibration has been scored (`anomaly`
 * set, or `flags` saying why it will not be), or until a deadline that grows with the readings.
 */
async function waitUntilScored(
  url: string,
  recordings: readonly PlantRecording[],
  signal?: AbortSignal,
): Promise<Map<string, ScoredReading[]>> {
  const total = recordings.reduce((sum, r) => sum + r.readings.length, 0);
  const deadline = Date.now() + 60_000 + total * 2;
  const scored = new Map<string, ScoredReading[]>();
  const pending = new Set(recordings);
  while (true) {
    signal?.throwIfAborted();
    await forEachConcurrently([...pending], CONCURRENCY, async (recording) => {
      const rows = await fetchReadings(url, deviceOf(recording));
      scored.set(deviceOf(recording), rows);
      const done = rows.length >= recording.readings.length &&
        rows.every((row, i) => i < CALIBRATION || row.anomaly !== null || row.flags !== undefined);
      if (done) pending.delete(recording);
    });
    if (pending.size === 0 || Date.now() > deadline) return scored;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}

async function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      tuning: { type: "boolean" },
      quick: { type: "boolean" },
      "per-kind": { type: "string" },
      set: { type: "string", multiple: true },
      sensitivity: { type: "string" },
    },
  });
  const sets = values.set?.map((set) => {
    if (set !== "plant" && set !== "legacy") throw new RangeError(`Unknown set: ${set} (plant or legacy)`);
    return set;
  });
  const started = performance.now();
  await evaluateDetectionSets({
    seeds: values.tuning ? "tuning" : "heldout",
    quick: values.quick,
    perKind: values["per-kind"] ? Number(values["per-kind"]) : undefined,
    sets,
    sensitivity: values.sensitivity ? Number(values.sensitivity) : undefined,
  });
  console.log(`\nevaluation took ${((performance.now() - started) / 1000).toFixed(0)} s`);
}
