/**
 * What one run of an uploaded model can cost, known before onnxruntime sees it. The graph's
 * shapes are worked out node by node for the input it will be given at scoring time (the
 * scoring batch: `[batch, features]` or `[batch, window, features]`); every tensor a node makes
 * is counted in bytes, and the model is refused once the sum passes the bound. A node whose
 * output shape cannot be known from the graph alone (an operator outside OPERATORS, a shape
 * computed from the data, a subgraph, a custom domain) refuses the model: what cannot be bounded
 * is not run. The sum is an upper bound of what a run holds at once (onnxruntime frees a tensor
 * after its last use), so a model that passes cannot make a run allocate more than the bound.
 *
 * Shape arithmetic (Shape → Gather → Concat → Reshape, as exporters write it) is followed on
 * small integer tensors, so such graphs are bounded too.
 */
import { INT32, INT64, type ModelInfo, type NodeInfo, type TensorInfo } from "./onnx_graph_reader.ts";

/** The graph cannot be bounded: an operator, attribute or shape this check does not accept. */
export class UnboundedGraphError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnboundedGraphError";
  }
}

/** The tensors of one run would pass the bound. */
export class TensorBytesExceededError extends Error {
  constructor(readonly bytes: number, readonly at: string) {
    super(`At scoring batch size one run would hold more than ${bytes} bytes of tensors (reached at ${at})`);
    this.name = "TensorBytesExceededError";
  }
}

export interface GraphBound {
  /** Bytes of every tensor the nodes make, summed: an upper bound of a run's working memory. */
  tensorBytes: number;
  nodes: number;
  largest: { name: string; bytes: number };
}

interface Value extends TensorInfo {
  name: string;
}

const FLOAT = 1;
const BOOL = 9;
const BYTES_PER_ELEMENT: Record<number, number> = {
  1: 4,
  2: 1,
  3: 1,
  4: 2,
  5: 2,
  6: 4,
  7: 8,
  9: 1,
  10: 2,
  11: 8,
  12: 4,
  13: 8,
  16: 2,
};
const SMALL_VALUES = 64;
const words = (text: string) => new Set(text.split(" "));

const SAME_SHAPE = words(
  "Abs Neg Sqrt Exp Log Relu Sigmoid Tanh Erf Sign Floor Ceil Round Reciprocal Identity Softplus " +
    "Softsign LeakyRelu Elu Selu Celu HardSigmoid HardSwish Gelu Mish Clip Softmax LogSoftmax Hardmax Sin " +
    "Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Shrink ThresholdedRelu LpNormalization " +
    "MeanVarianceNormalization CumSum BatchNormalization InstanceNormalization LayerNormalization Dropout",
);
const SAME_SHAPE_BOOL = words("IsNaN IsInf Not");
const BROADCAST = words("Add Sub Mul Div Pow Mod Max Min Sum Mean PRelu Where");
const COMPARISON = words("Equal Greater Less GreaterOrEqual LessOrEqual And Or Xor");
const REDUCE = words(
  "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSum " +
    "ReduceLogSumExp",
);
const SHAPING = words(
  "ArgMax ArgMin MatMul Gemm Transpose Reshape Flatten Squeeze Unsqueeze Concat Slice Gather Shape Size " +
    "Constant Split Expand Tile ConstantOfShape Pad Cast CastLike TopK",
);

/** ai.onnx.ml operators (as scikit-learn models are exported): [N, F] in, [N, targets] out. */
const ML_SAME_SHAPE = words("Scaler Normalizer Binarizer Imputer");
const ML_REGRESSORS = words("LinearRegressor TreeEnsembleRegressor SVMRegressor");
const ML_DOMAIN: string = "ai.onnx.ml";

