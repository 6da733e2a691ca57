/**
 * Detection benchmark: commit-to-flag latency at 1,000 readings/s; the scorer's throughput next to
 * raw onnxruntime `session.run` on the same model and batch size; calibration time for one device;
 * peak RSS of the whole process with models loaded under ingest load.
 */
import * as ort from "onnxruntime-node";
import { baselineFeeds, scoreBaseline, scoreBaselineColumns } from "../../src/detect/baseline_scoring.ts";
import { calibrate } from "../../src/detect/calibration.ts";
import { Inference } from "../../src/detect/inference.ts";
import { ModelRegistry } from "../../src/detect/registry.ts";
import { Scorer } from "../../src/detect/scorer.ts";
import { createLogger } from "../../src/observability/log.ts";
import { openDatabase } from "../../src/store/database.ts";
import { ReadingWriter } from "../../src/store/reading_writer.ts";
import { DEFAULT_DETECTION as DETECTION } from "../helpers/detection_defaults.ts";
import { postJson, startOutpost, writeManifest } from "../helpers/outpost_process.ts";
import { replay } from "../helpers/replay.ts";
import { simulateRecording } from "../sim/pump_simulator.ts";
import { mb, processMemory } from "./process_memory.ts";

const quiet = createLogger("error", () => {});
/** The default manifest's detection settings. */

