import assert from "node:assert/strict";
import { checkBundle, ModelBundleError } from "../src/detect/model_bundle.ts";
import { externalDataTensors } from "../src/detect/onnx_external_data.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { EXTERNAL_DATA_PLACES, externalDataModel, sqrtModel, tinyBundle } from "./fixtures/tiny_models.ts";

Deno.test("external tensor data is found in initializers, node attributes, subgraphs, sparse initializers and functions", () => {
  const expected: Record<typeof EXTERNAL_DATA_PLACES[number], string[]> = {
    "initializer": ['graph[0].initializer[1] ("w")'],
    "node attribute": ['graph[0].node[0].attribute[0].t[0] ("w_value")'],
    "subgraph": [
      'graph[0].node[1].attribute[0].g[0].initializer[0] ("then_branch_w")',
      'graph[0].node[1].attribute[1].g[0].initializer[0] ("else_branch_w")',
    ],
    "sparse initializer": ['graph[0].sparse_initializer[0].values[0] ("w")'],
    "function": ['functions[0].node[0].attribute[0].t[0] ("w_value")'],
  };
  for (const place of EXTERNAL_DATA_PLACES) {
    const onnx = externalDataModel(place);
    assert.deepEqual(externalDataTensors(onnx), expected[place], place);
    assert.throws(
      () => checkBundle(tinyBundle(onnx, ["a"]), onnx),
      (error: unknown) =>
        error instanceof ModelBundleError && /External tensor data is not allowed/.test(error.message),
      place,
    );
  }
});

Deno.test("models with embedded tensors pass the external-data check; bytes that are not protobuf are refused", () => {
  assert.deepEqual(externalDataTensors(sqrtModel(3)), []);
  assert.deepEqual(externalDataTensors(linearRegressionOnnx([1, 2, 3], 0)), []);
  const garbage = new TextEncoder().encode("not a model at all, just text");
  assert.throws(
    () => checkBundle(tinyBundle(garbage, ["a"]), garbage),
    (error: unknown) => error instanceof ModelBundleError && /not an ONNX model/.test(error.message),
  );
});
