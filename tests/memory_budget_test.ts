/**
 * Issue 11's "keep it there": the real program under the limit the systemd unit sets
 * (MemoryMax=128M, MemoryHigh=112M), started with cold pages so that everything it maps is charged
 * to its group as on the device, fed the realistic load (10 devices x 8 sensors at 10 Hz, detection
 * on, shortened). It must not be OOM-killed, must keep scoring up with ingest, and its anonymous
 * memory (what the kernel cannot reclaim) must stay well inside the limit. Ignored where no memory
 * cgroup can be created (not root, or no writable cgroup file system).
 */
import assert from "node:assert/strict";
import { coldExecutable, createMemoryCgroup } from "./helpers/memory_cgroup.ts";
import { postJson, PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { processMemory } from "./bench/process_memory.ts";

const MIB = 1024 * 1024;
const LIMITS = { maxBytes: 128 * MIB, highBytes: 112 * MIB };
/** The realistic load's anonymous peak is 48-66 MiB; this leaves room for noise, not for a regression. */
const ANONYMOUS_LIMIT = 80 * MIB;

function cgroupsWritable(): boolean {
  const probe = createMemoryCgroup("outpost-probe", LIMITS);
  probe?.remove();
  return probe !== null;
}

// The load is written here: the bench modules load libSQL into this process, which would keep its
// library's pages charged to the test runner rather than to Outpost's group.
const SENSORS = ["temperature", "pressure", "flow", "vibration_x", "vibration_y", "vibration_z", "current", "rpm"];

function reading(device: string, ts: number) {
  const values: Record<string, number> = {};
  for (const [i, sensor] of SENSORS.entries()) values[sensor] = 50 + i * 3 + Math.sin(ts / 1000) + Math.random() * 0.2;
  return { device, ts, values };
}

async function post(url: string, readings: unknown[]): Promise<void> {
  const response = await postJson(`${url}/v1/readings`, { readings });
  assert.equal(response.status, 202, await response.text());
}

async function scoredReadings(url: string): Promise<number> {
  const metrics = await (await fetch(`${url}/metrics`)).text();
  return Number(/^outpost_scored_readings_total(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1] ?? 0);
}

Deno.test({
  name:
    "under the unit's 128 MiB limit the realistic load is never OOM-killed, keeps scoring up, holds its anonymous memory",
  ignore: !cgroupsWritable(),
  async fn() {
    const dir = await Deno.makeTempDir();
    const cgroup = createMemoryCgroup("outpost-budget", LIMITS)!;
    try {
      const { executable, warm } = await coldExecutable(dir, PROJECT_ROOT);
      const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error" }), {
        cgroup: cgroup.path,
        executable,
      });
      const pid = outpost.process.pid;
      let anonymousPeak = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          anonymousPeak = Math.max(anonymousPeak, (await processMemory(pid)).anonymous);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      try {
        // 40 s of history at 10 Hz for each device (the default calibration is 400 readings),
        // then 30 s of live readings scored as they come.
        const seconds = 30;
        const liveStart = Date.now() - seconds * 1000;
        const historyStart = liveStart - 40_000;
        for (let device = 0; device < 10; device++) {
          await post(
            outpost.url,
            Array.from({ length: 400 }, (_, i) => reading(`device-${device}`, historyStart + i * 100)),
          );
        }
        for (let tick = 0; tick < seconds * 10; tick++) {
          await post(
            outpost.url,
            Array.from({ length: 10 }, (_, device) => reading(`device-${device}`, liveStart + tick * 100)),
          );
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const live = 10 * 10 * seconds;
        const deadline = performance.now() + 30_000;
        let scored = await scoredReadings(outpost.url);
        while (scored < live && performance.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 250));
          scored = await scoredReadings(outpost.url);
        }
        sampling = false;
        await sampler;
        const hwm = (await processMemory(pid)).peak;
        console.log(
          `cgroup v${cgroup.version}: group peak ${(cgroup.peakBytes() / MIB).toFixed(1)} MiB (limit 128), ` +
            `limit met ${cgroup.limitHits()} times, OOM kills ${cgroup.oomKills()}; process VmHWM ` +
            `${(hwm / MIB).toFixed(1)} MiB, anonymous peak ${(anonymousPeak / MIB).toFixed(1)} MiB; ` +
            `${scored} of ${live} live readings scored` +
            (warm.length ? `; charged to the test runner, which maps them too: ${warm.join(", ")}` : ""),
        );
        assert.equal(cgroup.oomKills(), 0, "Outpost was OOM-killed under the unit's limit");
        assert.ok(scored >= live, `scoring fell behind under the limit: ${scored} of ${live}`);
        assert.ok(anonymousPeak < ANONYMOUS_LIMIT, `anonymous peak ${(anonymousPeak / MIB).toFixed(1)} MiB`);
      } finally {
        sampling = false;
        await sampler;
        assert.equal(await outpost.stop(), 0, outpost.log());
      }
    } finally {
      await cgroup.remove();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