/** Every operator this check can bound: the default ONNX domain, then ai.onnx.ml's. */
export const OPERATORS: readonly string[] = [
  ...[...SAME_SHAPE, ...SAME_SHAPE_BOOL, ...BROADCAST, ...COMPARISON, ...REDUCE, ...SHAPING].sort(),
  ...[...ML_SAME_SHAPE, ...ML_REGRESSORS].sort().map((op) => `${ML_DOMAIN}:${op}`),
];

/**
 * Bounds a run of `model` fed `input` (its name and the dims it is given at scoring); throws UnboundedGraphError or
 * TensorBytesExceededError (as soon as the sum passes `maxTensorBytes`).
 */
export function boundGraph(
  model: ModelInfo,
  input: { name: string; dims: number[] },
  maxTensorBytes: number,
): GraphBound {
  const { graph } = model;
  if (graph.sparseInitializers > 0) throw new UnboundedGraphError("Sparse initializers are not accepted");
  const values = new Map<string, Value>();
  for (const [name, tensor] of graph.initializers) values.set(name, { name, ...tensor });
  for (const declared of graph.inputs) {
    if (values.has(declared.name)) continue;
    if (declared.name !== input.name) {
      throw new UnboundedGraphError(`Graph input ${JSON.stringify(declared.name)} is not the manifest's input`);
    }
    const dims = declared.dims;
    if (
      dims && (dims.length !== input.dims.length || dims.some((d, k) => typeof d === "number" && d !== input.dims[k]))
    ) {
      throw new UnboundedGraphError(
        `Graph input ${JSON.stringify(input.name)} is declared [${dims.join(", ")}], the manifest gives [N, ${
          input.dims.slice(1).join(", ")
        }]`,
      );
    }
    values.set(input.name, { name: input.name, dims: input.dims, dataType: declared.elemType || FLOAT });
  }
  if (!values.has(input.name)) throw new UnboundedGraphError(`The graph has no input ${JSON.stringify(input.name)}`);

  let tensorBytes = 0;
  let largest = { name: "", bytes: 0 };
  for (const [index, node] of graph.nodes.entries()) {
    const where = `node ${index} (${node.opType}${node.outputs[0] ? ` → ${JSON.stringify(node.outputs[0])}` : ""})`;
    if (node.domain !== "" && node.domain !== ML_DOMAIN) {
      throw new UnboundedGraphError(`${where}: domain ${JSON.stringify(node.domain)} is not accepted`);
    }
    for (const [name, attribute] of node.attributes) {
      if (attribute.unsupported) {
        throw new UnboundedGraphError(`${where}: attribute ${name} is ${attribute.unsupported}`);
      }
      if (attribute.longList && node.domain === "") {
        throw new UnboundedGraphError(`${where}: attribute ${name} is a list of more than 1024 integers`);
      }
    }
    const inputs = node.inputs.map((name) => {
      if (name === "") return undefined;
      const value = values.get(name);
      if (!value) throw new UnboundedGraphError(`${where}: input ${JSON.stringify(name)} is not made before it`);
      return value;
    });
    let outputs: TensorInfo[];
    try {
      outputs = node.domain === ML_DOMAIN ? inferMl(node, inputs) : infer(node, inputs);
    } catch (error) {
      if (error instanceof UnboundedGraphError) throw new UnboundedGraphError(`${where}: ${error.message}`);
      throw error;
    }
    for (const [k, name] of node.outputs.entries()) {
      if (name === "") continue;
      const output = outputs[k];
      if (!output) throw new UnboundedGraphError(`${where}: output ${k} is not one ${node.opType} makes`);
      if (output.dims.some((dim) => !Number.isSafeInteger(dim) || dim < 0)) {
        throw new UnboundedGraphError(`${where}: output ${JSON.stringify(name)} has shape [${output.dims.join(", ")}]`);
      }
      const bytes = elementsOf(output.dims) * (BYTES_PER_ELEMENT[output.dataType] ?? 8);
      tensorBytes += bytes;
      if (bytes > largest.bytes) largest = { name, bytes };
      if (tensorBytes > maxTensorBytes) throw new TensorBytesExceededError(maxTensorBytes, where);
      values.set(name, { name, ...output });
    }
  }
  return { tensorBytes, nodes: graph.nodes.length, largest };
}

