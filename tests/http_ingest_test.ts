import assert from "node:assert/strict";
import { storedReadings } from "./helpers/db.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const reading = (device: string, ts: number | string, values: Record<string, number> = { temperature: 71.2 }) => ({
  device,
  ts,
  values,
});

Deno.test("HTTP ingest stores a batch and answers 202 only after the commit", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir));
  try {
    const body = {
      readings: [
        reading("pump-7", "2026-11-22T10:00:00.000Z", { temperature: 71.2, "Volume Flow RateRMS": 32.1 }),
        reading("pump 8 (east)", 1_763_805_600_123, { vibration: -0.5 }),
      ],
    };
    const response = await postJson(`${outpost.url}/v1/readings`, body);
    assert.equal(response.status, 202);
    assert.deepEqual(await response.json(), { accepted: 2, duplicates: 0 });
    const stored = await storedReadings(outpost.dataDir);
    assert.deepEqual(stored, [
      { device: "pump-7", ts: Date.parse("2026-11-22T10:00:00.000Z"), values: body.readings[0].values },
      { device: "pump 8 (east)", ts: 1_763_805_600_123, values: { vibration: -0.5 } },
    ]);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HTTP ingest accepts a single reading object and stores a re-sent reading once", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir));
  try {
    const single = reading("pump-7", "2026-11-22T10:00:00+01:00");
    const first = await postJson(`${outpost.url}/v1/readings`, single);
    assert.deepEqual([first.status, await first.json()], [202, { accepted: 1, duplicates: 0 }]);
    const again = await postJson(`${outpost.url}/v1/readings`, {
      readings: [single, reading("pump-7", 1_763_900_000_000)],
    });
    assert.deepEqual([again.status, await again.json()], [202, { accepted: 2, duplicates: 1 }]);
    const stored = await storedReadings(outpost.dataDir);
    assert.deepEqual(stored.map((row) => row.ts), [Date.parse("2026-11-22T09:00:00Z"), 1_763_900_000_000]);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HTTP ingest refuses bad input with a JSON error and stores nothing from that request", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { bodyLimitBytes: 4096 }));
  const url = `${outpost.url}/v1/readings`;
  try {
    const good = reading("pump-7", "2026-11-22T10:00:00Z");
    const cases: { body: unknown; path: string }[] = [
      {
        body: { readings: [good, good, good, reading("p", 1_763_805_600_000, { temp: "71" as unknown as number })] },
        path: "readings[3].values.temp",
      },
      { body: { readings: [good], extra: 1 }, path: "extra" },
      { body: { readings: [{ ts: "2026-11-22T10:00:00Z", values: { a: 1 } }] }, path: "readings[0].device" },
      { body: { readings: [reading("p", "yesterday")] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", 1_763_805_600)] }, path: "readings[0].ts" },
      { body: { readings: [reading("x".repeat(129), 1_763_805_600_000)] }, path: "readings[0].device" },
      { body: { readings: [reading("p", 1_763_805_600_000, {})] }, path: "readings[0].values" },
      { body: '{"device":"p","ts":1763805600000,"values":{"a":1e999}}', path: "values.a" },
      { body: { readings: [] }, path: "readings" },
      { body: { readings: [reading("p", "1969-12-31T23:59:59Z")] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", -1)] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", "2026-02-30T10:00:00Z")] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", "2026-11-22T24:00:00Z")] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", "2026-11-22T10:00:00.0001Z")] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", 1e20)] }, path: "readings[0].ts" },
      { body: { readings: [reading("p", Date.now() + 3_600_000)] }, path: "readings[0].ts" },
      { body: '{"device":"p","ts":1763805600000,"values":{"a":1,"__proto__":2}}', path: "values.__proto__" },
      { body: '{"device":"p\\ud800","ts":1763805600000,"values":{"a":1}}', path: "device" },
      { body: '{"device":"p","ts":1763805600000,"values":{"\\udc00":1}}', path: "values.\udc00" },
    ];
    for (const { body, path } of cases) {
      const response = await postJson(url, body);
      const answer = await response.json();
      assert.equal(response.status, 400, JSON.stringify(body).slice(0, 200));
      assert.equal(answer.error, "invalid_readings");
      assert.ok(answer.issues.some((issue: { path: string }) => issue.path === path), JSON.stringify(answer));
    }
    const nan = await postJson(url, '{"device":"p","ts":1763805600000,"values":{"a":NaN}}');
    assert.deepEqual([nan.status, (await nan.json()).error], [400, "invalid_json"]);
    const wrongType = await postJson(url, good, "text/plain");
    assert.deepEqual([wrongType.status, (await wrongType.json()).error], [415, "unsupported_media_type"]);
    const tooLarge = await postJson(url, {
      readings: Array.from({ length: 200 }, (_, i) => reading("p", 1_763_805_600_000 + i)),
    });
    assert.deepEqual(
      [tooLarge.status, await tooLarge.json()],
      [413, {
        error: "limit_exceeded",
        limit: "spec.api.bodyLimitBytes",
        max: 4096,
        message: "Body is larger than 4096 bytes",
      }],
    );
    assert.deepEqual(await storedReadings(outpost.dataDir), []);
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    for (const key of ["spec.limits.nameLength", "spec.limits.maxClockSkewSeconds", "spec.api.bodyLimitBytes"]) {
      assert.match(metrics, new RegExp(`outpost_limit_refusals_total\\{limit="${key}"\\} 1\\b`), key);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HTTP ingest answers 503 with Retry-After once the store reaches its hard limit", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { maxSizeMB: 0.2, bodyLimitBytes: 1024 * 1024 }));
  try {
    let status = 202;
    let retryAfter: string | null = null;
    for (let batch = 0; batch < 200 && status === 202; batch++) {
      const readings = Array.from({ length: 100 }, (_, i) => reading("p", 1_763_805_600_000 + batch * 100 + i));
      const response = await postJson(`${outpost.url}/v1/readings`, { readings });
      status = response.status;
      retryAfter = response.headers.get("retry-after");
      await response.body?.cancel();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(status, 503);
    assert.equal(retryAfter, "5");
    const ready = await fetch(`${outpost.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(JSON.stringify(await ready.json()), /store full/);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
