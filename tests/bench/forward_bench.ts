/**
 * Forwarding benchmark: one hour of buffered data from 10 devices at 1 Hz x 8 sensors is ingested
 * while the collector is down, then drained to a loopback collector. Prints the time to drain,
 * items/s and MB/s, for aggregates only (events come with detection) and with raw readings on.
 */
import { Collector } from "../helpers/collector.ts";
import { postJson, startOutpost, writeManifest } from "../helpers/outpost_process.ts";

const SENSORS = ["temperature", "pressure", "flow", "vibration_x", "vibration_y", "vibration_z", "current", "rpm"];
const START = Date.parse("2026-11-22T00:00:00Z");
/** The outage opens the circuit; recovery is noticed at the next half-open probe. */
const CIRCUIT_OPEN_SECONDS = 5;

async function drain(devices: number, seconds: number, raw: boolean) {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create({ up: false });
  const manifest = await writeManifest(dir, {
    egressAllowed: [collector.destination],
    circuitOpenSeconds: CIRCUIT_OPEN_SECONDS,
    forwarding: [
      "aggregateSeconds: 60",
      "graceSeconds: 10",
      "idleCloseSeconds: 1",
      `raw: ${raw}`,
      "backoff: { minMs: 100, maxMs: 200 }",
      `http: { url: "${collector.url}" }`,
    ],
    logLevel: "error",
  });
  const outpost = await startOutpost(manifest);
  try {
    for (let second = 0; second < seconds; second += 10) {
      const readings = [];
      for (let s = second; s < second + 10; s++) {
        for (let d = 0; d < devices; d++) {
          const values: Record<string, number> = {};
          for (const [i, sensor] of SENSORS.entries()) values[sensor] = 50 + i + Math.sin(s / 60 + d);
          readings.push({ device: `device-${d}`, ts: START + s * 1000, values });
        }
      }
      const response = await postJson(`${outpost.url}/v1/readings`, { readings });
      if (response.status !== 202) throw new Error(`ingest failed: ${response.status}`);
      await response.body?.cancel();
    }
    const aggregates = devices * SENSORS.length * Math.ceil(seconds / 60);
    const expected = aggregates + (raw ? devices * seconds : 0);
    // Wait until every window is closed and queued (idle close after 1 s).
    while (true) {
      const status = await (await fetch(`${outpost.url}/v1/status`)).json();
      if (status.forwarding.outbox.items.aggregate >= aggregates) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const started = performance.now();
    collector.start();
    let firstAt = 0;
    while (collector.unique().size < expected) {
      if (firstAt === 0 && collector.batches.length > 0) firstAt = performance.now();
      if (performance.now() - started > 300_000) throw new Error(`only ${collector.unique().size} of ${expected}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const done = performance.now();
    firstAt ||= done;
    return {
      expected,
      recovery: (firstAt - started) / 1000,
      // One batch can carry everything: never report less than a millisecond.
      elapsed: Math.max(0.001, (done - firstAt) / 1000),
      wire: collector.bytes.wire,
      json: collector.bytes.json,
    };
  } finally {
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

export async function benchForward(options: { seconds: number }): Promise<void> {
  const hours = (options.seconds / 3600).toFixed(2);
  for (const raw of [false, true]) {
    const result = await drain(10, options.seconds, raw);
    const label = raw ? "aggregates + raw readings" : "aggregates (+ events)    ";
    console.log(
      `drain ${hours} h of 10 devices x 8 sensors, ${label} ${result.expected.toLocaleString("en")} items in ` +
        `${result.elapsed.toFixed(2)} s after recovery was noticed (${result.recovery.toFixed(1)} s, circuit open ` +
        `${CIRCUIT_OPEN_SECONDS} s): ${Math.round(result.expected / result.elapsed).toLocaleString("en")} items/s, ` +
        `${(result.wire / result.elapsed / 1e6).toFixed(2)} MB/s on the wire (${
          (result.json / result.elapsed / 1e6).toFixed(2)
        } MB/s JSON)` +
        (raw ? "" : " (target < 60 s for 1 h)"),
    );
  }
}
