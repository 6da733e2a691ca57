/**
 * What a model run must return to be used: the score output with one value per input row (shape
 * [N], [N, 1] or [N, m], whose first column is the score), float32 or float64, every value finite;
 * the contributions output, when the bundle names one, [N, features] and finite as well.
 */
import type * as ort from "onnxruntime-node";
import type { BundleManifest } from "./model_bundle.ts";

export type ModelRunFailure = "failed" | "timeout" | "wrong_output" | "not_finite";

/** A model run that threw, took too long, or returned something unusable. */
export class ModelRunError extends Error {
  readonly failure: ModelRunFailure;
  constructor(failure: ModelRunFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ModelRunError";
    this.failure = failure;
  }
}

export interface ScoredBatch {
  scores: Float32Array;
  /** [count x features] when the model names a contributions output. */
  contributions: Float32Array | null;
}

export function checkedOutputs(
  outputs: ort.InferenceSession.OnnxValueMapType,
  manifest: BundleManifest,
  count: number,
): ScoredBatch {
  const raw = floats(outputs, manifest.output, count);
  const stride = raw.length / count;
  if (!Number.isInteger(stride) || stride < 1) {
    throw new ModelRunError("wrong_output", `Output ${manifest.output} has ${raw.length} values for ${count} rows`);
  }
  const scores = Float32Array.from({ length: count }, (_, i) => raw[i * stride]);
  const bad = scores.findIndex((score) => !Number.isFinite(score));
  if (bad >= 0) throw new ModelRunError("not_finite", `Output ${manifest.output} is ${scores[bad]} for row ${bad}`);
  if (!manifest.contributions) return { scores, contributions: null };
  const contributions = floats(outputs, manifest.contributions, count);
  const width = manifest.features.length;
  if (contributions.length !== count * width) {
    throw new ModelRunError(
      "wrong_output",
      `Output ${manifest.contributions} has ${contributions.length} values, expected ${count} x ${width}`,
    );
  }
  const badContribution = contributions.findIndex((value) => !Number.isFinite(value));
  if (badContribution >= 0) {
    throw new ModelRunError("not_finite", `Output ${manifest.contributions} is ${contributions[badContribution]}`);
  }
  return { scores, contributions: Float32Array.from(contributions) };
}

function floats(
  outputs: ort.InferenceSession.OnnxValueMapType,
  name: string,
  count: number,
): Float32Array | Float64Array {
  const tensor = outputs[name];
  if (!tensor) throw new ModelRunError("wrong_output", `The model returned no output ${name}`);
  if (tensor.type !== "float32" && tensor.type !== "float64") {
    throw new ModelRunError("wrong_output", `Output ${name} is ${tensor.type}, expected float32 or float64`);
  }
  if (tensor.dims[0] !== count) {
    throw new ModelRunError("wrong_output", `Output ${name} has shape [${tensor.dims.join(", ")}] for ${count} rows`);
  }
  return tensor.data as Float32Array | Float64Array;
}
