import assert from "node:assert/strict";
import { join } from "node:path";
import { signFile } from "../src/release/signature.ts";
import { withDatabaseFile } from "../src/store/database.ts";
import { snapshotAssignments } from "../src/store/models_table.ts";
import { encodeBase64 } from "./helpers/base64.ts";
import { testKey } from "./helpers/release.ts";
import { drill } from "./helpers/upgrade_drill.ts";
import { install } from "./helpers/upgrade_drill.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { tinyBundle } from "./fixtures/tiny_models.ts";

const TOKEN = "pin-token";

/** Uploads a model signed with the test releases' key (they trust it, so unsigned uploads are refused). */
async function upload(url: string, name: string, intercept: number, device?: string): Promise<string> {
  const onnx = linearRegressionOnnx([1], intercept);
  const manifest = { ...tinyBundle(onnx, ["a"], name), input: "float_input", output: "variable" };
  const dir = await Deno.makeTempDir();
  const file = join(dir, "model.onnx");
  await Deno.writeFile(file, onnx);
  const signature = await signFile(file, await testKey(), { kind: "model" });
  await Deno.remove(dir, { recursive: true });
  const response = await fetch(`${url}/v1/models`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ manifest, onnx: encodeBase64(onnx), signature, ...(device ? { device } : {}) }),
  });
  assert.equal(response.status, 201, await response.text());
  return manifest.sha256;
}

async function assignments(dataDir: string): Promise<Record<string, string>> {
  const rows = await withDatabaseFile({ dataDir, encryptionKey: null }, snapshotAssignments);
  return Object.fromEntries(rows.map((row) => [row.scope, `${row.name}:${row.path}`]));
}

Deno.test("a rollback restores the model assignments of the release it returns to; a missing bundle is reported and its scope left as it is", async () => {
  Deno.env.set("OUTPOST_ADMIN_TOKEN", TOKEN);
  try {
    await drill(async (d) => {
      const dataDir = join(d.dir, "data");
      const gate = ["--root", d.root, "--ready-url", `${d.url}/readyz`, "--ready-timeout", "30"];
      await install(d, await d.release("1.0.0"));
      await upload(d.url, "first", 1);
      const underFirst = await assignments(dataDir);
      assert.deepEqual(Object.keys(underFirst), ["*"]);

      const v110 = await d.release("1.1.0");
      const upgraded = await d.outpost(["upgrade", v110, ...gate]);
      assert.equal(upgraded.code, 0, upgraded.stderr);
      const pin = JSON.parse(await Deno.readTextFile(join(d.root, "releases", "1.1.0", "pin.json")));
      assert.equal(pin.pinnedWhen, "confirmed");
      assert.match(pin.manifestSha256, /^[0-9a-f]{64}$/);
      assert.deepEqual(pin.assignments.map((each: { name: string }) => each.name), ["first"]);

      // Under 1.1.0 the global model changes and a device gets its own, with the same graph as
      // "first" (as every calibrated model shares one): only the name and version tell them apart.
      await upload(d.url, "second", 2);
      await upload(d.url, "own", 1, "pump-7");
      const underSecond = await assignments(dataDir);
      assert.match(underSecond["*"], /^second:/);

      const back = await d.outpost(["rollback", ...gate]);
      assert.equal(back.code, 0, back.stderr);
      assert.equal(await Deno.readLink(join(d.root, "current")), join("releases", "1.0.0"));
      assert.deepEqual(await assignments(dataDir), underFirst, "1.0.0's assignments are back");
      // The running 1.0.0 serves them: a model rollback returns the scope to the newer model.
      const modelRollback = await fetch(`${d.url}/v1/models/rollback`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(modelRollback.status, 200, await modelRollback.text());
      assert.match((await assignments(dataDir))["*"], /^second:/);
      await fetch(`${d.url}/v1/models/rollback`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: "{}",
      }).then((response) => response.body?.cancel());
      assert.deepEqual(await assignments(dataDir), underFirst);

      // Back to 1.1.0: it runs with what it last ran with.
      const again = await d.outpost(["upgrade", v110, ...gate]);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(await assignments(dataDir), underSecond);

      // 1.0.0's bundle is gone from the data dir: reported, and the global scope stays as it is.
      await Deno.remove(underFirst["*"].slice("first:".length), { recursive: true });
      const missing = await d.outpost(["rollback", ...gate]);
      assert.equal(missing.code, 0, missing.stderr);
      const after = await assignments(dataDir);
      assert.match(after["*"], /^second:/, "the scope whose bundle is missing is left as it is");
      assert.equal(after["pump-7"], undefined, "a scope 1.0.0 did not have is unassigned");
      const reported = (await d.history()).filter((line) => line.step === "pinned_model_missing");
      assert.equal(reported.length, 1);
      assert.equal(reported[0].scope, "*");
      assert.match(String(reported[0].reason), /bundle missing or changed/);
    });
  } finally {
    Deno.env.delete("OUTPOST_ADMIN_TOKEN");
  }
});
