/**
 * calibration.seconds measured on a device clock that steps (issue 10, review item 3), against the
 * real program over loopback: a clock that jumps forward or back during calibration neither ends
 * it early nor keeps it from ending; gaps between readings count only up to a few typical intervals.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay, scoredThrough } from "./helpers/replay.ts";
import { simulateNormalRecording } from "./sim/plant_simulator.ts";

const HOUR_MS = 3_600_000;

async function calibratedOn(dataDir: string, device: string): Promise<number> {
  const root = join(dataDir, "models", "calibrated");
  for (const entry of Deno.readDirSync(root)) {
    const manifest = JSON.parse(await Deno.readTextFile(join(root, entry.name, "model.json")));
    if (manifest.provenance.device === device) return manifest.provenance.readings;
  }
  throw new Error(`no calibrated model for ${device}`);
}

Deno.test("calibration.seconds: a device clock that steps forward or back during calibration counts only the reading time that passed", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { seconds: 60 }"], logLevel: "warn" }),
  );
  try {
    // 75 s at 10 Hz, two days ago; the clock steps after 10 s of readings.
    const startTs = Date.now() - 48 * HOUR_MS;
    const { readings } = simulateNormalRecording({ seed: 43, hours: 75 / 3600, hz: 10, startTs });
    const stepped = (offset: number) =>
      readings.map((reading, i) => ({ ts: reading.ts + (i >= 100 ? offset : 0), values: reading.values }));
    const devices = {
      "clock-forward": stepped(24 * HOUR_MS), // NTP corrects a clock a day behind
      "clock-back": stepped(-HOUR_MS), // a clock an hour ahead is set back
      // Readings stop for 10 minutes (a stop of the line), then go on.
      "paused": stepped(10 * 60_000),
    };
    await Promise.all(Object.entries(devices).map(([device, rows]) => replay(outpost.url, device, rows)));
    for (const [device, rows] of Object.entries(devices)) {
      // Waits until the last reading sent (readings are listed in time order, not sent order) is scored.
      await scoredThrough(outpost.url, device, rows.at(-1)!.ts);
      const scored = (await fetchReadings(outpost.url, device, 10_000)).filter((r) => r.score !== null).length;
      const calibrated = await calibratedOn(outpost.dataDir, device);
      // 60 s at 10 Hz is 600 readings (602 with the gap that does not count), not 101 and not never.
      assert.ok(calibrated >= 599 && calibrated <= 602, `${device}: calibrated on ${calibrated} readings`);
      assert.equal(scored, rows.length - calibrated, `${device}: every reading after calibration is scored`);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
