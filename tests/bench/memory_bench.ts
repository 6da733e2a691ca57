/**
 * Memory the way the 128 MB budget counts it: peak VmHWM of the Outpost process and its
 * anonymous and file-backed resident parts (/proc/PID/smaps_rollup), one fresh process per
 * situation, each printed next to the budget. Under a cgroup limit the file-backed part is
 * reclaimed first; the anonymous part is what gets a process killed.
 */
import { startBroker } from "../helpers/broker.ts";
import { Collector } from "../helpers/collector.ts";
import {
  type OutpostProcess,
  postJson,
  startOutpost,
  waitForMqttIngest,
  writeManifest,
} from "../helpers/outpost_process.ts";
import { httpLoad, makeReading, mqttLoad } from "./ingest_bench.ts";
import { mb, processMemory } from "./process_memory.ts";
import { coldExecutable, createMemoryCgroup } from "../helpers/memory_cgroup.ts";
import { PROJECT_ROOT } from "../helpers/outpost_process.ts";

const BUDGET = 128 * 1024 * 1024;

export interface MemoryBenchOptions {
  /** Seconds of the realistic load (10 devices x 8 sensors at 10 Hz, detection on). */
  realisticSeconds: number;
  /** Seconds of each full-speed ingest phase. */
  loadSeconds: number;
  mqttMessages: number;
  calibratedDevices: number;
  /** Seconds of backlog (10 devices at 1 Hz) drained by forwarding. */
  backlogSeconds: number;
}

