import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { boundGraph, TensorBytesExceededError, UnboundedGraphError } from "../src/detect/onnx_graph_bound.ts";
import { readModelInfo, TooManyNodesError } from "../src/detect/onnx_graph_reader.ts";
import { MalformedProtobufError } from "../src/detect/onnx_external_data.ts";
import { encodeBase64 } from "./helpers/base64.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import {
  exportedWindowModel,
  HOSTILE_MODELS,
  liarInitializerModel,
  longChainModel,
  UNBOUNDED_MODELS,
} from "./fixtures/hostile_models.ts";
import { sqrtModel, tinyBundle } from "./fixtures/tiny_models.ts";

const MIB = 1024 * 1024;
const bound = (onnx: Uint8Array, input: string, dims: number[], maxBytes = 16 * MIB, maxNodes = 4096) =>
  boundGraph(readModelInfo(onnx, maxNodes), { name: input, dims }, maxBytes);

Deno.test("models written as exporters write them are bounded, and the bound counts every tensor a run makes", async () => {
  // sqrt model: Sqrt [256, 8] float (8 KiB) then ReduceSum to [256] (1 KiB).
  assert.deepEqual(bound(sqrtModel(8), "x", [256, 8]), {
    tensorBytes: 256 * 8 * 4 + 256 * 4,
    nodes: 2,
    largest: { name: "root", bytes: 8192 },
  });
  // scikit-learn's LinearRegressor (ai.onnx.ml): [N, 1] out.
  assert.equal(bound(linearRegressionOnnx([1, 2, 3], 0), "float_input", [256, 3]).tensorBytes, 256 * 4);

  const window = exportedWindowModel(10, 8, 16);
  const result = bound(window, "window", [256, 10, 8]);
  // Shape (3 int64) + Gather (1) + Concat (2) = 48 bytes; flat, restored, residual, squared 4 x 80 KiB; hidden,
  // active 2 x 16 KiB; error 1 KiB.
  assert.equal(result.tensorBytes, 48 + 4 * 256 * 80 * 4 + 2 * 256 * 16 * 4 + 256 * 4);
  // onnxruntime agrees the model is valid and gives one finite error per row.
  const session = await ort.InferenceSession.create(window);
  try {
    const input = new ort.Tensor("float32", Float32Array.from({ length: 4 * 80 }, (_, k) => k / 100), [4, 10, 8]);
    const output = (await session.run({ window: input })).error;
    assert.deepEqual(output.dims, [4]);
    assert.ok([...(output.data as Float32Array)].every(Number.isFinite));
  } finally {
    await session.release();
  }
});

Deno.test("a model whose run would allocate gigabytes is refused before onnxruntime sees it", () => {
  for (const [what, make] of Object.entries(HOSTILE_MODELS)) {
    const onnx = make(8);
    assert.ok(onnx.length < 500_000, what);
    assert.throws(() => bound(onnx, "x", [256, 8]), TensorBytesExceededError, what);
  }
});

Deno.test("a model that cannot be bounded from its graph is refused with the node and the reason", () => {
  const reasons: Record<string, RegExp> = {
    "a shape computed from the data (NonZero)": /node 0 \(NonZero.*operator NonZero is not accepted/,
    "a Range whose length is read from the input": /operator Range is not accepted/,
    "a subgraph (If)": /attribute then_branch is a subgraph/,
    "an operator of a custom domain": /domain "com.example" is not accepted/,
    "a sparse initializer of [100000, 100000] that onnxruntime would make dense": /Sparse initializers/,
  };
  for (const [what, make] of Object.entries(UNBOUNDED_MODELS)) {
    assert.throws(() => bound(make(8), "x", [256, 8]), (error: Error) => {
      assert.ok(error instanceof UnboundedGraphError, `${what}: ${error}`);
      assert.match(error.message, reasons[what], what);
      return true;
    });
  }
  assert.throws(() => bound(liarInitializerModel(8), "x", [256, 8]), MalformedProtobufError);
  assert.throws(() => bound(sqrtModel(8), "x", [256, 9]), /declared \[N, 8\], the manifest gives \[N, 9\]/);
  assert.throws(() => bound(sqrtModel(8), "input", [256, 8]), /not the manifest's input/);
});

Deno.test("reading a graph stops at the node bound: a long model costs no more than the bound to refuse", () => {
  assert.equal(bound(longChainModel(4, 100), "x", [16, 4], 16 * MIB, 102).nodes, 102);
  const long = longChainModel(4, 200_000);
  const started = performance.now();
  assert.throws(() => readModelInfo(long, 4096), TooManyNodesError);
  assert.ok(performance.now() - started < 500, `${performance.now() - started} ms`);
});

Deno.test("the real program refuses an allocation bomb with 422 naming spec.limits.modelTensorBytes, keeps running, and reports the bound of a model it accepts", async () => {
  const dir = await Deno.makeTempDir();
  const token = "bound-token";
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error" }), {
    env: { OUTPOST_ADMIN_TOKEN: token },
  });
  const upload = async (onnx: Uint8Array, manifest: Record<string, unknown>) => {
    const response = await fetch(`${outpost.url}/v1/models`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ manifest, onnx: encodeBase64(onnx) }),
    });
    return { status: response.status, body: await response.json() };
  };
  try {
    const features = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for (const make of Object.values(HOSTILE_MODELS)) {
      const onnx = make(8);
      const refused = await upload(onnx, tinyBundle(onnx, features, "bomb"));
      assert.equal(refused.status, 422, JSON.stringify(refused.body));
      assert.equal(refused.body.error, "limit_exceeded");
      assert.equal(refused.body.limit, "spec.limits.modelTensorBytes");
    }
    const unbounded = UNBOUNDED_MODELS["a sparse initializer of [100000, 100000] that onnxruntime would make dense"](8);
    const invalid = await upload(unbounded, tinyBundle(unbounded, features, "sparse"));
    assert.equal(invalid.status, 400);
    assert.equal(invalid.body.error, "invalid_model");

    const good = linearRegressionOnnx([1, 2, 3], 0);
    const manifest = { ...tinyBundle(good, ["t", "c", "v"], "linear"), input: "float_input", output: "variable" };
    const accepted = await upload(good, manifest);
    assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
    // spec.detection.batchSize 256 rows of one float32 output.
    assert.deepEqual(accepted.body.bound, { tensorBytes: 1024, nodes: 1, batchSize: 256 });

    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_limit_refusals_total\{limit="spec.limits.modelTensorBytes"\} 4/);
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
