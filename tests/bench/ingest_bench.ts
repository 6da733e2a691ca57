/**
 * Ingest benchmark: readings/s for HTTP batches, single-reading requests and MQTT QoS 1, each
 * next to the raw libSQL ceiling (the same rows as multi-row INSERTs) measured in the same run;
 * idle and peak RSS of the Outpost process; startup to /readyz 200.
 */
import type { Client } from "@libsql/client";
import { openDatabase } from "../../src/store/database.ts";
import { createLogger } from "../../src/observability/log.ts";
import { startBroker } from "../helpers/broker.ts";
import { query } from "../helpers/db.ts";
import { connectPublisher } from "../helpers/mqtt_publisher.ts";
import { startOutpost, waitForMqttIngest, waitForReady, writeManifest } from "../helpers/outpost_process.ts";
import { mb, processMemory } from "./process_memory.ts";

export interface IngestBenchOptions {
  /** Seconds each HTTP load phase runs. */
  seconds: number;
  /** MQTT messages published. */
  mqttMessages: number;
  /** Rows for the raw ceiling. */
  rawRows: number;
  startupRuns: number;
}

const SENSORS = ["temperature", "pressure", "flow", "vibration_x", "vibration_y", "vibration_z", "current", "rpm"];
const BASE_TS = 1_763_805_600_000;

export function makeReading(device: string, ts: number) {
  const values: Record<string, number> = {};
  for (const [i, sensor] of SENSORS.entries()) {
    values[sensor] = Math.round((50 + i * 3 + Math.sin(ts / 1000)) * 100) / 100;
  }
  return { device, ts, values };
}

/** Raw ceiling: multi-row INSERTs of 500 rows straight into a libSQL file with Outpost's schema and pragmas. */
async function rawCeiling(rows: number): Promise<number> {
  const dir = await Deno.makeTempDir();
  const database = await openDatabase(dir, createLogger("error", () => {}));
  const rate = await rawInsertRate(database.client, rows);
  database.close();
  await Deno.remove(dir, { recursive: true });
  return rate;
}

/** Rows per second of multi-row INSERTs (500 rows each, 5,000 per commit) into `client`'s readings table. */
export async function rawInsertRate(client: Client, rows: number): Promise<number> {
  const perStatement = 500;
  const perCommit = 5_000;
  const started = performance.now();
  for (let done = 0; done < rows; done += perCommit) {
    const statements = [];
    for (let offset = 0; offset < perCommit; offset += perStatement) {
      const args: (string | number)[] = [];
      for (let i = 0; i < perStatement; i++) {
        const reading = makeReading(`raw-${i % 10}`, BASE_TS + done + offset + i);
        args.push(reading.device, reading.ts, JSON.stringify(reading.values), "raw", Date.now());
      }
      statements.push({
        sql: `INSERT OR IGNORE INTO readings (device, ts, values_json, source, received_ms) VALUES ${
          "(?,?,?,?,?),".repeat(perStatement).slice(0, -1)
        }`,
        args,
      });
    }
    await client.batch(statements, "write");
  }
  return rows / ((performance.now() - started) / 1000);
}

