/**
 * Reads whose cost a client's data decides stay bounded, against the real program under its V8
 * heap bound (found by an attack on the console's routes, each of which ended the process with
 * "JavaScript out of memory"): a chart of a device that invents new sensor names every reading,
 * sensor names that are Object.prototype's, a page of readings with long names, and a series
 * range past `spec.limits.seriesRangeHours`.
 */
import assert from "node:assert/strict";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

/** Posts `readings` in requests of `per` (each under the 256 KiB body limit). */
async function post(
  url: string,
  device: string,
  readings: { ts: number; values: Record<string, number> }[],
  per = 100,
) {
  for (let i = 0; i < readings.length; i += per) {
    const batch = readings.slice(i, i + per).map((r) => ({ device, ...r }));
    const response = await postJson(`${url}/v1/readings`, { readings: batch });
    if (response.status !== 202) assert.fail(`${response.status} ${await response.text()}`);
    await response.body?.cancel();
  }
}

// deno-lint-ignore no-explicit-any
async function getJson(url: string): Promise<{ status: number; body: any }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.json() };
}

Deno.test("charts and reading pages stay bounded whatever names and sizes a device sends", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const now = Date.now();
    // 4,000 readings in the last 20 minutes, each with 64 sensor names never seen before.
    const churn = Array.from({ length: 4_000 }, (_, i) => ({
      ts: now - 1_200_000 + i * 300,
      values: Object.fromEntries(Array.from({ length: 64 }, (_, j) => [`n${i}-${j}`, j])),
    }));
    await post(outpost.url, "churn", churn);
    const chart = await getJson(`${outpost.url}/v1/devices/churn/series`);
    assert.equal(chart.status, 200, JSON.stringify(chart.body).slice(0, 300));
    assert.equal(chart.body.truncated, true);
    assert.equal(Object.keys(chart.body.sensors).length, 64);
    assert.equal(chart.body.readings.reduce((a: number, b: number) => a + b, 0), 4_000);

    // Sensor names that are also Object.prototype's members.
    await post(outpost.url, "proto", [
      { ts: now - 60_000, values: Object.fromEntries(Array.from({ length: 64 }, (_, j) => [`a${j}`, j])) },
      { ts: now - 30_000, values: { toString: 2, constructor: 3, valueOf: 4 } },
    ]);
    const proto = await getJson(`${outpost.url}/v1/devices/proto/series`);
    assert.equal(proto.status, 200, JSON.stringify(proto.body));

    // 1,500 readings of 64 sensors with 128-character names: about 13 MB of values.
    const long = (j: number) => `${"s".repeat(124)}${String(j).padStart(4, "0")}`;
    const fat = Array.from({ length: 1_500 }, (_, i) => ({
      ts: now - 600_000 + i * 100,
      values: Object.fromEntries(Array.from({ length: 64 }, (_, j) => [long(j), i + j])),
    }));
    await post(outpost.url, "fat", fat, 20);
    let read = 0;
    let pages = 0;
    let cursor: string | null = null;
    do {
      const page: { status: number; body: { readings: unknown[]; nextCursor: string | null } } = await getJson(
        `${outpost.url}/v1/readings?device=fat&limit=10000${cursor ? `&cursor=${cursor}` : ""}`,
      );
      assert.equal(page.status, 200);
      read += page.body.readings.length;
      pages++;
      cursor = page.body.nextCursor;
    } while (cursor !== null && pages < 100);
    assert.equal(read, 1_500);
    assert.ok(pages >= 5, `${pages} pages: a page carries at most 2 MiB of values`);

    // A range past the bound is refused, naming it.
    const week = await getJson(`${outpost.url}/v1/devices/churn/series?from=${now - 9 * 86_400_000}&to=${now}`);
    assert.equal(week.status, 400);
    assert.equal(week.body.limit, "spec.limits.seriesRangeHours");

    const health = await fetch(`${outpost.url}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
