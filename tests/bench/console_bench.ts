/**
 * The console's device chart: a day of one device's 1 Hz readings (8 sensors) downsampled in the
 * store by `GET /v1/devices/{device}/series` (600 buckets, what the chart asks for), timed on the
 * real program, next to the 1 s a chart may take to appear on a Raspberry Pi class device, and
 * next to the raw libSQL scan of the same rows (`SELECT values_json ...`) measured in the same run.
 */
import { postJson, startOutpost, writeManifest } from "../helpers/outpost_process.ts";
import { openDatabase } from "../../src/store/database.ts";
import { createLogger } from "../../src/observability/log.ts";
import { join } from "node:path";

export async function benchConsole(options: { hours: number; runs: number }): Promise<void> {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { logLevel: "warn", detection: ["enabled: false"] }),
  );
  const readings = options.hours * 3_600;
  const start = Date.parse("2026-11-22T00:00:00Z");
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
    const url = `${outpost.url}/v1/devices/pump-1/series?from=${start}&to=${start + readings * 1_000}&buckets=600`;
    const times: number[] = [];
    for (let run = 0; run < options.runs; run++) {
      const began = performance.now();
      const response = await fetch(url);
      await response.json();
      times.push(performance.now() - began);
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)];
    await outpost.stop();
    const database = await openDatabase(join(dir, "data"), createLogger("error", () => {}));
    const began = performance.now();
    const scanned = await database.client.execute({
      sql: "SELECT values_json FROM readings WHERE device = ? AND ts >= ? AND ts < ?",
      args: ["pump-1", start, start + readings * 1_000],
    });
    const scan = performance.now() - began;
    database.close();
    console.log(
      `series of ${options.hours} h at 1 Hz (${readings.toLocaleString("en")} readings x 8 sensors, 600 buckets)  ` +
        `median ${median.toFixed(0)} ms of ${options.runs} (limit 1,000 ms on a Pi class device; ` +
        `raw libSQL scan of the rows ${scan.toFixed(0)} ms, ${scanned.rows.length.toLocaleString("en")} rows)`,
    );
  } finally {
    await outpost.stop().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await benchConsole({ hours: 24, runs: 5 });