async function anonymousAndFile(pid: number): Promise<{ anon: number; file: number }> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/smaps_rollup`], stdout: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout);
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { anon: kb("Anonymous"), file: kb("Rss") - kb("Anonymous") };
}

async function report(name: string, outpost: OutpostProcess, note = ""): Promise<void> {
  const { peak } = await processMemory(outpost.process.pid);
  const { anon, file } = await anonymousAndFile(outpost.process.pid);
  const verdict = peak < BUDGET ? "within" : "OVER";
  console.log(`| ${name} | ${mb(peak)} | ${mb(anon)} / ${mb(file)} | ${mb(BUDGET)} ${verdict} | ${note} |`);
}

async function situation(
  name: string,
  manifestOptions: Parameters<typeof writeManifest>[1],
  drive: (outpost: OutpostProcess) => Promise<string | void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error", ...manifestOptions }));
  try {
    const note = await drive(outpost);
    await report(name, outpost, note ?? "");
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Posts 45 readings for each of devices `from`..`to`-1 and waits until they are calibrated. */
async function calibrateDevices(outpost: OutpostProcess, from: number, to: number): Promise<number> {
  const start = Date.now() - 3_600_000;
  for (let first = from; first < to; first += 20) {
    const readings = [];
    for (let d = first; d < Math.min(first + 20, to); d++) {
      for (let i = 0; i < 45; i++) readings.push(makeReading(`cal-${d}`, start + i * 1000));
    }
    const response = await postJson(`${outpost.url}/v1/readings`, { readings });
    await response.body?.cancel();
  }
  const deadline = performance.now() + 600_000;
  let calibrated = 0;
  while (performance.now() < deadline) {
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    calibrated = Number(/outpost_calibration_duration_seconds_count (\d+)/.exec(metrics)?.[1] ?? 0);
    if (calibrated >= to) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return calibrated;
}

/** 10 devices x 8 sensors at `hz`, sent every 100 ms, for `seconds`. */
export async function steadyLoad(url: string, devices: number, hz: number, seconds: number, startTs: number) {
  for (let tick = 0; tick < seconds * 10; tick++) {
    const readings = [];
    for (let d = 0; d < devices; d++) {
      for (let k = 0; k < hz / 10; k++) {
        readings.push(makeReading(`device-${d}`, startTs + tick * 100 + k * (1000 / hz)));
      }
    }
    const response = await postJson(`${url}/v1/readings`, { readings });
    await response.body?.cancel();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function benchMemory(options: MemoryBenchOptions): Promise<void> {
  console.log("| situation | peak VmHWM | anonymous / file-backed at the end | budget | note |");
  console.log("| --- | --- | --- | --- | --- |");
  await situation("idle after start", {}, () => new Promise((resolve) => setTimeout(resolve, 3_000)));
  await situation(
    `10 devices x 8 sensors at 10 Hz for ${options.realisticSeconds} s, detection on`,
    { detection: ["calibration: { readings: 400 }"] },
    (outpost) =>
      steadyLoad(outpost.url, 10, 10, options.realisticSeconds, Date.now() - options.realisticSeconds * 1000),
  );
  await situation("HTTP batched ingest at full speed (100 x 8 values, 4 clients)", {}, async (outpost) => {
    const { rate } = await httpLoad(outpost.url, options.loadSeconds, 100, 4, "mem");
    return `${Math.round(rate)} readings/s`;
  });
  const broker = await startBroker();
  try {
    await situation("MQTT QoS 1 at full speed", { mqttUrl: broker.url }, async (outpost) => {
      await waitForMqttIngest(outpost.url);
      const rate = await mqttLoad(outpost.dataDir, broker.url, options.mqttMessages);
      return `${Math.round(rate)} msg/s`;
    });
  } finally {
    await broker.close();
  }
  await benchUnderLimit(options.loadSeconds);
  await benchMemoryCalibrated(options.calibratedDevices);
  const collector = await Collector.create({ up: false });
  try {
    await situation(
      `forwarding drain of ${options.backlogSeconds} s of backlog (10 devices at 1 Hz, raw on)`,
      {
        egressAllowed: [collector.destination],
        circuitOpenSeconds: 1,
        forwarding: ["raw: true", "idleCloseSeconds: 1", `http: { url: "${collector.url}" }`],
      },
      async (outpost) => {
        const start = Date.now() - options.backlogSeconds * 1000;
        for (let second = 0; second < options.backlogSeconds; second += 100) {
          const readings = [];
          for (let s = second; s < Math.min(second + 100, options.backlogSeconds); s++) {
            for (let d = 0; d < 10; d++) readings.push(makeReading(`device-${d}`, start + s * 1000));
          }
          const response = await postJson(`${outpost.url}/v1/readings`, { readings });
          await response.body?.cancel();
        }
        collector.start();
        const expected = options.backlogSeconds * 10;
        const started = performance.now();
        while (collector.items().filter((item) => item.kind === "reading").length < expected) {
          if (performance.now() - started > 300_000) return "drain did not finish in 5 min";
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        return `${expected} readings drained in ${((performance.now() - started) / 1000).toFixed(1)} s`;
      },
    );
  } finally {
    await collector.stop();
  }
}

/**
 * The full-speed HTTP load again, under the limit the unit sets (MemoryMax=128M, and MemoryHigh=112M
 * where cgroup v2 has it), with cold pages so that what Outpost maps is charged to its group as on
 * the device (this bench process maps libSQL itself, so about 5 MB of its library is not). The
 * unconstrained run comes first in the same conditions, for the throughput the limit costs.
 */
export async function benchUnderLimit(loadSeconds: number): Promise<void> {
  const limits = { maxBytes: BUDGET, highBytes: 112 * 1024 * 1024 };
  const probe = createMemoryCgroup("outpost-bench-probe", limits);
  if (!probe) {
    console.log("under the unit's limit: skipped (no memory cgroup can be created here: not root, or no cgroupfs)");
    return;
  }
  await probe.remove();
  console.log(
    "| HTTP batched ingest at full speed, detection on | readings/s | group peak | anonymous peak | OOM kills |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  for (const limited of [false, true]) {
    const dir = await Deno.makeTempDir();
    const cgroup = limited ? createMemoryCgroup("outpost-bench", limits) : null;
    try {
      const executable = limited ? (await coldExecutable(dir, PROJECT_ROOT)).executable : undefined;
      const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error" }), {
        cgroup: cgroup?.path,
        executable,
      });
      let anonymousPeak = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          anonymousPeak = Math.max(anonymousPeak, (await processMemory(outpost.process.pid)).anonymous);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      try {
        const { rate } = await httpLoad(outpost.url, loadSeconds, 100, 4, "limit");
        sampling = false;
        await sampler;
        const peak = cgroup ? cgroup.peakBytes() : (await processMemory(outpost.process.pid)).peak;
        console.log(
          `| ${limited ? `in a cgroup v${cgroup!.version} of 128 MiB` : "unconstrained (VmHWM)"} | ${
            Math.round(rate)
          } | ` +
            `${mb(peak)} | ${mb(anonymousPeak)} | ${cgroup ? cgroup.oomKills() : "-"} |`,
        );
      } finally {
        sampling = false;
        await sampler;
        await outpost.stop();
      }
    } finally {
      await cgroup?.remove();
      await Deno.remove(dir, { recursive: true });
    }
  }
}

/** `devices` calibrated devices in one process, and what each added one costs. */
export async function benchMemoryCalibrated(devices: number): Promise<void> {
  await situation(
    `${devices} calibrated devices (40 calibration readings each)`,
    { detection: ["calibration: { readings: 40 }"], limits: [`devices: ${devices + 10}`] },
    async (outpost) => {
      // RSS after a fifth of the devices, then after all: the difference over the devices added
      // between is what each calibrated device costs (the first one also loads onnxruntime).
      const fifth = Math.max(1, Math.floor(devices / 5));
      const first = await calibrateDevices(outpost, 0, fifth);
      if (first !== fifth) return `calibration did not finish in 10 min (${first} of ${fifth})`;
      const before = (await processMemory(outpost.process.pid)).rss;
      const all = await calibrateDevices(outpost, fifth, devices);
      if (all !== devices) return `calibration did not finish in 10 min (${all})`;
      const after = (await processMemory(outpost.process.pid)).rss;
      const perDevice = (after - before) / (devices - fifth) / 1024;
      return `${all} calibrated; RSS ${mb(before)} at ${fifth}, ${mb(after)} at ${all}: ` +
        `${perDevice.toFixed(1)} KB per added device (target ≤ 20 KB)`;
    },
  );
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  await benchMemory(
    quick
      ? { realisticSeconds: 10, loadSeconds: 2, mqttMessages: 2_000, calibratedDevices: 20, backlogSeconds: 300 }
      : {
        realisticSeconds: 600,
        loadSeconds: 10,
        mqttMessages: 50_000,
        calibratedDevices: 1_000,
        backlogSeconds: 3_600,
      },
  );
}
