import assert from "node:assert/strict";
import { join } from "node:path";
import { selectSensors } from "../src/detect/calibration.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

Deno.test("calibration keeps the sensors every reading carries, in first-reading order, at most the bound, and names the rest", () => {
  const readings = [
    { a: 1, b: 2, c: 3, d: 4, e: "x" },
    { d: 4, c: 3, b: 2, a: 1, z: 9 },
    { a: 1, c: 3, d: 4 },
  ].map((values) => JSON.stringify(values));
  assert.deepEqual(selectSensors(readings, 2), { sensors: ["a", "c"], overLimit: ["d"], incomplete: ["b"] });
  assert.deepEqual(selectSensors(readings, 64), { sensors: ["a", "c", "d"], overLimit: [], incomplete: ["b"] });
});

Deno.test("a device with 300 sensors calibrates on spec.limits.sensorsPerDevice of them without stalling the process", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, {
      limits: ["sensorsPerReading: 300"],
      bodyLimitBytes: 1024 * 1024,
      detection: ["calibration: { readings: 400 }"],
      logLevel: "info",
    }),
  );
  try {
    let seed = 3;
    const random = () => (seed = (seed * 16_807) % 2_147_483_647) / 2_147_483_647;
    const readings = Array.from({ length: 400 }, (_, i) => ({
      device: "wide",
      ts: 1_763_805_600_000 + i * 1000,
      values: Object.fromEntries(Array.from({ length: 300 }, (_, s) => [`s${s}`, 50 + 10 * random()])),
    }));
    let slowest = 0;
    let probing = true;
    const probe = (async () => {
      while (probing) {
        const started = performance.now();
        await (await fetch(`${outpost.url}/healthz`)).body?.cancel();
        slowest = Math.max(slowest, performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    for (let i = 0; i < readings.length; i += 100) {
      const response = await postJson(`${outpost.url}/v1/readings`, { readings: readings.slice(i, i + 100) });
      assert.equal(response.status, 202, await response.text());
    }
    const device = await eventually(
      async () => (await (await fetch(`${outpost.url}/v1/devices`)).json()).devices[0],
      (d) => d?.state === "active",
    );
    probing = false;
    await probe;
    const bundles = join(outpost.dataDir, "models", "calibrated");
    const [bundle] = [...Deno.readDirSync(bundles)].map((entry) => join(bundles, entry.name, "model.json"));
    const manifest = JSON.parse(await Deno.readTextFile(bundle));
    assert.deepEqual(manifest.features, Array.from({ length: 64 }, (_, s) => `s${s}`));
    assert.equal(device.model.version, "cal-1");
    const leftOut = outpost.log().split("\n").find((line) => line.includes("detect.calibration_sensors_left_out"));
    assert.ok(leftOut, "the sensors left out are logged");
    assert.equal(JSON.parse(leftOut).overLimit.count, 236);
    assert.match(
      await (await fetch(`${outpost.url}/metrics`)).text(),
      /outpost_limit_refusals_total\{limit="spec\.limits\.sensorsPerDevice"\} 1/,
    );
    const calibrated = JSON.parse(outpost.log().split("\n").find((line) => line.includes('"detect.calibrated"'))!);
    console.log(
      `calibration of 400 readings x 300 sensors (64 kept): ${calibrated.ms} ms; slowest /healthz meanwhile ${
        slowest.toFixed(0)
      } ms`,
    );
    assert.ok(slowest < 1_500, `/healthz waited ${slowest} ms`);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
