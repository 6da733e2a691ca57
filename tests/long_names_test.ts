/**
 * The longest names the manifest allows work end to end: a device id of `spec.limits.nameLength`
 * (128) characters with sensors named as long calibrates and is scored (its calibrated model is
 * named `baseline/<device>`, longer than the id: a bundle schema of 128 characters refused it,
 * and the device was never scored).
 */
import assert from "node:assert/strict";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { replay, scoredThrough } from "./helpers/replay.ts";
import { simulateNormalRecording } from "./sim/plant_simulator.ts";

Deno.test("a device id and sensor names of 128 characters calibrate and are scored", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const device = `pump-${"x".repeat(123)}`;
    assert.equal(device.length, 128);
    const long = (name: string) => `${name}-`.padEnd(128, "y");
    const recording = simulateNormalRecording({ seed: 3, hours: 0.2 });
    const readings = recording.readings.slice(0, 420).map((r) => ({
      ts: r.ts,
      values: Object.fromEntries(Object.entries(r.values).map(([name, value]) => [long(name), value])),
    }));
    await replay(outpost.url, device, readings);
    const scored = await scoredThrough(outpost.url, device, readings.at(-1)!.ts);
    assert.equal(typeof scored.latestScore?.score, "number", JSON.stringify(scored));
    assert.doesNotMatch(outpost.log(), /detect\.model_load_failed/);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
