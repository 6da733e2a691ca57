import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { type OutpostProcess, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay, type ScoredReading } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const recording = simulateRecording({ seed: 51, fault: "step", calibration: 50, seconds: 300 });

/** Replays the recording in batches of 10 (one scoring pass each, when nothing fails). */
async function replayInSmallBatches(outpost: OutpostProcess, from: number, to: number) {
  for (let i = from; i < to; i += 10) {
    await replay(outpost.url, "pump", recording.readings.slice(i, Math.min(i + 10, to)));
  }
}

async function scoredRun(
  outpost: OutpostProcess,
): Promise<{ rows: ScoredReading[]; events: unknown[]; readings: number }> {
  const rows = await eventually(
    () => fetchReadings(outpost.url, "pump"),
    (r) => r.length === 300 && r[299].score !== null,
  );
  const events = (await (await fetch(`${outpost.url}/v1/events?device=pump`)).json()).events
    .map(({ start, end, readings }: { start: string; end: string; readings: number }) => ({ start, end, readings }));
  const device = (await (await fetch(`${outpost.url}/v1/devices`)).json()).devices[0];
  return { rows, events, readings: device.readings };
}

Deno.test("scoring passes whose commit fails change no device state: after the retry, scores and episodes match an undisturbed run", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const lines = { detection: ["calibration: { readings: 50 }"], logLevel: "error" };
  let outpost = await startOutpost(await writeManifest(dirs[0], lines));
  let reference: Awaited<ReturnType<typeof scoredRun>>;
  try {
    await replayInSmallBatches(outpost, 0, 300);
    reference = await scoredRun(outpost);
  } finally {
    await outpost.stop();
  }
  outpost = await startOutpost(await writeManifest(dirs[1], lines));
  // Fault injection in the real database: while this trigger exists, every commit that moves the
  // score cursor aborts, so each scoring pass fails at its commit, after all its planning.
  const db = createClient({ url: `file:${join(outpost.dataDir, "outpost.db")}` });
  try {
    await replayInSmallBatches(outpost, 0, 100);
    await eventually(() => fetchReadings(outpost.url, "pump"), (r) => r.length === 100 && r[99].score !== null);
    await db.execute(`CREATE TRIGGER fail_scoring BEFORE UPDATE ON cursors WHEN NEW.name = 'score'
                      BEGIN SELECT RAISE(ABORT, 'injected commit failure'); END`);
    await replayInSmallBatches(outpost, 100, 200);
    await eventually(
      async () =>
        (await (await fetch(`${outpost.url}/metrics`)).text()).match(/outpost_inference_errors_total (\d+)/)?.[1],
      (failures) => Number(failures) >= 3,
    );
    assert.ok(
      (await fetchReadings(outpost.url, "pump")).slice(100).every((r) => r.score === null),
      "nothing committed",
    );
    await db.execute("DROP TRIGGER fail_scoring");
    await replayInSmallBatches(outpost, 200, 300);
    const disturbed = await scoredRun(outpost);
    assert.equal(disturbed.readings, 300, "each reading counted once");
    assert.deepEqual(disturbed.events, reference.events);
    for (let i = 0; i < 300; i++) {
      const [got, want] = [disturbed.rows[i], reference.rows[i]];
      assert.equal(got.anomaly, want.anomaly, `reading ${i}`);
      if (want.score === null) assert.equal(got.score, null, `reading ${i}`);
      else {assert.ok(
          Math.abs(got.score! - want.score) <= 1e-5 * Math.max(1, want.score),
          `reading ${i}: ${got.score} vs ${want.score}`,
        );}
    }
  } finally {
    db.close();
    await outpost.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});
