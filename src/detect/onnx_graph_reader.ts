/**
 * Reads what an uploaded model's graph declares, at the protobuf wire level (the field numbers
 * of onnx.proto), for onnx_graph_bound.ts: operator sets, graph inputs and outputs with their
 * shapes, nodes with their attributes, and initializers by shape and type. Tensor data is not
 * decoded, except small integer tensors (shapes, axes) whose values decide other tensors' shapes.
 *
 * Reading costs O(model bytes) and keeps at most `maxNodes` nodes: a model with more is refused
 * while it is read, before any of it reaches onnxruntime.
 */
import { MalformedProtobufError, varint } from "./onnx_external_data.ts";

export interface TensorInfo {
  dims: number[];
  dataType: number;
  /** Values of an integer tensor of at most SMALL_VALUES elements (shapes, axes, indices). */
  values?: bigint[];
}

export interface AttributeInfo {
  i?: bigint;
  ints?: bigint[];
  f?: number;
  t?: TensorInfo;
  /** A graph, sparse tensor or a reference to a function's attribute: never accepted. */
  unsupported?: string;
  /** An integer list longer than MAX_INTS, not decoded (tree ensembles' node lists). */
  longList?: boolean;
}

export interface NodeInfo {
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Map<string, AttributeInfo>;
}

export interface ValueInfo {
  name: string;
  elemType: number;
  /** Per axis: a fixed size, a symbolic name, or null when absent; null when the shape is absent. */
  dims: (number | string | null)[] | null;
}

export interface GraphInfo {
  nodes: NodeInfo[];
  initializers: Map<string, TensorInfo>;
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  sparseInitializers: number;
}

export interface ModelInfo {
  /** Operator set versions by domain ("" is the default ONNX domain). */
  opsets: Map<string, number>;
  graph: GraphInfo;
}

/** Too many nodes: the count at which reading stopped. */
export class TooManyNodesError extends Error {
  constructor(readonly maxNodes: number) {
    super(`The graph has more than ${maxNodes} nodes`);
    this.name = "TooManyNodesError";
  }
}

export const INT64 = 7;
export const INT32 = 6;
const SMALL_VALUES = 64;
const MAX_RANK = 16;
const MAX_INTS = 1024;
const TEXT = new TextDecoder();

/** Reads the model's main graph; throws MalformedProtobufError or TooManyNodesError. */
export function readModelInfo(onnx: Uint8Array, maxNodes: number): ModelInfo {
  const opsets = new Map<string, number>();
  let graph: GraphInfo | null = null;
  const nodeCount = { value: 0, max: maxNodes };
  for (const field of fields(onnx, 0, onnx.length)) {
    if (field.number === 8 && field.wire === 2) {
      let domain = "";
      let version = 0;
      for (const inner of fields(onnx, field.start, field.end)) {
        if (inner.number === 1 && inner.wire === 2) domain = text(onnx, inner);
        if (inner.number === 2 && inner.wire === 0) version = Number(int64s(onnx, inner)[0]);
      }
      opsets.set(domain === "ai.onnx" ? "" : domain, version);
    } else if (field.number === 7 && field.wire === 2) {
      graph = readGraph(onnx, field.start, field.end, nodeCount);
    }
  }
  if (!graph) throw new MalformedProtobufError("The model has no graph");
  return { opsets, graph };
}

function readGraph(bytes: Uint8Array, start: number, end: number, nodeCount: { value: number; max: number }) {
  const graph: GraphInfo = { nodes: [], initializers: new Map(), inputs: [], outputs: [], sparseInitializers: 0 };
  for (const field of fields(bytes, start, end)) {
    if (field.wire !== 2) continue;
    if (field.number === 1) {
      if (++nodeCount.value > nodeCount.max) throw new TooManyNodesError(nodeCount.max);
      graph.nodes.push(readNode(bytes, field.start, field.end));
    } else if (field.number === 5) {
      const [name, tensor] = readTensor(bytes, field.start, field.end);
      graph.initializers.set(name, tensor);
    } else if (field.number === 11) graph.inputs.push(readValueInfo(bytes, field.start, field.end));
    else if (field.number === 12) graph.outputs.push(readValueInfo(bytes, field.start, field.end));
    else if (field.number === 15) graph.sparseInitializers++;
  }
  return graph;
}

