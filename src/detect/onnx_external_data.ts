/**
 * Finds tensors that keep their data in external files. onnxruntime reads such files relative to
 * its working directory, outside Deno's permissions, so a model that names one could read any file
 * the process can. Every TensorProto is inspected: graph initializers (dense and sparse), node
 * attributes (`t`, `tensors`, sparse ones), and recursively the subgraphs of attributes (`g`,
 * `graphs`: If, Loop, Scan), model-local functions and training graphs.
 *
 * The model is walked at the protobuf wire level with the field numbers of onnx.proto (the same
 * schema onnx-proto is generated from) instead of decoding it with onnx-proto: decoding turns
 * every `float_data` into a JS array, which for a 16 MB model would take more V8 heap than the
 * process has. The walk keeps only the current path in memory.
 */

type Message = "model" | "graph" | "node" | "attribute" | "tensor" | "sparseTensor" | "function" | "training";

/** Length-delimited fields that hold a message which may contain a tensor: number → [name, type]. */
const CHILDREN: Record<Message, Record<number, [string, Message]>> = {
  model: { 7: ["graph", "graph"], 20: ["training_info", "training"], 25: ["functions", "function"] },
  graph: { 1: ["node", "node"], 5: ["initializer", "tensor"], 15: ["sparse_initializer", "sparseTensor"] },
  node: { 5: ["attribute", "attribute"] },
  attribute: {
    5: ["t", "tensor"],
    6: ["g", "graph"],
    10: ["tensors", "tensor"],
    11: ["graphs", "graph"],
    22: ["sparse_tensor", "sparseTensor"],
    23: ["sparse_tensors", "sparseTensor"],
  },
  tensor: {},
  sparseTensor: { 1: ["values", "tensor"], 2: ["indices", "tensor"] },
  function: { 7: ["node", "node"], 11: ["attribute_proto", "attribute"] },
  training: { 1: ["initialization", "graph"], 2: ["algorithm", "graph"] },
};

const TENSOR_NAME = 8;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const DATA_LOCATION_EXTERNAL = 1;
const MAX_DEPTH = 64;

/** Thrown for bytes that are not a protobuf message. */
export class MalformedProtobufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MalformedProtobufError";
  }
}

/** Where each tensor with external data is, e.g. `graph.node[2].attribute[0].g.initializer[0] ("w")`. */
export function externalDataTensors(onnx: Uint8Array): string[] {
  const found: string[] = [];
  walk(onnx, 0, onnx.length, "model", "", 0, found);
  return found;
}

function walk(
  bytes: Uint8Array,
  start: number,
  end: number,
  type: Message,
  path: string,
  depth: number,
  found: string[],
): void {
  if (depth > MAX_DEPTH) throw new MalformedProtobufError(`Messages nested deeper than ${MAX_DEPTH} at ${path}`);
  const counts = new Map<number, number>();
  let external = false;
  let name = "";
  let at = start;
  while (at < end) {
    const [key, afterKey] = varint(bytes, at, end);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    at = afterKey;
    if (wire === 0) {
      const [value, next] = varint(bytes, at, end);
      if (type === "tensor" && field === TENSOR_DATA_LOCATION && value === DATA_LOCATION_EXTERNAL) external = true;
      at = next;
    } else if (wire === 1 || wire === 5) {
      at += wire === 1 ? 8 : 4;
    } else if (wire === 2) {
      const [length, next] = varint(bytes, at, end);
      const fieldEnd = next + length;
      if (fieldEnd > end) throw new MalformedProtobufError(`A field runs past the end of its message at ${path}`);
      const child = CHILDREN[type][field];
      if (child) {
        const index = counts.get(field) ?? 0;
        counts.set(field, index + 1);
        const childPath = `${path}${path ? "." : ""}${child[0]}[${index}]`;
        walk(bytes, next, fieldEnd, child[1], childPath, depth + 1, found);
      } else if (type === "tensor" && field === TENSOR_EXTERNAL_DATA) {
        external = true;
      } else if (type === "tensor" && field === TENSOR_NAME && length <= 256) {
        name = new TextDecoder().decode(bytes.subarray(next, fieldEnd));
      }
      at = fieldEnd;
    } else {
      throw new MalformedProtobufError(`Unsupported wire type ${wire} at ${path || "(model)"}`);
    }
  }
  if (at !== end) throw new MalformedProtobufError(`A field runs past the end of its message at ${path}`);
  if (external) found.push(`${path}${name ? ` (${JSON.stringify(name)})` : ""}`);
}

/** A varint as a number (exact below 2^53: keys, lengths) and the index after it. */
export function varint(bytes: Uint8Array, at: number, end: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (at >= end) throw new MalformedProtobufError("A number runs past the end of its message");
    const byte = bytes[at++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, at];
    scale *= 128;
  }
  throw new MalformedProtobufError("A number is longer than 10 bytes");
}
