import assert from "node:assert/strict";
import { join } from "node:path";
import { signFile } from "../src/release/signature.ts";
import { encodeBase64 } from "./helpers/base64.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { newTestKey, type TestKey } from "./helpers/release.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { tinyBundle } from "./fixtures/tiny_models.ts";

/** A model that passes the load test, and its bundle manifest. */
function model(weights: number[], version = "1") {
  const onnx = linearRegressionOnnx(weights, 0);
  return {
    onnx,
    manifest: { ...tinyBundle(onnx, ["t", "c", "v"], "linear", version), input: "float_input", output: "variable" },
  };
}

const TOKEN = "signature-token";
const env = { OUTPOST_ADMIN_TOKEN: TOKEN };
const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

async function upload(url: string, body: unknown) {
  const response = await fetch(`${url}/v1/models`, { method: "POST", headers: auth, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

/** What `outpost sign --kind model model.onnx` writes for these bytes: the text of model.onnx.sig. */
async function signModel(onnx: Uint8Array, key: TestKey): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "model.onnx");
    await Deno.writeFile(file, onnx);
    await signFile(file, key, { kind: "model" });
    return await Deno.readTextFile(`${file}.sig`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A test manifest whose spec.release.trustedKeys holds `keys`. */
async function manifestTrusting(dir: string, keys: TestKey[]): Promise<string> {
  const path = await writeManifest(dir, { logLevel: "error" });
  if (keys.length === 0) return path;
  const lines = ["  release:", "    trustedKeys:"];
  for (const key of keys) lines.push(`      - id: ${key.trusted.id}`, `        publicKey: ${key.publicKey}`);
  await Deno.writeTextFile(path, lines.join("\n") + "\n", { append: true });
  return path;
}

Deno.test("with spec.release.trustedKeys, an uploaded model needs a signature by a trusted key over its bytes", async () => {
  const dir = await Deno.makeTempDir();
  const [trusted, other] = await Promise.all([newTestKey("ops"), newTestKey("stranger")]);
  const outpost = await startOutpost(await manifestTrusting(dir, [trusted]), { env });
  try {
    const { onnx, manifest } = model([1, 2, 3]);
    const body = { manifest, onnx: encodeBase64(onnx) };

    const unsigned = await upload(outpost.url, body);
    assert.equal(unsigned.status, 403, JSON.stringify(unsigned.body));
    assert.equal(unsigned.body.error, "unsigned_model");

    const byStranger = await upload(outpost.url, { ...body, signature: await signModel(onnx, other) });
    assert.equal(byStranger.status, 403, JSON.stringify(byStranger.body));
    assert.equal(byStranger.body.error, "bad_signature");
    assert.equal(byStranger.body.reason, "untrusted_key");

    // A trusted signature of other bytes does not carry over to this model.
    const otherModel = model([1, 2, 4]).onnx;
    const ofOtherBytes = await upload(outpost.url, { ...body, signature: await signModel(otherModel, trusted) });
    assert.equal(ofOtherBytes.status, 403, JSON.stringify(ofOtherBytes.body));
    assert.equal(ofOtherBytes.body.error, "bad_signature");
    assert.equal(ofOtherBytes.body.reason, "tampered");

    const garbage = await upload(outpost.url, { ...body, signature: "not a signature" });
    assert.equal(garbage.status, 403);
    assert.equal(garbage.body.error, "bad_signature");
    assert.equal(garbage.body.reason, "malformed");

    // The .sig as text or as its parsed object.
    const sig = await signModel(onnx, trusted);
    const signed = await upload(outpost.url, { ...body, signature: sig });
    assert.equal(signed.status, 201, JSON.stringify(signed.body));
    assert.equal(signed.body.signature.verified, true);
    assert.equal(signed.body.signature.key, "ops");
    assert.equal(signed.body.signature.name, "model.onnx");
    assert.equal(signed.body.model.version, "1");

    const asObject = await upload(outpost.url, {
      manifest: model([1, 2, 3], "2").manifest,
      onnx: encodeBase64(onnx),
      signature: JSON.parse(sig),
    });
    assert.equal(asObject.status, 201, JSON.stringify(asObject.body));
    assert.equal(asObject.body.signature.key, "ops");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without spec.release.trustedKeys, an unsigned model is accepted and the answer says signatures are not checked", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await manifestTrusting(dir, []), { env });
  try {
    const { onnx, manifest } = model([1, 2, 3]);
    const accepted = await upload(outpost.url, { manifest, onnx: encodeBase64(onnx) });
    assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
    assert.equal(accepted.body.signature.verified, false);
    assert.match(accepted.body.signature.reason, /no spec\.release\.trustedKeys/);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