function readNode(bytes: Uint8Array, start: number, end: number): NodeInfo {
  const node: NodeInfo = { opType: "", domain: "", inputs: [], outputs: [], attributes: new Map() };
  for (const field of fields(bytes, start, end)) {
    if (field.wire !== 2) continue;
    if (field.number === 1) node.inputs.push(text(bytes, field));
    else if (field.number === 2) node.outputs.push(text(bytes, field));
    else if (field.number === 4) node.opType = text(bytes, field);
    else if (field.number === 7) node.domain = text(bytes, field);
    else if (field.number === 5) {
      const [name, attribute] = readAttribute(bytes, field.start, field.end);
      node.attributes.set(name, attribute);
    }
  }
  if (node.domain === "ai.onnx") node.domain = "";
  return node;
}

function readAttribute(bytes: Uint8Array, start: number, end: number): [string, AttributeInfo] {
  let name = "";
  const attribute: AttributeInfo = {};
  for (const field of fields(bytes, start, end)) {
    switch (field.number) {
      case 1:
        if (field.wire === 2) name = text(bytes, field);
        break;
      case 2:
        if (field.wire === 5) {
          attribute.f = new DataView(bytes.buffer, bytes.byteOffset + field.start, 4).getFloat32(0, true);
        }
        break;
      case 3:
        if (field.wire === 0) attribute.i = int64s(bytes, field)[0];
        break;
      case 5:
        if (field.wire === 2) attribute.t = readTensor(bytes, field.start, field.end)[1];
        break;
      case 8:
        if (attribute.longList || field.end - field.start > 10 * MAX_INTS) attribute.longList = true;
        else (attribute.ints ??= []).push(...int64s(bytes, field));
        if ((attribute.ints?.length ?? 0) > MAX_INTS) {
          attribute.longList = true;
          attribute.ints = undefined;
        }
        break;
      case 6:
      case 11:
        attribute.unsupported = "a subgraph";
        break;
      case 22:
      case 23:
        attribute.unsupported = "a sparse tensor";
        break;
      case 21:
        attribute.unsupported = "a reference to a function attribute";
        break;
    }
  }
  return [name, attribute];
}

function readTensor(bytes: Uint8Array, start: number, end: number): [string, TensorInfo] {
  let name = "";
  const tensor: TensorInfo = { dims: [], dataType: 0 };
  const int64Values: bigint[] = [];
  let raw: Field | null = null;
  for (const field of fields(bytes, start, end)) {
    if (field.number === 1) {
      if (field.end - field.start > 10 * MAX_RANK) throw new MalformedProtobufError(`Tensor ${name} has too many axes`);
      tensor.dims.push(...int64s(bytes, field).map(Number));
    } else if (field.number === 2 && field.wire === 0) tensor.dataType = Number(int64s(bytes, field)[0]);
    else if (field.number === 8 && field.wire === 2) name = text(bytes, field);
    else if (field.number === 9 && field.wire === 2) raw = field;
    else if (
      (field.number === 7 || field.number === 5) && int64Values.length <= SMALL_VALUES &&
      field.end - field.start <= 10 * SMALL_VALUES
    ) {
      int64Values.push(...int64s(bytes, field));
    }
    if (tensor.dims.length > MAX_RANK) {
      throw new MalformedProtobufError(`Tensor ${name} has more than ${MAX_RANK} axes`);
    }
  }
  const elements = tensor.dims.reduce((product, dim) => product * dim, 1);
  // Every encoding spends at least half a byte on an element: more declared than that is a lie
  // onnxruntime would have to fill (or refuse) after allocating it.
  if (tensor.dims.some((dim) => dim < 0) || elements > 2 * (end - start)) {
    throw new MalformedProtobufError(
      `Tensor ${JSON.stringify(name)} declares ${tensor.dims.join("x")} elements it does not hold`,
    );
  }
  if ((tensor.dataType === INT64 || tensor.dataType === INT32) && elements <= SMALL_VALUES) {
    if (raw) {
      const size = tensor.dataType === INT64 ? 8 : 4;
      if (raw.end - raw.start === elements * size) {
        const view = new DataView(bytes.buffer, bytes.byteOffset + raw.start, raw.end - raw.start);
        tensor.values = Array.from(
          { length: elements },
          (_, k) => size === 8 ? view.getBigInt64(k * 8, true) : BigInt(view.getInt32(k * 4, true)),
        );
      }
    } else if (int64Values.length === elements) tensor.values = int64Values;
  }
  return [name, tensor];
}

