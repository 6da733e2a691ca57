import assert from "node:assert/strict";
import * as api from "../src/console/browser/api.ts";
import * as auditView from "../src/console/browser/audit_view.ts";
import * as charts from "../src/console/browser/charts.ts";
import * as deviceView from "../src/console/browser/device_view.ts";
import * as devicesView from "../src/console/browser/devices_view.ts";
import * as dom from "../src/console/browser/dom.ts";
import * as eventsView from "../src/console/browser/events_view.ts";
import * as overviewView from "../src/console/browser/overview_view.ts";
import * as router from "../src/console/browser/router.ts";
import { BROWSER_PARTS } from "../src/console/script.ts";
import { vendorSource } from "../src/console/vendor_build.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { replay } from "./helpers/replay.ts";

const PAGE_WEIGHT_LIMIT = 200 * 1024;

Deno.test("the console's script holds every function of src/console/browser/, and its uPlot is the locked package's", async () => {
  const modules = [api, auditView, charts, deviceView, devicesView, dom, eventsView, overviewView, router];
  const exported = modules.flatMap((module) =>
    Object.entries(module).filter(([, value]) => typeof value === "function").map(([name]) => name)
  );
  assert.deepEqual(BROWSER_PARTS.map((part) => part.name).sort(), exported.sort());
  const vendored = await Deno.readTextFile(new URL("../src/console/vendor_uplot.ts", import.meta.url));
  assert.equal(vendored, await vendorSource(), "run `deno task console-vendor`");
});

Deno.test("GET / serves the console under a strict CSP: no inline script or style, every asset from this origin, under 200 KB gzip", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const page = await fetch(`${outpost.url}/`);
    assert.equal(page.status, 200);
    const csp = page.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
    const html = await page.text();
    assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)[^>]*>/, "a script without src");
    assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i, "inline style or handler");
    const assets = [...html.matchAll(/(?:src|href)="([^"#]+)"/g)].map((match) => match[1]).filter((u) =>
      u !== "data:,"
    );
    assert.deepEqual(assets.sort(), [
      "/console/console.css",
      "/console/console.js",
      "/console/uplot.css",
      "/console/uplot.js",
    ]);
    let gzipBytes = (await (await fetch(`${outpost.url}/`, { headers: { "accept-encoding": "gzip" } })).arrayBuffer())
      .byteLength;
    for (const asset of assets) {
      const plain = await fetch(`${outpost.url}${asset}`, { headers: { "accept-encoding": "identity" } });
      assert.equal(plain.status, 200, asset);
      const text = await plain.text();
      const zipped = await fetch(`${outpost.url}${asset}`, { headers: { "accept-encoding": "gzip" } });
      // fetch decodes gzip itself; the raw size is what the header says.
      assert.equal(zipped.headers.get("content-encoding"), "gzip", asset);
      const raw = Number(zipped.headers.get("content-length"));
      await zipped.body?.cancel();
      assert.ok(raw > 0 && raw < text.length, asset);
      gzipBytes += raw;
      const etag = plain.headers.get("etag")!;
      const again = await fetch(`${outpost.url}${asset}`, { headers: { "if-none-match": etag } });
      assert.equal(again.status, 304, asset);
    }
    assert.ok(gzipBytes <= PAGE_WEIGHT_LIMIT, `page weight ${gzipBytes} bytes gzip`);
    console.log(`console page weight: ${(gzipBytes / 1024).toFixed(1)} KiB gzip (limit 200 KiB)`);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GET /v1/devices/{device}/series gives each sensor's min and max per bucket, the highest score, and refuses bad ranges", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn", detection: ["enabled: false"] }));
  try {
    const start = Date.parse("2026-11-22T00:00:00Z");
    // One hour at 1 Hz: temperature rises 0..3599, vibration alternates +-(t % 7).
    const readings = Array.from({ length: 3600 }, (_, t) => ({
      ts: start + t * 1000,
      values: { temperature: t, vibration: (t % 2 ? -1 : 1) * (t % 7) },
    }));
    await replay(outpost.url, "line 1/pump", readings);
    const url = `${outpost.url}/v1/devices/${encodeURIComponent("line 1/pump")}/series`;
    const response = await fetch(`${url}?from=${start}&to=${start + 3_600_000}&buckets=60`);
    assert.equal(response.status, 200);
    const series = await response.json();
    assert.equal(series.bucketMs, 60_000);
    assert.equal(series.ts.length, 60);
    assert.deepEqual(series.readings, Array(60).fill(60));
    for (let bucket = 0; bucket < 60; bucket++) {
      const inBucket = readings.slice(bucket * 60, bucket * 60 + 60);
      assert.equal(series.sensors.temperature.min[bucket], bucket * 60);
      assert.equal(series.sensors.temperature.max[bucket], bucket * 60 + 59);
      assert.equal(series.sensors.vibration.min[bucket], Math.min(...inBucket.map((r) => r.values.vibration)));
      assert.equal(series.sensors.vibration.max[bucket], Math.max(...inBucket.map((r) => r.values.vibration)));
    }
    assert.deepEqual(series.score, Array(60).fill(null));
    assert.deepEqual(series.events, []);

    const partial = await (await fetch(`${url}?from=${start + 1_800_000}&to=${start + 7_200_000}&buckets=2`)).json();
    assert.deepEqual([partial.ts.length, partial.readings], [1, [1800]]);
    for (const query of ["from=10&to=5", "buckets=0", "buckets=2001", "from=yesterday"]) {
      const refused = await fetch(`${url}?${query}`);
      assert.equal(refused.status, 400, query);
      assert.equal((await refused.json()).error, "bad_request", query);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
