/**
 * The drift-robust detector's numeric part as one ONNX graph (opset 13), the same for every
 * device: per-device parameters are inputs, so one onnxruntime session scores all devices.
 * It computes exactly baseline_features.ts (windowFeatures, termScores, referenceScore).
 *
 * Inputs: `window` [N, WINDOW, S] (oldest first) and `device` [N] (int64: which of the D
 * parameter rows each reading uses), then per device `floor` [D, S] and `center`, `up`, `down`
 * [D, TERMS, S]. Outputs: `score` [N], `contributions` [N, S], `features` [N, 3, S] (the caller
 * adapts the baseline from them). A device with fewer sensors than S pads with up = down = 0.
 *
 * This builder needs onnx-proto (about 5 MB resident), so it does not run in the service: its
 * output is kept in baseline_model.ts, which `deno task graph` regenerates and a test keeps equal
 * to what this builds.
 */
import { LEVEL_READINGS, RATE_READINGS, TERM_FEATURE, TERMS, WINDOW } from "./baseline_features.ts";
import { BASELINE_INPUTS, BASELINE_OUTPUTS } from "./baseline_model.ts";
import { encodeModel, floats, int, int64s, ints, node, valueInfo } from "./onnx_builder.ts";

export function buildBaselineGraph(): Uint8Array {
  const { window, device, floor, center, up, down } = BASELINE_INPUTS;
  const perReading = (input: string) => node("Gather", [input, device], `${input}_per_reading`, [int("axis", 0)]);
  const mean = (input: string, output: string, keepdims = 0) =>
    node("ReduceMean", [input], output, [ints("axes", [1]), int("keepdims", keepdims)]);
  const slice = (from: string, to: string, output: string) => node("Slice", [window, from, to, "axis_1"], output);
  return encodeModel(
    {
      name: "outpost_drift_robust_baseline",
      input: [
        valueInfo(window, ["N", WINDOW, "S"]),
        valueInfo(device, ["N"], "int64"),
        valueInfo(floor, ["D", "S"]),
        valueInfo(center, ["D", TERMS.length, "S"]),
        valueInfo(up, ["D", TERMS.length, "S"]),
        valueInfo(down, ["D", TERMS.length, "S"]),
      ],
      output: [
        valueInfo(BASELINE_OUTPUTS.score, ["N"]),
        valueInfo(BASELINE_OUTPUTS.contributions, ["N", "S"]),
        valueInfo(BASELINE_OUTPUTS.features, ["N", 3, "S"]),
      ],
      initializer: [
        int64s("axis_1", [1], [1]),
        int64s("level_from", [1], [WINDOW - LEVEL_READINGS]),
        int64s("rate_first_to", [1], [RATE_READINGS]),
        int64s("rate_last_from", [1], [WINDOW - RATE_READINGS]),
        int64s("window_start", [1], [0]),
        int64s("window_end", [1], [WINDOW]),
        int64s("term_feature", [TERMS.length], [...TERM_FEATURE]),
        floats("rate_scale", [], [1 / (WINDOW - RATE_READINGS)]),
      ],
      node: [
        perReading(floor),
        perReading(center),
        perReading(up),
        perReading(down),
        slice("level_from", "window_end", "level_rows"),
        mean("level_rows", "level"),
        mean(window, "window_mean", 1),
        node("Sub", [window, "window_mean"], "centred"),
        node("Mul", ["centred", "centred"], "squared"),
        mean("squared", "variance"),
        node("Sqrt", ["variance"], "std"),
        node("Add", ["std", `${floor}_per_reading`], "std_floored"),
        node("Log", ["std_floored"], "spread"),
        slice("window_start", "rate_first_to", "first_rows"),
        mean("first_rows", "first_mean"),
        slice("rate_last_from", "window_end", "last_rows"),
        mean("last_rows", "last_mean"),
        node("Sub", ["last_mean", "first_mean"], "change"),
        node("Mul", ["change", "rate_scale"], "rate"),
        node("Unsqueeze", ["level", "axis_1"], "level_1"),
        node("Unsqueeze", ["spread", "axis_1"], "spread_1"),
        node("Unsqueeze", ["rate", "axis_1"], "rate_1"),
        node("Concat", ["level_1", "spread_1", "rate_1"], BASELINE_OUTPUTS.features, [int("axis", 1)]),
        node("Gather", [BASELINE_OUTPUTS.features, "term_feature"], "terms", [int("axis", 1)]),
        node("Sub", ["terms", `${center}_per_reading`], "deviation"),
        node("Mul", ["deviation", `${up}_per_reading`], "z_up"),
        node("Neg", ["deviation"], "negated"),
        node("Mul", ["negated", `${down}_per_reading`], "z_down"),
        node("Max", ["z_up", "z_down"], "z"),
        node("ReduceMax", ["z"], BASELINE_OUTPUTS.contributions, [ints("axes", [1]), int("keepdims", 0)]),
        node("ReduceMax", [BASELINE_OUTPUTS.contributions], BASELINE_OUTPUTS.score, [
          ints("axes", [1]),
          int("keepdims", 0),
        ]),
      ],
    },
    "outpost-calibration",
    "Drift-robust baseline detector: level, spread and rate per sensor against per-device parameters",
  );
}

if (import.meta.main) {
  // `deno task graph`: writes the built graph into baseline_model.ts.
  const path = new URL("./baseline_model.ts", import.meta.url);
  const text = await Deno.readTextFile(path);
  const base64 = btoa(String.fromCharCode(...buildBaselineGraph()));
  const updated = text.replace(/const GRAPH_BASE64 =\s*"[^"]*";/, `const GRAPH_BASE64 =\n  "${base64}";`);
  await Deno.writeTextFile(path, updated);
  console.log(`baseline_model.ts: ${base64.length} base64 characters`);
}