function infer(node: NodeInfo, inputs: (Value | undefined)[]): TensorInfo[] {
  const op = node.opType;
  const first = () => required(inputs, 0);
  if (SAME_SHAPE.has(op)) {
    const x = first();
    if (op === "Dropout") return [same(x), { dims: x.dims, dataType: BOOL }];
    if (op === "LayerNormalization") return [same(x), same(x), same(x)];
    return [same(x)];
  }
  if (SAME_SHAPE_BOOL.has(op)) return [{ dims: first().dims, dataType: BOOL }];
  if (BROADCAST.has(op) || COMPARISON.has(op)) {
    const present = inputs.filter((value): value is Value => value !== undefined);
    if (present.length === 0) throw new UnboundedGraphError("no inputs");
    const dims = broadcast(present.map((value) => value.dims));
    const dataType = COMPARISON.has(op) ? BOOL : op === "Where" ? required(inputs, 1).dataType : present[0].dataType;
    return [{ dims, dataType, values: arithmetic(op, present, dims) }];
  }
  if (REDUCE.has(op)) return [reduce(node, first(), inputs[1])];
  switch (op) {
    case "ArgMax":
    case "ArgMin": {
      const x = first();
      const axis = normalAxis(intAttribute(node, "axis", 0n), x.dims.length);
      const keep = intAttribute(node, "keepdims", 1n) !== 0n;
      const dims = keep ? x.dims.map((d, k) => k === axis ? 1 : d) : x.dims.filter((_, k) => k !== axis);
      return [{ dims, dataType: INT64 }];
    }
    case "MatMul":
      return [{ dims: matmul(first().dims, required(inputs, 1).dims), dataType: first().dataType }];
    case "Gemm": {
      const [a, b] = [first().dims, required(inputs, 1).dims];
      if (a.length !== 2 || b.length !== 2) throw new UnboundedGraphError("Gemm takes two matrices");
      const [m, ka] = intAttribute(node, "transA", 0n) ? [a[1], a[0]] : [a[0], a[1]];
      const [kb, n] = intAttribute(node, "transB", 0n) ? [b[1], b[0]] : [b[0], b[1]];
      if (ka !== kb) throw new UnboundedGraphError(`inner sizes ${ka} and ${kb} differ`);
      return [{ dims: [m, n], dataType: first().dataType }];
    }
    case "Transpose": {
      const x = first();
      const perm = node.attributes.get("perm")?.ints?.map(Number) ?? x.dims.map((_, k) => x.dims.length - 1 - k);
      if (perm.length !== x.dims.length || new Set(perm).size !== perm.length || perm.some((p) => !(p in x.dims))) {
        throw new UnboundedGraphError(`perm [${perm.join(", ")}] is not a permutation of ${x.dims.length} axes`);
      }
      return [{ dims: perm.map((p) => x.dims[p]), dataType: x.dataType }];
    }
    case "Reshape":
      return [reshape(node, first(), constant(inputs[1], "the shape"))];
    case "Flatten": {
      const x = first();
      const axis = normalAxis(intAttribute(node, "axis", 1n), x.dims.length + 1);
      return [{ dims: [elementsOf(x.dims.slice(0, axis)), elementsOf(x.dims.slice(axis))], dataType: x.dataType }];
    }
    case "Squeeze": {
      const x = first();
      const given = axesOf(node, inputs[1]);
      const axes = given === null
        ? x.dims.flatMap((d, k) => d === 1 ? [k] : [])
        : given.map((a) => normalAxis(a, x.dims.length));
      if (axes.some((a) => x.dims[a] !== 1)) throw new UnboundedGraphError("squeezes an axis whose size is not 1");
      return [{ dims: x.dims.filter((_, k) => !axes.includes(k)), dataType: x.dataType, values: x.values }];
    }
    case "Unsqueeze": {
      const x = first();
      const given = axesOf(node, inputs[1]);
      if (given === null) throw new UnboundedGraphError("axes are required");
      const rank = x.dims.length + given.length;
      const axes = given.map((a) => normalAxis(a, rank));
      const rest = [...x.dims];
      return [{
        dims: Array.from({ length: rank }, (_, k) => axes.includes(k) ? 1 : rest.shift()!),
        dataType: x.dataType,
        values: x.values,
      }];
    }
    case "Concat":
      return [concat(node, inputs.filter((value): value is Value => value !== undefined))];
    case "Slice":
      return [slice(node, first(), inputs)];
    case "Gather": {
      const [data, indices] = [first(), required(inputs, 1)];
      const axis = normalAxis(intAttribute(node, "axis", 0n), data.dims.length);
      const dims = [...data.dims.slice(0, axis), ...indices.dims, ...data.dims.slice(axis + 1)];
      const values = data.values && indices.values && data.dims.length <= 1
        ? indices.values.map((i) => data.values![Number(i < 0n ? i + BigInt(data.dims[0] ?? 1) : i)] ?? 0n)
        : undefined;
      return [{ dims, dataType: data.dataType, values }];
    }
    case "Shape": {
      const rank = first().dims.length;
      const clamped = (raw: bigint) => {
        const value = Number(raw) < 0 ? Number(raw) + rank : Number(raw);
        return Math.min(Math.max(value, 0), rank);
      };
      const start = clamped(intAttribute(node, "start", 0n));
      const end = clamped(intAttribute(node, "end", BigInt(rank)));
      const values = first().dims.slice(start, end).map(BigInt);
      return [{ dims: [values.length], dataType: INT64, values }];
    }
    case "Size":
      return [{ dims: [], dataType: INT64, values: [BigInt(elementsOf(first().dims))] }];
    case "Constant":
      return [constantNode(node)];
    case "Split":
      return split(node, first(), inputs[1]);
    case "Expand": {
      const x = first();
      const shape = constant(inputs[1], "the shape").map(Number);
      return [{ dims: broadcast([x.dims, shape]), dataType: x.dataType }];
    }
    case "Tile": {
      const x = first();
      const repeats = constant(inputs[1], "repeats").map(Number);
      if (repeats.length !== x.dims.length) throw new UnboundedGraphError("repeats do not match the rank");
      return [{ dims: x.dims.map((d, k) => d * repeats[k]), dataType: x.dataType }];
    }
    case "ConstantOfShape":
      return [{
        dims: constant(first(), "the shape").map(Number),
        dataType: node.attributes.get("value")?.t?.dataType ?? FLOAT,
      }];
    case "Pad": {
      const x = first();
      const pads = (inputs[1] ? constant(inputs[1], "pads") : node.attributes.get("pads")?.ints ?? []).map(Number);
      const axes = inputs[3]
        ? constant(inputs[3], "axes").map((a) => normalAxis(a, x.dims.length))
        : x.dims.map((_, k) => k);
      if (pads.length !== 2 * axes.length) throw new UnboundedGraphError("pads do not match the axes");
      const dims = [...x.dims];
      axes.forEach((axis, k) => dims[axis] += pads[k] + pads[k + axes.length]);
      return [{ dims, dataType: x.dataType }];
    }
    case "Cast": {
      const x = first();
      const to = Number(intAttribute(node, "to", BigInt(FLOAT)));
      return [{ dims: x.dims, dataType: to, values: to === INT64 || to === INT32 ? x.values : undefined }];
    }
    case "CastLike":
      return [{ dims: first().dims, dataType: required(inputs, 1).dataType }];
    case "TopK": {
      const x = first();
      const k = Number(constant(inputs[1], "k")[0] ?? -1n);
      const axis = normalAxis(intAttribute(node, "axis", -1n), x.dims.length);
      if (k < 0 || k > x.dims[axis]) throw new UnboundedGraphError(`k ${k} is out of range`);
      const dims = x.dims.map((d, a) => a === axis ? k : d);
      return [{ dims, dataType: x.dataType }, { dims, dataType: INT64 }];
    }
  }
  throw new UnboundedGraphError(`operator ${op} is not accepted (README "Model bundles" lists those that are)`);
}

