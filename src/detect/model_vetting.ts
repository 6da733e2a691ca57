/**
 * An uploaded model is bounded before onnxruntime sees it (onnx_graph_bound.ts): one scoring
 * run at the scoring batch size may hold at most `spec.limits.modelTensorBytes` of tensors, and
 * the graph may have at most `spec.limits.modelNodes` nodes. A calibrated (baseline) model must
 * be this release's shared graph: its parameters are what a device fits, not its operators.
 */
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";
import { sha256Hex } from "../sha256.ts";
import { baselineGraph } from "./baseline_model.ts";
import { missingTensorNames, type ModelBundle, ModelBundleError } from "./model_bundle.ts";
import { boundGraph, type GraphBound, TensorBytesExceededError, UnboundedGraphError } from "./onnx_graph_bound.ts";
import { readModelInfo, TooManyNodesError } from "./onnx_graph_reader.ts";
import { MalformedProtobufError } from "./onnx_external_data.ts";

export interface VettingLimits {
  /** Rows per onnxruntime call when scoring (`spec.detection.batchSize`). */
  batchSize: number;
  modelNodes: number;
  modelTensorBytes: number;
}

let baselineSha256: string | null = null;

/** Throws LimitExceededError (422) or ModelBundleError; returns the bound of a model it accepts. */
export function vetUploadedModel(bundle: ModelBundle, limits: VettingLimits): GraphBound | null {
  const { manifest, onnx } = bundle;
  if (manifest.baseline) {
    baselineSha256 ??= sha256Hex(baselineGraph());
    if (manifest.sha256 !== baselineSha256) {
      throw new ModelBundleError("A calibrated model must run this release's shared graph", [
        `model.onnx is ${manifest.sha256}, the shared graph is ${baselineSha256}`,
      ]);
    }
    return null;
  }
  const dims = manifest.window === 1
    ? [limits.batchSize, manifest.features.length]
    : [limits.batchSize, manifest.window, manifest.features.length];
  try {
    const model = readModelInfo(onnx, limits.modelNodes);
    const inputs = model.graph.inputs.map((input) => input.name).filter((name) => !model.graph.initializers.has(name));
    const missing = missingTensorNames(manifest, inputs, model.graph.outputs.map((output) => output.name));
    if (missing) throw missing;
    return boundGraph(model, { name: manifest.input, dims }, limits.modelTensorBytes);
  } catch (error) {
    if (error instanceof TooManyNodesError) {
      throw new LimitExceededError(limitKey("modelNodes"), limits.modelNodes, error.message, 422);
    }
    if (error instanceof TensorBytesExceededError) {
      throw new LimitExceededError(limitKey("modelTensorBytes"), limits.modelTensorBytes, error.message, 422);
    }
    if (error instanceof UnboundedGraphError) {
      throw new ModelBundleError("The model's working memory cannot be bounded", [error.message]);
    }
    if (error instanceof MalformedProtobufError) {
      throw new ModelBundleError("model.onnx is not an ONNX model", [error.message]);
    }
    throw error;
  }
}
