import assert from "node:assert/strict";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

async function get(url: string) {
  const response = await fetch(url);
  const text = await response.text();
  return { status: response.status, type: response.headers.get("content-type") ?? "", body: JSON.parse(text) };
}

Deno.test("GET /v1/devices pages in device order with limit and nextCursor; bad limits and cursors are 400", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const names = Array.from({ length: 1000 }, (_, i) => `dev-${String(i).padStart(4, "0")}-é`);
    for (let i = 0; i < names.length; i += 250) {
      const readings = names.slice(i, i + 250).map((device) => ({ device, ts: 1_763_805_600_000, values: { a: 1 } }));
      const response = await postJson(`${outpost.url}/v1/readings`, { readings });
      assert.equal(response.status, 202);
      await response.body?.cancel();
    }
    const first = await eventually(
      () => get(`${outpost.url}/v1/devices`),
      (page) => page.body.devices?.[0]?.calibration?.collected === 1,
    );
    assert.equal(first.body.devices.length, 100, "100 by default");
    assert.equal(typeof first.body.nextCursor, "string");

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor ? `?limit=300&cursor=${cursor}` : "?limit=300";
      const page = await get(`${outpost.url}/v1/devices${query}`);
      assert.equal(page.status, 200);
      assert.ok(page.body.devices.length <= 300);
      seen.push(...page.body.devices.map((d: { device: string }) => d.device));
      cursor = page.body.nextCursor;
    } while (cursor);
    assert.deepEqual(seen, [...names].sort(), "every device once, in order");

    const started = performance.now();
    const all = await get(`${outpost.url}/v1/devices?limit=1000`);
    const ms = performance.now() - started;
    assert.deepEqual([all.body.devices.length, all.body.nextCursor], [1000, null]);
    assert.ok(ms < 1_000, `a page of 1000 devices took ${ms} ms`);
    console.log(`GET /v1/devices?limit=1000 with 1000 devices: ${ms.toFixed(1)} ms`);

    for (
      const bad of [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "cursor=!!!",
        "cursor=%%",
        `cursor=${"9".repeat(400)}`,
        "cursor=_w",
      ]
    ) {
      const refused = await get(`${outpost.url}/v1/devices?${bad}`);
      assert.equal(refused.status, 400, bad);
      assert.match(refused.type, /application\/json/, bad);
      assert.equal(refused.body.error, "bad_request", bad);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GET /v1/readings answers 400 JSON for any malformed cursor, from or to, never 500", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const response = await postJson(`${outpost.url}/v1/readings`, {
      device: "d",
      ts: 1_763_805_600_000,
      values: { a: 1 },
    });
    await response.body?.cancel();
    const bad = [
      "cursor=!!!",
      "cursor=%%",
      `cursor=${"1".repeat(400)}`,
      "cursor=AAAA",
      "cursor=LTE",
      "cursor=MS41",
      "cursor=OTk5OTk5OTk5OTk5OTk5OTk5",
      "cursor=MQ==",
      "from=yesterday",
      `from=${"9".repeat(400)}`,
      "to=2026-02-30T00:00:00Z",
      "limit=-1",
    ];
    for (const query of bad) {
      const refused = await get(`${outpost.url}/v1/readings?device=d&${query}`);
      assert.equal(refused.status, 400, query);
      assert.match(refused.type, /application\/json/, query);
      assert.equal(refused.body.error, "bad_request", query);
    }
    const page = await get(`${outpost.url}/v1/readings?device=d&limit=1`);
    assert.equal(page.status, 200);
    const next = await get(`${outpost.url}/v1/readings?device=d&limit=1&cursor=${page.body.nextCursor}`);
    assert.deepEqual([next.status, next.body.readings, next.body.nextCursor], [200, [], null]);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