function inferMl(node: NodeInfo, inputs: (Value | undefined)[]): TensorInfo[] {
  const x = required(inputs, 0);
  if (x.dims.length !== 2 && !(x.dims.length === 1 && ML_SAME_SHAPE.has(node.opType))) {
    throw new UnboundedGraphError(`input of shape [${x.dims.join(", ")}], not [N, F]`);
  }
  if (ML_SAME_SHAPE.has(node.opType)) return [{ dims: x.dims, dataType: FLOAT }];
  if (ML_REGRESSORS.has(node.opType)) {
    const targets = Number(node.attributes.get(node.opType === "LinearRegressor" ? "targets" : "n_targets")?.i ?? 1n);
    if (!(targets >= 1 && targets <= 1_000_000)) throw new UnboundedGraphError(`${targets} targets`);
    return [{ dims: [x.dims[0], targets], dataType: FLOAT }];
  }
  throw new UnboundedGraphError(
    `operator ${ML_DOMAIN}:${node.opType} is not accepted (README "Model bundles" lists those that are)`,
  );
}

function required(inputs: (Value | undefined)[], k: number): Value {
  const value = inputs[k];
  if (!value) throw new UnboundedGraphError(`input ${k} is missing`);
  return value;
}

function same(x: Value): TensorInfo {
  return { dims: x.dims, dataType: x.dataType, values: x.values };
}