export async function httpLoad(url: string, seconds: number, batchSize: number, concurrency: number, tag: string) {
  let sent = 0;
  let failed = 0;
  let sequence = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  // Bodies are spliced from pre-serialised parts so that the load generator stays cheap.
  const [head, tail] = JSON.stringify(makeReading("DEVICE", 0)).split('"ts":0');
  const worker = async (w: number) => {
    const prefix = head.replace("DEVICE", `${tag}-${w}`) + '"ts":';
    while (performance.now() < deadline) {
      const parts: string[] = [];
      for (let i = 0; i < batchSize; i++) parts.push(prefix + (BASE_TS + sequence++) + tail);
      const response = await fetch(`${url}/v1/readings`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: batchSize === 1 ? parts[0] : `{"readings":[${parts.join(",")}]}`,
      });
      await response.body?.cancel();
      if (response.status === 202) sent += batchSize;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return { rate: sent / ((performance.now() - started) / 1000), failed };
}

export async function mqttLoad(dataDir: string, brokerUrl: string, messages: number) {
  const publisher = await connectPublisher(brokerUrl);
  const before = Number((await query(dataDir, "SELECT count(*) AS n FROM readings WHERE source = 'mqtt'"))[0].n);
  const started = performance.now();
  const inFlight = 500;
  let next = 0;
  const worker = async () => {
    while (next < messages) {
      const i = next++;
      const reading = makeReading(`mqtt-${i % 10}`, BASE_TS + i);
      await publisher.publish(
        `outpost/mqtt-${i % 10}/readings`,
        JSON.stringify({ ts: reading.ts, values: reading.values }),
      );
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  while (true) {
    const count = Number((await query(dataDir, "SELECT count(*) AS n FROM readings WHERE source = 'mqtt'"))[0].n);
    if (count - before >= messages) break;
    if (performance.now() - started > 120_000) throw new Error(`MQTT: only ${count - before} of ${messages} stored`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const rate = messages / ((performance.now() - started) / 1000);
  await publisher.close();
  return rate;
}

async function startupTime(runs: number): Promise<number[]> {
  const times: number[] = [];
  for (let run = 0; run < runs; run++) {
    const dir = await Deno.makeTempDir();
    const manifest = await writeManifest(dir, { logLevel: "warn" });
    const started = performance.now();
    const outpost = await startOutpost(manifest, { waitReady: false });
    await waitForReady(outpost.url, outpost.process.status);
    times.push(performance.now() - started);
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
  return times.sort((a, b) => a - b);
}

export async function benchIngest(options: IngestBenchOptions): Promise<void> {
  const raw = await rawCeiling(options.rawRows);
  console.log(`raw libSQL multi-row INSERT ceiling     ${Math.round(raw).toLocaleString("en")} rows/s`);

  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  // The ingest path alone: detection (which scores every reading on the same thread) is measured
  // separately below and in the Detection section.
  const outpost = await startOutpost(
    await writeManifest(dir, { mqttUrl: broker.url, logLevel: "warn", detection: ["enabled: false"] }),
  );
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const idle = await processMemory(outpost.process.pid);
    const batched = await httpLoad(outpost.url, options.seconds, 100, 4, "batch");
    console.log(
      `HTTP batched (100 x 8 values)           ${Math.round(batched.rate).toLocaleString("en")} readings/s ` +
        `(${((batched.rate / raw) * 100).toFixed(0)}% of raw; target >= 50,000)`,
    );
    const afterBatched = await processMemory(outpost.process.pid);
    const single = await httpLoad(outpost.url, options.seconds, 1, 32, "single");
    console.log(
      `HTTP single-reading requests            ${Math.round(single.rate).toLocaleString("en")} readings/s ` +
        `(${((single.rate / raw) * 100).toFixed(1)}% of raw)`,
    );
    const afterSingle = await processMemory(outpost.process.pid);
    await waitForMqttIngest(outpost.url);
    const mqtt = await mqttLoad(outpost.dataDir, broker.url, options.mqttMessages);
    console.log(
      `MQTT QoS 1 via ${broker.kind.padEnd(9)} (1 reading/msg) ${Math.round(mqtt).toLocaleString("en")} messages/s ` +
        `(${((mqtt / raw) * 100).toFixed(1)}% of raw; target >= 10,000)`,
    );
    const loaded = await processMemory(outpost.process.pid);
    console.log(`RSS idle                                ${mb(idle.rss)}`);
    console.log(
      `RSS peak (VmHWM) under load             ${mb(loaded.peak)} (target < 80 MB): after HTTP batched ` +
        `${mb(afterBatched.peak)}, after HTTP single ${mb(afterSingle.peak)}, after MQTT ${mb(loaded.peak)}`,
    );
  } finally {
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
  const detectDir = await Deno.makeTempDir();
  const scored = await startOutpost(await writeManifest(detectDir, { logLevel: "warn" }));
  try {
    const withDetection = await httpLoad(scored.url, options.seconds, 100, 4, "scored");
    console.log(
      `HTTP batched, detection scoring every reading ${
        Math.round(withDetection.rate).toLocaleString("en")
      } readings/s ` +
        `(the scorer shares the event loop; with 10 devices at 1 Hz a site sends 10/s)`,
    );
  } finally {
    await scored.stop();
    await Deno.remove(detectDir, { recursive: true });
  }
  const startup = await startupTime(options.startupRuns);
  console.log(
    `startup to /readyz 200                  median ${startup[Math.floor(startup.length / 2)].toFixed(0)} ms, ` +
      `max ${startup[startup.length - 1].toFixed(0)} ms over ${startup.length} runs (target < 1,500 ms)`,
  );
}
