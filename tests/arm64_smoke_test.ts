/**
 * The end-to-end smoke test on ARM64: the aarch64 release staged by `deno task compile --dry-run`
 * (arm64 npm packages) run by the arm64 Deno from npm under qemu-user, with exactly the flags the
 * binary would bake in. CI sets OUTPOST_ARM64_DENO and OUTPOST_QEMU_SYSROOT (see .ci/arm64_setup.sh);
 * elsewhere the test is ignored. Emulation is about 30 times slower, hence the long timeouts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { CompilePlan } from "../compile/plan.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import { PROJECT_ROOT, waitForReady } from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const ARM64_DENO = Deno.env.get("OUTPOST_ARM64_DENO");
const SYSROOT = Deno.env.get("OUTPOST_QEMU_SYSROOT");

Deno.test({
  name: "ARM64 under qemu: the aarch64 release with its baked flags starts, ingests, scores, forwards and stops",
  ignore: !ARM64_DENO || !SYSROOT,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const collector = await Collector.create();
    const apiPort = await freePort();
    const manifest = join(dir, "arm.yaml");
    await Deno.writeTextFile(
      manifest,
      `apiVersion: fde/v1
kind: Deployment
metadata: { name: arm-smoke }
spec:
  network: { egressAllowed: ["${collector.destination}"] }
  api: { listen: "127.0.0.1:${apiPort}" }
  storage: { dataDir: ${join(dir, "state")} }
  detection: { calibration: { readings: 50 } }
  forwarding: { aggregateSeconds: 10, graceSeconds: 0, http: { url: "${collector.url}" } }
`,
    );
    const installRoot = join(dir, "opt");
    const planned = await new Deno.Command(Deno.execPath(), {
      args: [
        "task",
        "--quiet",
        "compile",
        "--dry-run",
        "--target",
        "aarch64-unknown-linux-gnu",
        "--manifest",
        manifest,
        "--install-root",
        installRoot,
        "--out",
        join(dir, "dist"),
      ],
      cwd: PROJECT_ROOT,
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(planned.success);
    const plan: CompilePlan = JSON.parse(new TextDecoder().decode(planned.stdout));
    await Deno.mkdir(join(installRoot, "releases"), { recursive: true });
    assert.ok((await new Deno.Command("cp", { args: ["-al", plan.buildDir, plan.releaseDir] }).output()).success);
    const process = new Deno.Command("qemu-aarch64-static", {
      args: ["-L", SYSROOT!, ARM64_DENO!, "run", "--cached-only", ...plan.flags, join(plan.releaseDir, "main.ts")],
      cwd: plan.releaseDir,
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let log = "";
    const drained = (async () => {
      for await (const chunk of process.stderr) log += new TextDecoder().decode(chunk);
    })();
    try {
      const url = `http://127.0.0.1:${apiPort}`;
      await waitForReady(url, process.status, 240_000).catch((error) => {
        throw new Error(`${error.message}\n${log}`);
      });
      const maps = await new Deno.Command("cat", { args: [`/proc/${process.pid}/maps`], stdout: "piped" }).output();
      const loaded = new TextDecoder().decode(maps.stdout);
      assert.match(loaded, /linux-arm64-gnu\/index\.node/, "libsql's arm64 addon is loaded");
      const recording = simulateRecording({ seed: 88, fault: "step", calibration: 50, seconds: 80 });
      await replay(url, "arm-1", recording.readings);
      await eventually(
        () => retriedOnReset(() => fetchReadings(url, "arm-1")),
        (rows) => rows.length === 80 && rows[79].score !== null,
        240_000,
      );
      assert.match(
        new TextDecoder().decode(
          (await new Deno.Command("cat", { args: [`/proc/${process.pid}/maps`], stdout: "piped" }).output()).stdout,
        ),
        /linux\/arm64\/libonnxruntime\.so\.1/,
      );
      await eventually(() => collector.items().length, (n) => n > 0, 240_000);
      process.kill("SIGTERM");
      assert.equal((await process.status).code, 0, log);
      await drained;
      // A retried poll must not hide the listener being reopened (which resets queued connections).
      assert.doesNotMatch(log, /http\.accept_stalled/);
    } catch (error) {
      // The log's last 30,000 characters, with a crash's last words: the program is stopped and its stderr drained first.
      try {
        process.kill("SIGKILL");
      } catch { /* exited */ }
      await process.status;
      await drained;
      throw new Error(`${(error as Error).message}\n--- the program's log:\n${log.slice(-30_000)}`, { cause: error });
    } finally {
      try {
        process.kill("SIGKILL");
      } catch { /* exited */ }
      await process.status;
      await drained;
      await collector.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Runs an idempotent read again, once, when its connection was reset. Under emulation the program
 * holds its event loop for seconds at a time (the first calibration, which loads onnxruntime, took
 * 6.6 s here), and a kept-alive connection can then be closed just as a request is sent on it: the
 * race every HTTP client meets with keep-alive, which clients settle by retrying idempotent requests.
 * A retry is printed, so that one happening every run would be seen, and the test fails if the
 * accept watchdog reopened the listener (`http.accept_stalled`), which would also reset connections.
 */
async function retriedOnReset<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    const reason = `${(error as Error).message} ${((error as Error).cause as Error | undefined)?.message ?? ""}`;
    if (!/connection reset|connection closed/i.test(reason)) throw error;
    console.warn(`retried once after: ${reason}`);
    return await read();
  }
}