function elementsOf(dims: readonly number[]): number {
  return dims.reduce((product, dim) => product * dim, 1);
}

function intAttribute(node: NodeInfo, name: string, fallback: bigint): bigint {
  return node.attributes.get(name)?.i ?? fallback;
}

function normalAxis(axis: bigint | number, rank: number): number {
  let value = Number(axis);
  if (value < 0) value += rank;
  if (!(value >= 0 && value < rank)) throw new UnboundedGraphError(`axis ${axis} is out of range for rank ${rank}`);
  return value;
}

/** The values of an input that must be known from the graph (an initializer or shape arithmetic). */
function constant(value: Value | undefined, what: string): bigint[] {
  if (!value) throw new UnboundedGraphError(`${what} is missing`);
  if (!value.values) throw new UnboundedGraphError(`${what} (${JSON.stringify(value.name)}) is not a constant`);
  return value.values;
}

/** Axes from the `axes` attribute or an input; null when neither is given. */
function axesOf(node: NodeInfo, input: Value | undefined): bigint[] | null {
  const attribute = node.attributes.get("axes")?.ints;
  if (attribute) return attribute;
  return input ? constant(input, "axes") : null;
}

function broadcast(shapes: number[][]): number[] {
  const rank = Math.max(...shapes.map((shape) => shape.length));
  return Array.from({ length: rank }, (_, k) => {
    let size = 1;
    for (const shape of shapes) {
      const dim = shape[shape.length - rank + k] ?? 1;
      if (dim === 1) continue;
      if (size !== 1 && size !== dim) {
        throw new UnboundedGraphError(`shapes [${shapes.map((s) => s.join("x")).join("], [")}] do not broadcast`);
      }
      size = dim;
    }
    return size;
  });
}

