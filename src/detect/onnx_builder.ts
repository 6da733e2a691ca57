/** Small builders for ONNX protobuf messages (opset 13), for graphs Outpost emits itself. */
import type { onnx as OnnxTypes } from "onnx-proto";
import onnxProto from "onnx-proto";

export const { onnx } = onnxProto as unknown as { onnx: typeof OnnxTypes };
export type { OnnxTypes };
const FLOAT = 1;
const INT64 = 7;

export function floats(name: string, dims: number[], values: number[]): OnnxTypes.ITensorProto {
  return { name, dims, dataType: FLOAT, floatData: values };
}

export function int64s(name: string, dims: number[], values: number[]): OnnxTypes.ITensorProto {
  return { name, dims, dataType: INT64, int64Data: values };
}

export function node(
  op: string,
  inputs: string[],
  output: string,
  attributes: OnnxTypes.IAttributeProto[] = [],
): OnnxTypes.INodeProto {
  return { opType: op, input: inputs, output: [output], name: output, attribute: attributes };
}

export const ints = (name: string, values: number[]): OnnxTypes.IAttributeProto => ({
  name,
  type: onnx.AttributeProto.AttributeType.INTS,
  ints: values,
});

export const int = (name: string, value: number): OnnxTypes.IAttributeProto => ({
  name,
  type: onnx.AttributeProto.AttributeType.INT,
  i: value,
});

/** A tensor's name and shape (float unless said); a string dimension is symbolic. */
export function valueInfo(
  name: string,
  dims: (number | string)[],
  elemType: "float" | "int64" = "float",
): OnnxTypes.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: elemType === "float" ? FLOAT : INT64,
        shape: { dim: dims.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d }) },
      },
    },
  };
}

export function encodeModel(graph: OnnxTypes.IGraphProto, producerName: string, docString: string): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 7,
    producerName,
    docString,
    opsetImport: [{ domain: "", version: 13 }],
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}
