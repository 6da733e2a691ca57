import assert from "node:assert/strict";
import { encodeBase64 } from "./helpers/base64.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings } from "./helpers/replay.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import {
  divideByZeroModel,
  externalDataModel,
  sqrtModel,
  tinyBundle,
  wrongShapeModel,
} from "./fixtures/tiny_models.ts";

const TOKEN = "upload-token";
const env = { OUTPOST_ADMIN_TOKEN: TOKEN };
const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

async function upload(url: string, body: unknown) {
  const response = await fetch(`${url}/v1/models`, {
    method: "POST",
    headers: auth,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Sends raw bytes on a new connection and returns the status code and body of the answer. */
async function rawRequest(port: number, head: string): Promise<{ status: number; body: string }> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await connection.write(new TextEncoder().encode(head));
    let text = "";
    const buffer = new Uint8Array(4096);
    const deadline = setTimeout(() => connection.close(), 5_000);
    try {
      while (!/\r\n\r\n[\s\S]*\}/.test(text)) {
        const read = await connection.read(buffer);
        if (read === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, read));
      }
    } finally {
      clearTimeout(deadline);
    }
    return { status: Number(text.split(" ")[1]), body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } finally {
    try {
      connection.close();
    } catch { /* closed */ }
  }
}

Deno.test("a model upload over spec.limits.modelUploadBytes is refused from its Content-Length before reading, or as it streams", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { limits: ["modelUploadBytes: 65536"], logLevel: "error" }),
    {
      env,
    },
  );
  try {
    const refusal = { error: "limit_exceeded", limit: "spec.limits.modelUploadBytes", max: 65536 };
    // 100 MB announced, not one byte sent: the answer cannot wait for the body.
    const announced = await rawRequest(
      Number(new URL(outpost.url).port),
      `POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\n` +
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert.equal(announced.status, 413);
    assert.deepEqual({ ...JSON.parse(announced.body), message: undefined }, { ...refusal, message: undefined });

    let sent = 0;
    const chunk = new TextEncoder().encode(`{"manifest":{},"onnx":"${"A".repeat(16 * 1024)}`);
    const streamed = await fetch(`${outpost.url}/v1/models`, {
      method: "POST",
      headers: auth,
      body: new ReadableStream({
        pull(controller) {
          if (sent++ < 4096) controller.enqueue(chunk);
          else controller.close();
        },
      }),
    });
    assert.equal(streamed.status, 413);
    assert.equal((await streamed.json()).limit, refusal.limit);
    assert.ok(sent < 1024, `the refusal came after ${sent} of 4096 chunks of 16 KiB`);
    assert.match(
      await (await fetch(`${outpost.url}/metrics`)).text(),
      /outpost_limit_refusals_total\{limit="spec\.limits\.modelUploadBytes"\} 2/,
    );
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("uploads are refused with a reason: not JSON, not base64, external tensor data, non-finite or misshapen outputs", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error" }), { env });
  try {
    const features = ["a", "b"];
    const refused = async (onnx: Uint8Array) =>
      await upload(outpost.url, { manifest: tinyBundle(onnx, features), onnx: encodeBase64(onnx) });

    assert.equal((await upload(outpost.url, "{not json")).body.error, "invalid_upload");
    const notBase64 = await upload(outpost.url, { manifest: tinyBundle(sqrtModel(2), features), onnx: "!!!!" });
    assert.deepEqual([notBase64.status, notBase64.body.error], [400, "invalid_upload"]);
    assert.equal((await upload(outpost.url, { onnx: "AAAA" })).body.error, "invalid_upload");

    const external = await refused(externalDataModel("subgraph"));
    assert.deepEqual([external.status, external.body.error], [400, "invalid_model"]);
    assert.match(external.body.message, /External tensor data is not allowed/);

    const infinite = await refused(divideByZeroModel(2));
    assert.equal(infinite.status, 400);
    assert.match(infinite.body.message, /Model failed its load test: Output score is (Infinity|NaN) for row \d/);
    const misshapen = await refused(wrongShapeModel(2));
    assert.equal(misshapen.status, 400);
    assert.match(misshapen.body.message, /Model failed its load test: Output score has shape \[2\] for 8 rows/);

    // A serializer that escapes "/" and wraps its base64 lines is read as what it means.
    const good = linearRegressionOnnx([1, 2, 3], 0);
    const manifest = { ...tinyBundle(good, ["t", "c", "v"]), input: "float_input", output: "variable" };
    const wrapped = encodeBase64(good).replace(/.{60}/g, "$&\n").replaceAll("/", "\\/");
    const accepted = await upload(
      outpost.url,
      JSON.stringify({ manifest, onnx: "X" }).replace('"X"', JSON.stringify(wrapped).replaceAll("\\\\/", "\\/")),
    );
    assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
    assert.equal(accepted.body.scope, "global");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a model that returns NaN at run time is deactivated for its scope only, stays off after a restart, and a new model restores scoring", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 20 }"], logLevel: "error" });
  let outpost = await startOutpost(manifest, { env });
  const send = async (device: string, from: number, count: number, value: (i: number) => number) => {
    const readings = Array.from({ length: count }, (_, k) => ({
      device,
      ts: 1_763_805_600_000 + (from + k) * 1000,
      values: { a: value(from + k), b: 1 + Math.sin(from + k) },
    }));
    const response = await postJson(`${outpost.url}/v1/readings`, { readings });
    assert.equal(response.status, 202);
    await response.body?.cancel();
  };
  const metric = async (pattern: RegExp) => (await (await fetch(`${outpost.url}/metrics`)).text()).match(pattern)?.[1];
  try {
    await send("steady", 0, 30, (i) => 5 + Math.cos(i));
    await send("odd", 0, 5, (i) => 1 + i);
    const sqrt = sqrtModel(2);
    const own = await upload(outpost.url, {
      manifest: tinyBundle(sqrt, ["a", "b"], "sqrt"),
      onnx: encodeBase64(sqrt),
      device: "odd",
    });
    assert.equal(own.status, 201, JSON.stringify(own.body));
    await send("odd", 5, 5, () => 4);
    await eventually(() => fetchReadings(outpost.url, "odd"), (r) => r.length === 10 && r[9].score !== null);

    await send("odd", 10, 1, () => -1);
    await send("steady", 30, 10, (i) => 5 + Math.cos(i));
    await send("odd", 11, 3, () => 9);
    const odd = await eventually(
      () => fetchReadings(outpost.url, "odd"),
      (r) => r.length === 14 && r[13].flags !== undefined,
    );
    assert.match(odd[10].flags!, /^model deactivated: Output score is NaN for row 0/);
    assert.ok(odd.slice(11).every((r) => r.score === null && /^model deactivated/.test(r.flags!)));
    const steady = await eventually(() => fetchReadings(outpost.url, "steady"), (r) => r[39]?.score !== null);
    assert.ok(steady.slice(20).every((r) => typeof r.score === "number"), "the other device keeps scoring");
    const devices = (await (await fetch(`${outpost.url}/v1/devices`)).json()).devices;
    assert.match(devices.find((d: { device: string }) => d.device === "odd").model.deactivated.reason, /NaN/);
    assert.equal(devices.find((d: { device: string }) => d.device === "steady").model.deactivated, null);
    assert.equal(await metric(/outpost_model_deactivations_total\{cause="not_finite"\} (\d+)/), "1");
    assert.match(
      (await (await fetch(`${outpost.url}/readyz`)).json()).checks.find((c: { name: string }) => c.name === "detection")
        .detail,
      /1 model\(s\) deactivated/,
    );

    await outpost.stop();
    outpost = await startOutpost(manifest, { env });
    await send("odd", 14, 1, () => 9);
    await eventually(() => fetchReadings(outpost.url, "odd"), (r) => r[14]?.flags !== undefined);
    assert.equal(
      await metric(/outpost_model_deactivations_total\{cause="not_finite"\} (\d+)/),
      undefined,
      "not run again",
    );

    const again = await upload(outpost.url, {
      manifest: tinyBundle(sqrt, ["a", "b"], "sqrt", "2"),
      onnx: encodeBase64(sqrt),
      device: "odd",
    });
    assert.equal(again.status, 201);
    await send("odd", 15, 1, () => 16);
    const restored = await eventually(() => fetchReadings(outpost.url, "odd"), (r) => r[15]?.score !== null);
    assert.ok(Math.abs(restored[15].score! - (4 + Math.sqrt(1 + Math.sin(15)))) < 1e-4);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