export async function latencyAtRate(seconds: number): Promise<{ p50: number; p99: number; rss: number; idle: number }> {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const devices = 10;
    const recordings = Array.from(
      { length: devices },
      (_, d) => simulateRecording({ seed: 500 + d, fault: "step", seconds: 400 + seconds * 100 + 10 }),
    );
    await Promise.all(recordings.map((r, d) => replay(outpost.url, `bench-${d}`, r.readings.slice(0, 400))));
    // Every device calibrated before the load starts: else the first load commits wait behind the
    // calibrations (tens to hundreds of ms on a busy machine) and are counted in the p99.
    for (let polls = 0; polls < 600; polls++) {
      const body = await (await fetch(`${outpost.url}/v1/devices?limit=100`)).json();
      const active = (body.devices as { state: string }[]).filter((device) => device.state === "active").length;
      if (active === devices) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const idle = await processMemory(outpost.process.pid);
    // 1,000 readings/s: every 10 ms one request with one reading from each of 10 devices.
    const started = performance.now();
    for (let tick = 0; tick < seconds * 100; tick++) {
      const readings = recordings.map((r, d) => ({
        device: `bench-${d}`,
        ts: r.readings[400 + tick].ts,
        values: r.readings[400 + tick].values,
      }));
      const response = await postJson(`${outpost.url}/v1/readings`, { readings });
      await response.body?.cancel();
      const wait = started + (tick + 1) * 10 - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    const quantile = (q: string) =>
      Number(new RegExp(`outpost_commit_to_flag_seconds\\{quantile="${q}"\\} (\\S+)`).exec(metrics)![1]) * 1000;
    return {
      p50: quantile("0.5"),
      p99: quantile("0.99"),
      rss: (await processMemory(outpost.process.pid)).peak,
      idle: idle.rss,
    };
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export async function throughput(readings: number, stageRounds = 5) {
  const dir = await Deno.makeTempDir();
  const database = await openDatabase(dir, quiet);
  try {
    const recording = simulateRecording({ seed: 600, fault: "vibration", seconds: 400 + readings });
    const bundleStarted = performance.now();
    const bundle = calibrate("bench", recording.readings.slice(0, 400), DETECTION, "cal-1");
    const calibrationMs = performance.now() - bundleStarted;
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 1e12, usedBytes: () => 0 });
    for (let i = 0; i < recording.readings.length; i += 1000) {
      await writer.write(
        recording.readings.slice(i, i + 1000).map((r) => ({ device: "bench", ts: r.ts, values: r.values })),
        "bench",
      );
    }
    const inference = new Inference(1);
    const registry = new ModelRegistry(database.client, inference, { modelsDir: `${dir}/models`, log: quiet });
    await registry.init();
    await registry.activate(bundle, "bench", "bench");
    const scorer = new Scorer(database.client, DETECTION, { registry, inference, outbox: null, log: quiet });
    const scoringStarted = performance.now();
    await scorer.catchUp();
    const scorerRate = scorer.cursor / ((performance.now() - scoringStarted) / 1000);
    // The inference stage alone: Outpost's packing of windows and per-device parameters, the
    // shared session's run and the outputs as columns (what a scoring pass uses), batch 256; also
    // with a result object per reading. Against raw session.run on the same graph and batch size,
    // inputs prepared in advance. Interleaved, several rounds, medians: the machine may be shared.
    const rows = recording.readings.map((r) => bundle.manifest.features.map((f) => r.values[f]));
    const params = bundle.manifest.baseline!;
    const items = rows.map((_, i) => ({ rows: rows.slice(Math.max(0, i - 19), i + 1), params, center: params.center }));
    const model = await registry.load(registry.modelIdFor("bench")!);
    const session = await ort.InferenceSession.create(bundle.onnx, {
      intraOpNumThreads: 1,
      executionMode: "sequential",
      enableCpuMemArena: false,
      enableMemPattern: false,
    });
    const batch = DETECTION.batchSize;
    const { feeds } = baselineFeeds(items.slice(0, batch));
    const tensors = Object.fromEntries(
      Object.entries(feeds).map((
        [name, { data, dims }],
      ) => [
        name,
        data instanceof BigInt64Array ? new ort.Tensor("int64", data, dims) : new ort.Tensor("float32", data, dims),
      ]),
    );
    const rounds = Math.ceil(readings / batch);
    const seconds = { stage: [] as number[], objects: [] as number[], raw: [] as number[] };
    const timed = async (into: number[], work: () => Promise<unknown>) => {
      const started = performance.now();
      await work();
      into.push((performance.now() - started) / 1000);
    };
    for (let round = 0; round < stageRounds; round++) {
      await timed(seconds.stage, () => scoreBaselineColumns(inference, model.session, items, batch));
      await timed(seconds.objects, () => scoreBaseline(inference, model.session, items, batch));
      await timed(seconds.raw, async () => {
        for (let i = 0; i < rounds; i++) await session.run(tensors);
      });
    }
    const stageRate = items.length / median(seconds.stage);
    const objectsRate = items.length / median(seconds.objects);
    const rawRate = (rounds * batch) / median(seconds.raw);
    await session.release();
    await inference.release();
    return { calibrationMs, scorerRate, stageRate, objectsRate, rawRate };
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function rssUnderIngest(seconds: number, devices: number): Promise<number> {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    const recordings = Array.from(
      { length: 10 },
      (_, d) => simulateRecording({ seed: 700 + d, fault: "drift", seconds: 1300 }),
    );
    await Promise.all(recordings.map((r, d) => replay(outpost.url, `rss-${d}`, r.readings.slice(0, 400))));
    const deadline = performance.now() + seconds * 1000;
    let offset = 400;
    await Promise.all([0, 1, 2, 3].map(async (worker) => {
      while (performance.now() < deadline) {
        const base = offset;
        offset += 10;
        const readings = [];
        for (let i = 0; i < 10; i++) {
          for (let d = worker % devices; d < devices; d += 4) {
            const source = recordings[d].readings[(base + i) % 1300];
            readings.push({
              device: `rss-${d}`,
              ts: source.ts + Math.floor((base + i) / 1300) * 3_600_000,
              values: source.values,
            });
          }
        }
        const response = await postJson(`${outpost.url}/v1/readings`, { readings });
        await response.body?.cancel();
      }
    }));
    return (await processMemory(outpost.process.pid)).peak;
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

export async function benchDetect(options: { seconds: number; readings: number }): Promise<void> {
  const latency = await latencyAtRate(options.seconds);
  console.log(
    `commit-to-flag at 1,000 readings/s (10 devices)   p50 ${latency.p50.toFixed(1)} ms, p99 ${
      latency.p99.toFixed(1)
    } ms (target p99 < 5 ms)`,
  );
  const { calibrationMs, scorerRate, stageRate, objectsRate, rawRate } = await throughput(options.readings);
  const share = (rate: number) => `${((rate / rawRate) * 100).toFixed(0)}%`;
  console.log(
    `scoring stage (pack windows + Inference.run)     ${Math.round(stageRate).toLocaleString("en")} readings/s = ` +
      `${share(stageRate)} of raw session.run ${Math.round(rawRate).toLocaleString("en")} windows/s ` +
      `(same model, batch ${DETECTION.batchSize}; target >= 50%); with a result object per reading ${
        Math.round(objectsRate).toLocaleString("en")
      }/s = ${share(objectsRate)}`,
  );
  console.log(
    `scorer end to end (read, window, infer, write)   ${Math.round(scorerRate).toLocaleString("en")} readings/s ` +
      `(bounded by libSQL: ${((scorerRate / rawRate) * 100).toFixed(0)}% of raw session.run)`,
  );
  console.log(`calibration of one device (400 readings)         ${calibrationMs.toFixed(0)} ms`);
  console.log(`RSS with 10 models loaded: idle ${mb(latency.idle)}, peak at 1,000 readings/s ${mb(latency.rss)}`);
  for (const devices of [1, 10]) {
    const peak = await rssUnderIngest(options.seconds, devices);
    console.log(
      `RSS peak (VmHWM), ${String(devices).padStart(2)} device model(s), batched HTTP ingest load  ${
        mb(peak)
      } (target < 128 MB)`,
    );
  }
}
