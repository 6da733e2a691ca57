/** Model bundles sealed at rest with the store's key (src/detect/bundle_seal.ts), on real files. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BundleSealer, SealedBundleError } from "../src/detect/bundle_seal.ts";
import { checkBundle, ModelBundleError, readBundle, writeBundle } from "../src/detect/model_bundle.ts";
import { sqrtModel, tinyBundle } from "./fixtures/tiny_models.ts";

const SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef";
const onnx = sqrtModel(2);
const bundle = checkBundle(tinyBundle(onnx, ["pump-7-pressure", "pump-7-flow"], "baseline_pump-7"), onnx);

function contains(haystack: Uint8Array, needle: string): boolean {
  return new TextDecoder("latin1").decode(haystack).includes(needle);
}

Deno.test("a sealed bundle reads back whole with the key and shows nothing of itself without it", async () => {
  const dir = await Deno.makeTempDir();
  const sealer = await BundleSealer.fromSecret(SECRET);
  const path = join(dir, await BundleSealer.opaqueName("baseline_pump-7-1"));
  assert.ok(!path.includes("pump"), path);
  await writeBundle(path, bundle, sealer);
  for (const file of ["model.json", "model.onnx"]) {
    const bytes = await Deno.readFile(join(path, file));
    assert.ok(!contains(bytes, "pump-7") && !contains(bytes, "threshold"), `${file} is sealed`);
  }
  const read = await readBundle(path, sealer);
  assert.deepEqual(read.manifest, bundle.manifest);
  assert.deepEqual(new Uint8Array(read.onnx), new Uint8Array(bundle.onnx));

  // Without a sealer, with another key, or with the two files swapped: refused by name.
  await assert.rejects(readBundle(path), (error: Error) => {
    assert.ok(error instanceof ModelBundleError);
    return /sealed with a database key/.test(JSON.stringify((error as ModelBundleError).issues));
  });
  await assert.rejects(readBundle(path, await BundleSealer.fromSecret(SECRET.replace("0", "1"))), ModelBundleError);
  const json = await Deno.readFile(join(path, "model.json"));
  await Deno.writeFile(join(path, "model.json"), await Deno.readFile(join(path, "model.onnx")));
  await Deno.writeFile(join(path, "model.onnx"), json);
  await assert.rejects(readBundle(path, sealer), ModelBundleError);
  await assert.rejects(
    sealer.open("model.json", json.map((b, i) => i === json.length - 1 ? b ^ 1 : b)),
    SealedBundleError,
  );
});

Deno.test("a bundle written in clear (before encryption was turned on) still reads with a sealer", async () => {
  const dir = await Deno.makeTempDir();
  await writeBundle(join(dir, "plain"), bundle);
  assert.ok(contains(await Deno.readFile(join(dir, "plain", "model.json")), "pump-7"));
  const read = await readBundle(join(dir, "plain"), await BundleSealer.fromSecret(SECRET));
  assert.deepEqual(read.manifest, bundle.manifest);
});