/** Integer arithmetic on small constants (shape computations); undefined otherwise. */
function arithmetic(op: string, inputs: Value[], dims: number[]): bigint[] | undefined {
  if (inputs.length !== 2 || !inputs.every((value) => value.values) || elementsOf(dims) > SMALL_VALUES) {
    return undefined;
  }
  const [a, b] = inputs.map((value) => value.values!);
  const at = (values: bigint[], k: number) => values.length === 1 ? values[0] : values[k];
  const apply: Record<string, (x: bigint, y: bigint) => bigint> = {
    Add: (x, y) => x + y,
    Sub: (x, y) => x - y,
    Mul: (x, y) => x * y,
    Div: (x, y) => y === 0n ? 0n : x / y,
  };
  const fn = apply[op];
  if (!fn || (a.length !== 1 && b.length !== 1 && a.length !== b.length)) return undefined;
  return Array.from({ length: elementsOf(dims) }, (_, k) => fn(at(a, k), at(b, k)));
}

function reduce(node: NodeInfo, x: Value, axesInput: Value | undefined): TensorInfo {
  const keep = intAttribute(node, "keepdims", 1n) !== 0n;
  const given = axesOf(node, axesInput);
  let axes: number[];
  if (given === null || given.length === 0) {
    if (intAttribute(node, "noop_with_empty_axes", 0n) !== 0n) return same(x);
    axes = x.dims.map((_, k) => k);
  } else axes = given.map((a) => normalAxis(a, x.dims.length));
  const dims = keep ? x.dims.map((d, k) => axes.includes(k) ? 1 : d) : x.dims.filter((_, k) => !axes.includes(k));
  return { dims, dataType: x.dataType };
}

function matmul(a: number[], b: number[]): number[] {
  if (a.length === 0 || b.length === 0) throw new UnboundedGraphError("MatMul of a scalar");
  const left = a.length === 1 ? [1, a[0]] : a;
  const right = b.length === 1 ? [b[0], 1] : b;
  const inner = left[left.length - 1];
  if (inner !== right[right.length - 2]) {
    throw new UnboundedGraphError(`inner sizes ${inner} and ${right[right.length - 2]} differ`);
  }
  const batch = broadcast([left.slice(0, -2), right.slice(0, -2)]);
  const dims = [...batch, left[left.length - 2], right[right.length - 1]];
  if (a.length === 1) dims.splice(dims.length - 2, 1);
  if (b.length === 1) dims.pop();
  return dims;
}

function reshape(node: NodeInfo, x: Value, shape: bigint[]): TensorInfo {
  const allowZero = intAttribute(node, "allowzero", 0n) !== 0n;
  const dims = shape.map((d, k) => d === 0n && !allowZero ? x.dims[k] : Number(d));
  const unknown = dims.indexOf(-1);
  const known = elementsOf(dims.filter((_, k) => k !== unknown));
  if (unknown >= 0) dims[unknown] = known === 0 ? 0 : elementsOf(x.dims) / known;
  if (dims.some((d) => d === undefined || !Number.isInteger(d) || d < 0) || elementsOf(dims) !== elementsOf(x.dims)) {
    throw new UnboundedGraphError(`cannot reshape [${x.dims.join(", ")}] to [${shape.join(", ")}]`);
  }
  return { dims, dataType: x.dataType, values: x.values };
}

function concat(node: NodeInfo, parts: Value[]): TensorInfo {
  if (parts.length === 0) throw new UnboundedGraphError("no inputs");
  const rank = parts[0].dims.length;
  const axis = normalAxis(intAttribute(node, "axis", 0n), rank);
  const dims = [...parts[0].dims];
  dims[axis] = 0;
  for (const part of parts) {
    if (part.dims.length !== rank || part.dims.some((d, k) => k !== axis && d !== parts[0].dims[k])) {
      throw new UnboundedGraphError("inputs of different shapes");
    }
    dims[axis] += part.dims[axis];
  }
  const values = parts.every((part) => part.values) && rank === 1 ? parts.flatMap((part) => part.values!) : undefined;
  return { dims, dataType: parts[0].dataType, values };
}

