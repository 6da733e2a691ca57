import assert from "node:assert/strict";
import { join } from "node:path";
import { releaseManifest, shipMonitoring } from "../compile/compile.ts";
import type { CompilePlan } from "../compile/plan.ts";
import { sha256File } from "../src/sha256.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import { PROJECT_ROOT, waitForReady } from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";
import { fetchReadings, replay } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

async function compileTask(args: string[], env: Record<string, string> = {}) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "compile", ...args],
    cwd: PROJECT_ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

async function deviceManifest(dir: string, apiPort: number, collector: Collector): Promise<string> {
  const path = join(dir, "site.yaml");
  await Deno.writeTextFile(
    path,
    `apiVersion: fde/v1
kind: Deployment
metadata: { name: site-42 }
spec:
  network: { egressAllowed: ["${collector.destination}"] }
  api: { listen: "127.0.0.1:${apiPort}" }
  storage: { dataDir: ${join(dir, "state")} }
  detection: { calibration: { readings: 100 } }
  forwarding: { aggregateSeconds: 10, graceSeconds: 0, http: { url: "${collector.url}" } }
`,
  );
  return path;
}

function nativeFiles(root: string, excludes: string[]): string[] {
  const excluded = new Set(excludes.map((path) => join(root, path)));
  const found: string[] = [];
  const walk = (path: string) => {
    if (excluded.has(path)) return;
    for (const entry of Deno.readDirSync(path)) {
      const child = join(path, entry.name);
      if (entry.isDirectory) walk(child);
      else if (/\.node$|\.so(\.\d+)*$/.test(entry.name)) found.push(child.slice(root.length + 1));
    }
  };
  walk(join(root, "node_modules"));
  return found;
}

Deno.test("the compile plan for both targets follows the manifest; the aarch64 payload holds only linux-arm64 native code; a release run with the plan's flags passes the smoke test", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const apiPort = await freePort();
  const manifest = await deviceManifest(dir, apiPort, collector);
  const installRoot = join(dir, "opt");
  const out = join(dir, "dist");
  const planned = await compileTask(["--dry-run", "--manifest", manifest, "--install-root", installRoot, "--out", out]);
  assert.equal(planned.code, 0, planned.stderr);
  const plans: CompilePlan[] = JSON.parse(planned.stdout);
  assert.deepEqual(plans.map((plan) => plan.target), ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"]);
  let process: Deno.ChildProcess | null = null;
  try {
    for (const plan of plans) {
      assert.equal(plan.output, join(out, `outpost-${plan.version}-${plan.target}`));
      assert.deepEqual(plan.argv.slice(0, 3), ["deno", "compile", "--self-extracting"]);
      assert.equal(plan.argv[plan.argv.indexOf("--target") + 1], plan.target);
      assert.deepEqual(plan.includes, ["models", "policies/outpost.yaml"]);
      assert.ok(plan.flags.includes(`--allow-net=127.0.0.1:${apiPort},${collector.destination}`), plan.flags.join(" "));
      assert.ok(plan.flags.includes(`--allow-write=${join(dir, "state")},${installRoot}`));
      assert.ok(
        plan.flags.includes(`--allow-run=systemctl,ln,setsid,ps,readlink,${join(installRoot, "current", "outpost")}`),
      );
      assert.ok(plan.flags.includes(`--allow-ffi=${join(installRoot, "releases", plan.version)}`));
      assert.ok(!plan.flags.some((flag) => flag === "-A" || flag === "--allow-all" || flag === "--allow-net"));
      for (const flag of plan.flags) assert.ok(plan.argv.includes(flag), `${flag} is baked into the binary`);
      const arch = plan.target.startsWith("aarch64") ? "arm64" : "x64";
      const natives = nativeFiles(plan.buildDir, plan.excludes);
      assert.ok(natives.length >= 3, natives.join());
      for (const file of natives) assert.match(file, new RegExp(`linux[-/]${arch}(-gnu)?/`), file);
      assert.ok(plan.excludes.some((path) => path.includes("aedes@")), "test-only packages are left out");
      // The monitoring files ship beside the binaries (the same ones for every target), listed with
      // their SHA-256 in release.json.
      const shipped = join(out, `outpost-${plan.version}-monitoring`);
      assert.deepEqual(plan.monitoring, [
        { source: join(plan.buildDir, "monitoring", "outpost.rules.yml"), output: join(shipped, "outpost.rules.yml") },
        {
          source: join(plan.buildDir, "monitoring", "grafana-dashboard.json"),
          output: join(shipped, "grafana-dashboard.json"),
        },
      ]);
      const release = await releaseManifest(plan, "0".repeat(64));
      assert.deepEqual(release.monitoring, [
        {
          path: `outpost-${plan.version}-monitoring/outpost.rules.yml`,
          sha256: await sha256File(join(PROJECT_ROOT, "compile", "monitoring", "outpost.rules.yml")),
        },
        {
          path: `outpost-${plan.version}-monitoring/grafana-dashboard.json`,
          sha256: await sha256File(join(PROJECT_ROOT, "compile", "monitoring", "grafana-dashboard.json")),
        },
      ]);
      await shipMonitoring(plan);
      for (const { path, sha256 } of release.monitoring) assert.equal(await sha256File(join(out, path)), sha256, path);
    }

    // The x86_64 release, staged as the device would have it, run with exactly the baked flags.
    const plan = plans[1];
    await Deno.mkdir(join(installRoot, "releases"), { recursive: true });
    const copied = await new Deno.Command("cp", { args: ["-al", plan.buildDir, plan.releaseDir] }).output();
    assert.ok(copied.success);
    process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--cached-only", ...plan.flags, join(plan.releaseDir, "main.ts")],
      cwd: plan.releaseDir,
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const url = `http://127.0.0.1:${apiPort}`;
    const started = process;
    await waitForReady(url, started.status).catch(async (error) => {
      const stderr = await new Response(started.stderr).text();
      process = null;
      throw new Error(`${(error as Error).message}\n${stderr}`);
    });
    const recording = simulateRecording({ seed: 77, fault: "step", calibration: 100, seconds: 160 });
    await replay(url, "smoke-1", recording.readings);
    await eventually(() => fetchReadings(url, "smoke-1"), (rows) => rows.length === 160 && rows[159].score !== null);
    await eventually(() => collector.items().filter((item) => item.kind === "aggregate").length, (n) => n > 0, 15_000);
    process.kill("SIGTERM");
    assert.equal((await process.status).code, 0);
    process = null;
  } finally {
    if (process) {
      process.kill("SIGKILL");
      await process.status;
    }
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a real build fails fast: a denort of the wrong ELF machine is refused; with none staged the message says how to stage it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const wrong = await compileTask(["--target", "aarch64-unknown-linux-gnu", "--out", dir], {
      DENORT_BIN: Deno.execPath(),
    });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /is not an AArch64 ELF binary \(e_machine 0x3e\)/);
    const none = await compileTask(["--target", "aarch64-unknown-linux-gnu", "--out", dir], {
      DENO_DIR: join(dir, "empty"),
    });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /No denort for aarch64-unknown-linux-gnu and the Deno release host cannot be reached/);
    assert.match(none.stderr, /DENORT_BIN=/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
