/**
 * `GET /v1/devices?sort=&order=`: a few hundred devices sorted by name, last seen, latest score
 * and state across pages, against the real program: every device once, in the documented order
 * (ties by name, devices without a key last), and bad parameters refused naming the parameter.
 */
import assert from "node:assert/strict";
import { encodeBase64 } from "./helpers/base64.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { linearRegressionOnnx } from "./fixtures/external_model.ts";
import { tinyBundle } from "./fixtures/tiny_models.ts";

const TOKEN = "device-sort-token";
const DEVICES = 300;
const START = 1_763_805_600_000;

interface Listed {
  device: string;
  state: string;
  lastSeen: string | null;
  latestScore: { score: number } | null;
}

Deno.test("devices sort by name, last seen, latest score and state across pages, each device once", async () => {
  const dir = await Deno.makeTempDir();
  // Devices calibrate for long: the global model scores them all meanwhile (score = sensor a).
  const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 5000 }"], logLevel: "error" });
  const outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } });
  try {
    const onnx = linearRegressionOnnx([1, 0], 0);
    const upload = await fetch(`${outpost.url}/v1/models`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({
        manifest: { ...tinyBundle(onnx, ["a", "b"], "linear"), input: "float_input", output: "variable" },
        onnx: encodeBase64(onnx),
      }),
    });
    assert.equal(upload.status, 201, await upload.text());
    // Last seen and score in orders unlike the names', with ties (every 7th device shares a score).
    const names = Array.from({ length: DEVICES }, (_, i) => `dev-${String(i).padStart(3, "0")}`);
    const seen = (i: number) => START + ((i * 149) % DEVICES) * 1_000;
    const score = (i: number) => i % 7 === 0 ? 5 : (i * 83) % 257;
    const readings = names.map((device, i) => ({ device, ts: seen(i), values: { a: score(i), b: 1 } }));
    const response = await postJson(`${outpost.url}/v1/readings`, { readings });
    assert.equal(response.status, 202);
    await response.body?.cancel();
    await eventually(
      async () => (await (await fetch(`${outpost.url}/v1/devices?limit=1000`)).json()).devices as Listed[],
      (devices) => devices.length === DEVICES && devices.every((d) => d.latestScore !== null),
      30_000,
    );

    const list = async (query: string) => {
      const all: Listed[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const url: string = `${outpost.url}/v1/devices?limit=37&${query}${cursor ? `&cursor=${cursor}` : ""}`;
        const page = await (await fetch(url)).json();
        all.push(...page.devices);
        cursor = page.nextCursor;
        pages++;
      } while (cursor !== null);
      assert.equal(pages, Math.ceil(DEVICES / 37), query);
      return all;
    };
    const byName = (a: number, b: number) => names[a] < names[b] ? -1 : 1;
    const indexes = names.map((_, i) => i);
    const expect = (key: (i: number) => number, order: 1 | -1) =>
      [...indexes].sort((a, b) => (key(a) - key(b)) * order || byName(a, b)).map((i) => names[i]);
    const cases: [string, string[]][] = [
      ["", names],
      ["sort=device&order=desc", [...names].reverse()],
      ["sort=lastSeen&order=desc", expect(seen, -1)],
      ["sort=lastSeen", expect(seen, 1)],
      ["sort=score&order=desc", expect(score, -1)],
      ["sort=score&order=asc", expect(score, 1)],
      ["sort=state&order=desc", names],
    ];
    for (const [query, expected] of cases) {
      const listed = await list(query);
      assert.deepEqual(listed.map((d) => d.device), expected, query);
    }
    const byScore = await list("sort=score&order=desc");
    assert.equal(byScore[0].latestScore?.score, Math.max(...indexes.map(score)));

    // A device with no reading scored yet has no score: it comes last, in either order.
    await (await postJson(`${outpost.url}/v1/readings`, {
      readings: [{ device: "zz-new", ts: START, values: { b: 1 } }],
    })).body?.cancel();
    await eventually(
      async () => (await (await fetch(`${outpost.url}/v1/devices?device=zz-new`)).json()).devices,
      (devices) => devices.length === 1,
    );
    const asc = await (await fetch(`${outpost.url}/v1/devices?limit=1000&sort=score&order=asc`)).json();
    assert.equal(asc.devices.at(-1).device, "zz-new");
    assert.equal(asc.devices.length, DEVICES + 1);

    const first = await (await fetch(`${outpost.url}/v1/devices?limit=5&sort=score`)).json();
    for (
      const [query, param] of [
        ["sort=name", "sort"],
        ["order=up", "order"],
        [`sort=lastSeen&cursor=${first.nextCursor}`, "cursor"],
        [`sort=score&order=desc&cursor=${first.nextCursor}`, "cursor"],
        // The name order's own path: it took another sort's cursor for a device name.
        [`cursor=${first.nextCursor}`, "cursor"],
        ["sort=score&cursor=bm90IGpzb24", "cursor"],
      ]
    ) {
      const refused = await fetch(`${outpost.url}/v1/devices?${query}`);
      assert.equal(refused.status, 400, query);
      assert.match((await refused.json()).message, new RegExp(`\\b${param}\\b`), query);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
