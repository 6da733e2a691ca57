/**
 * Emits a fitted PcaParams as a real ONNX graph (opset 13), so that calibrated models run in
 * onnxruntime exactly like any model a user brings. Input `window` float32 [N, window, sensors];
 * outputs `score` [N] (max of T²/T²limit and Q/Qlimit) and `contributions` [N, sensors].
 */
import type { onnx as OnnxTypes } from "onnx-proto";
import onnxProto from "onnx-proto";
import type { PcaParams } from "./pca_model.ts";

const { onnx } = onnxProto as unknown as { onnx: typeof OnnxTypes };
const FLOAT = 1;
const INT64 = 7;

export const PCA_INPUT = "window";
export const PCA_OUTPUT = "score";
export const PCA_CONTRIBUTIONS = "contributions";

function floats(name: string, dims: number[], values: number[]): OnnxTypes.ITensorProto {
  return { name, dims, dataType: FLOAT, floatData: values };
}

function int64s(name: string, dims: number[], values: number[]): OnnxTypes.ITensorProto {
  return { name, dims, dataType: INT64, int64Data: values };
}

function node(op: string, inputs: string[], output: string, attributes: OnnxTypes.IAttributeProto[] = []) {
  return { opType: op, input: inputs, output: [output], name: output, attribute: attributes };
}

const ints = (name: string, values: number[]): OnnxTypes.IAttributeProto => ({
  name,
  type: onnx.AttributeProto.AttributeType.INTS,
  ints: values,
});
const int = (name: string, value: number): OnnxTypes.IAttributeProto => ({
  name,
  type: onnx.AttributeProto.AttributeType.INT,
  i: value,
});

function valueInfo(name: string, dims: (number | string)[]): OnnxTypes.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: FLOAT,
        shape: { dim: dims.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d }) },
      },
    },
  };
}

export function pcaToOnnx(params: PcaParams, docString: string): Uint8Array {
  const n = params.sensors.length;
  const k = params.invEigen.length;
  const features = 2 * n;
  const loadings = params.components.flat();
  const transposed: number[] = [];
  for (let c = 0; c < k; c++) for (let j = 0; j < features; j++) transposed.push(params.components[j][c]);
  const graph: OnnxTypes.IGraphProto = {
    name: "outpost_pca_t2_q",
    input: [valueInfo(PCA_INPUT, ["N", params.window, n])],
    output: [valueInfo(PCA_OUTPUT, ["N"]), valueInfo(PCA_CONTRIBUTIONS, ["N", n])],
    initializer: [
      int64s("last_index", [], [params.window - 1]),
      floats("mean_last", [n], params.mean.slice(0, n)),
      floats("inv_std_last", [n], params.invStd.slice(0, n)),
      floats("mean_std", [n], params.mean.slice(n)),
      floats("inv_std_std", [n], params.invStd.slice(n)),
      floats("loadings", [features, k], loadings),
      floats("loadings_t", [k, features], transposed),
      floats("inv_eigen", [k], params.invEigen),
      floats("inv_t2_limit", [], [1 / params.t2Limit]),
      floats("inv_q_limit", [], [1 / params.qLimit]),
      int64s("axis_1", [1], [1]),
    ],
    node: [
      node("Gather", [PCA_INPUT, "last_index"], "last", [int("axis", 1)]),
      node("ReduceMean", [PCA_INPUT], "window_mean", [ints("axes", [1]), int("keepdims", 1)]),
      node("Sub", [PCA_INPUT, "window_mean"], "centred"),
      node("Mul", ["centred", "centred"], "squared"),
      node("ReduceMean", ["squared"], "variance", [ints("axes", [1]), int("keepdims", 0)]),
      node("Sqrt", ["variance"], "window_std"),
      node("Sub", ["last", "mean_last"], "last_centred"),
      node("Mul", ["last_centred", "inv_std_last"], "z_last"),
      node("Sub", ["window_std", "mean_std"], "std_centred"),
      node("Mul", ["std_centred", "inv_std_std"], "z_std"),
      node("Concat", ["z_last", "z_std"], "z", [int("axis", 1)]),
      node("MatMul", ["z", "loadings"], "scores_t"),
      node("Mul", ["scores_t", "scores_t"], "scores_t2"),
      node("Mul", ["scores_t2", "inv_eigen"], "scores_weighted"),
      node("ReduceSum", ["scores_weighted", "axis_1"], "t2", [int("keepdims", 0)]),
      node("MatMul", ["scores_t", "loadings_t"], "reconstructed"),
      node("Sub", ["z", "reconstructed"], "residual"),
      node("Mul", ["residual", "residual"], "residual2"),
      node("ReduceSum", ["residual2", "axis_1"], "q", [int("keepdims", 0)]),
      node("Mul", ["t2", "inv_t2_limit"], "t2_ratio"),
      node("Mul", ["q", "inv_q_limit"], "q_ratio"),
      node("Max", ["t2_ratio", "q_ratio"], PCA_OUTPUT),
      node("Mul", ["z_last", "z_last"], "z_last2"),
      node("Mul", ["z_std", "z_std"], "z_std2"),
      node("Max", ["z_last2", "z_std2"], PCA_CONTRIBUTIONS),
    ],
  };
  const model = onnx.ModelProto.create({
    irVersion: 7,
    producerName: "outpost-calibration",
    docString,
    opsetImport: [{ domain: "", version: 13 }],
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}