function slice(node: NodeInfo, x: Value, inputs: (Value | undefined)[]): TensorInfo {
  const fromInputs = inputs.length > 1;
  const starts = fromInputs ? constant(inputs[1], "starts") : node.attributes.get("starts")?.ints ?? [];
  const ends = fromInputs ? constant(inputs[2], "ends") : node.attributes.get("ends")?.ints ?? [];
  const axes = (fromInputs ? (inputs[3] ? constant(inputs[3], "axes") : null) : node.attributes.get("axes")?.ints) ??
    starts.map((_, k) => BigInt(k));
  const steps = fromInputs && inputs[4] ? constant(inputs[4], "steps") : starts.map(() => 1n);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) {
    throw new UnboundedGraphError("starts, ends, axes and steps differ in length");
  }
  const dims = [...x.dims];
  const ranges: [number, number, number][] = x.dims.map((d) => [0, d, 1]);
  axes.forEach((rawAxis, k) => {
    const axis = normalAxis(rawAxis, x.dims.length);
    const size = x.dims[axis];
    const step = Number(steps[k]);
    if (step === 0) throw new UnboundedGraphError("a step of 0");
    const clampIndex = (raw: bigint, low: number, high: number) => {
      let value = Number(raw < -(2n ** 53n) ? -(2 ** 53) : raw > 2n ** 53n ? 2 ** 53 : raw);
      if (value < 0) value += size;
      return Math.min(Math.max(value, low), high);
    };
    const start = step > 0 ? clampIndex(starts[k], 0, size) : clampIndex(starts[k], -1, size - 1);
    const end = step > 0 ? clampIndex(ends[k], 0, size) : clampIndex(ends[k], -1, size - 1);
    dims[axis] = Math.max(0, Math.ceil((end - start) / step));
    ranges[axis] = [start, end, step];
  });
  let values: bigint[] | undefined;
  if (x.values && x.dims.length === 1) {
    const [start, , step] = ranges[0];
    values = Array.from({ length: dims[0] }, (_, k) => x.values![start + k * step]);
  }
  return { dims, dataType: x.dataType, values };
}

function constantNode(node: NodeInfo): TensorInfo {
  const attributes = node.attributes;
  const tensor = attributes.get("value")?.t;
  if (tensor) return tensor;
  if (attributes.get("value_float")?.f !== undefined) return { dims: [], dataType: FLOAT };
  const ints = attributes.get("value_ints")?.ints;
  if (ints) return { dims: [ints.length], dataType: INT64, values: ints };
  const int = attributes.get("value_int")?.i;
  if (int !== undefined) return { dims: [], dataType: INT64, values: [int] };
  if (attributes.has("value_floats")) {
    throw new UnboundedGraphError("value_floats is not accepted: give the constant as a tensor");
  }
  throw new UnboundedGraphError("a Constant without a value this check accepts");
}

function split(node: NodeInfo, x: Value, sizesInput: Value | undefined): TensorInfo[] {
  const axis = normalAxis(intAttribute(node, "axis", 0n), x.dims.length);
  const given = node.attributes.get("split")?.ints ?? (sizesInput ? constant(sizesInput, "split") : null);
  const count = given?.length ?? Number(intAttribute(node, "num_outputs", BigInt(node.outputs.length)));
  const size = x.dims[axis];
  const sizes = given
    ? given.map(Number)
    : Array.from({ length: count }, (_, k) =>
      Math.min(Math.ceil(size / count), Math.max(0, size - k * Math.ceil(size / count))));
  if (sizes.reduce((sum, s) => sum + s, 0) !== size || sizes.some((s) => s < 0)) {
    throw new UnboundedGraphError(`split sizes do not add up to ${size}`);
  }
  return sizes.map((s) => ({ dims: x.dims.map((d, k) => k === axis ? s : d), dataType: x.dataType }));
}