function readValueInfo(bytes: Uint8Array, start: number, end: number): ValueInfo {
  const info: ValueInfo = { name: "", elemType: 0, dims: null };
  for (const field of fields(bytes, start, end)) {
    if (field.number === 1 && field.wire === 2) info.name = text(bytes, field);
    if (field.number !== 2 || field.wire !== 2) continue;
    for (const type of fields(bytes, field.start, field.end)) {
      if (type.number !== 1 || type.wire !== 2) continue;
      for (const tensorType of fields(bytes, type.start, type.end)) {
        if (tensorType.number === 1 && tensorType.wire === 0) info.elemType = Number(int64s(bytes, tensorType)[0]);
        if (tensorType.number !== 2 || tensorType.wire !== 2) continue;
        info.dims = [];
        for (const dim of fields(bytes, tensorType.start, tensorType.end)) {
          if (dim.number !== 1 || dim.wire !== 2) continue;
          let value: number | string | null = null;
          for (const part of fields(bytes, dim.start, dim.end)) {
            if (part.number === 1 && part.wire === 0) value = Number(int64s(bytes, part)[0]);
            if (part.number === 2 && part.wire === 2) value = text(bytes, part);
          }
          info.dims.push(value);
          if (info.dims.length > MAX_RANK) {
            throw new MalformedProtobufError(`${info.name} has more than ${MAX_RANK} axes`);
          }
        }
      }
    }
  }
  return info;
}

interface Field {
  number: number;
  wire: number;
  /** The bytes of the value: a varint, a fixed-size number, or a length-delimited content. */
  start: number;
  end: number;
}

/** The fields of one message, in order. */
function* fields(bytes: Uint8Array, start: number, end: number): Generator<Field> {
  let at = start;
  while (at < end) {
    const [key, afterKey] = varint(bytes, at, end);
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      at = varint(bytes, afterKey, end)[1];
      yield { number, wire, start: afterKey, end: at };
    } else if (wire === 1 || wire === 5) {
      at = afterKey + (wire === 1 ? 8 : 4);
      if (at > end) throw new MalformedProtobufError("A field runs past the end of its message");
      yield { number, wire, start: afterKey, end: at };
    } else if (wire === 2) {
      const [length, next] = varint(bytes, afterKey, end);
      at = next + length;
      if (at > end) throw new MalformedProtobufError("A field runs past the end of its message");
      yield { number, wire, start: next, end: at };
    } else throw new MalformedProtobufError(`Unsupported wire type ${wire}`);
  }
}

/** A repeated int64 field, packed or not, as signed values. */
function int64s(bytes: Uint8Array, field: Field): bigint[] {
  if (field.wire === 0) return [BigInt.asIntN(64, bigVarint(bytes, field.start, field.end)[0])];
  if (field.wire !== 2) return [];
  const values: bigint[] = [];
  for (let at = field.start; at < field.end;) {
    const [value, next] = bigVarint(bytes, at, field.end);
    values.push(BigInt.asIntN(64, value));
    at = next;
  }
  return values;
}

function text(bytes: Uint8Array, field: Field): string {
  return TEXT.decode(bytes.subarray(field.start, field.end));
}

function bigVarint(bytes: Uint8Array, at: number, end: number): [bigint, number] {
  let value = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (at >= end) throw new MalformedProtobufError("A number runs past the end of its message");
    const byte = bytes[at++];
    value |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return [value, at];
  }
  throw new MalformedProtobufError("A number is longer than 10 bytes");
}
