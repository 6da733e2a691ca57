/**
 * The console's device chart: a day of one device's 1 Hz readings (8 sensors) downsampled in the
 * store by `GET /v1/devices/{device}/series` (600 buckets, what the chart asks for), timed on the
 * real program once its per-minute rollups have caught up, next to the 250 ms it may take here
 * (1 s on a Raspberry Pi class device, about 4 times slower), next to the raw libSQL scan of the
 * same rows (`SELECT values_json ...`) measured in the same run, and next to the same series from
 * the readings alone (a database whose rollups are not built yet, e.g. right after an upgrade).
 */
import { postJson, startOutpost, writeManifest } from "../helpers/outpost_process.ts";
import { query } from "../helpers/db.ts";
import { openDatabase } from "../../src/store/database.ts";
import { createLogger } from "../../src/observability/log.ts";
import { readingSeries } from "../../src/store/reading_series.ts";
import { join } from "node:path";

export async function benchConsole(options: { hours: number; runs: number }): Promise<void> {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { logLevel: "warn", detection: ["enabled: false"] }),
  );
  const readings = options.hours * 3_600;
  const start = Date.parse("2026-11-22T00:00:00Z");
  const range = { device: "pump-1", fromTs: start, toTs: start + readings * 1_000, buckets: 600, maxSensors: 64 };
  const median = (times: number[]) => times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
  try {
    for (let i = 0; i < readings; i += 500) {
      const batch = Array.from({ length: Math.min(500, readings - i) }, (_, k) => {
        const t = i + k;
        const values: Record<string, number> = {};
        for (let s = 0; s < 8; s++) values[`sensor_${s}`] = Math.sin(t / 600 + s) * 10 + s;
        return { device: "pump-1", ts: start + t * 1_000, values };
      });
      const response = await postJson(`${outpost.url}/v1/readings`, { readings: batch });
      if (response.status !== 202) throw new Error(`ingest: ${response.status} ${await response.text()}`);
      await response.body?.cancel();
    }
    const ingested = performance.now();
    while (true) {
      const [row] = await query(
        outpost.dataDir,
        "SELECT (SELECT position FROM cursors WHERE name = 'rollup') AS folded, (SELECT max(id) FROM readings) AS last",
      );
      if (Number(row.folded) === Number(row.last)) break;
      if (performance.now() - ingested > 120_000) throw new Error(`rollups stuck at ${row.folded} of ${row.last}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const caughtUp = performance.now() - ingested;
    const url = `${outpost.url}/v1/devices/pump-1/series?from=${range.fromTs}&to=${range.toTs}&buckets=600`;
    const times: number[] = [];
    for (let run = 0; run < options.runs; run++) {
      const began = performance.now();
      const response = await fetch(url);
      await response.json();
      times.push(performance.now() - began);
    }
    await outpost.stop();
    const database = await openDatabase(join(dir, "data"), createLogger("error", () => {}));
    const began = performance.now();
    const scanned = await database.client.execute({
      sql: "SELECT values_json FROM readings WHERE device = ? AND ts >= ? AND ts < ?",
      args: ["pump-1", range.fromTs, range.toTs],
    });
    const scan = performance.now() - began;
    // The same series with no rollup built: every reading is above the rollups' cursor.
    await database.client.batch([
      "DELETE FROM rollup_sensors",
      "DELETE FROM rollup_minutes",
      "DELETE FROM cursors WHERE name = 'rollup'",
    ], "write");
    const rawTimes: number[] = [];
    for (let run = 0; run < Math.min(options.runs, 3); run++) {
      const rawBegan = performance.now();
      await readingSeries(database.client, range);
      rawTimes.push(performance.now() - rawBegan);
    }
    database.close();
    console.log(
      `series of ${options.hours} h at 1 Hz (${readings.toLocaleString("en")} readings x 8 sensors, 600 buckets)  ` +
        `median ${median(times).toFixed(0)} ms of ${options.runs} (limit 250 ms here, 1,000 ms on a Pi class device; ` +
        `raw libSQL scan of the rows ${scan.toFixed(0)} ms, ${scanned.rows.length.toLocaleString("en")} rows; ` +
        `from the readings alone, before rollups are built, ${median(rawTimes).toFixed(0)} ms)`,
    );
    console.log(
      `per-minute rollups caught up ${caughtUp.toFixed(0)} ms after the last acknowledged batch ` +
        `(folded behind the writer; a series reads what is not folded yet raw)`,
    );
  } finally {
    await outpost.stop().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await benchConsole({ hours: 24, runs: 5 });
