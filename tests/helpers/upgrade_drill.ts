import assert from "node:assert/strict";
import { join } from "node:path";
import { renderUnit } from "../../compile/systemd_unit.ts";
import { loadConfig } from "../../src/config/config.ts";
import { postJson, writeManifest } from "./outpost_process.ts";
import { freePort } from "./ports.ts";
import { buildRelease } from "./release.ts";

export interface Drill {
  dir: string;
  root: string;
  url: string;
  manifest: string;
  release(version: string, broken?: boolean): Promise<string>;
  /** Runs `<root>/current/<outpost> args`; its output. */
  outpost(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Starts Outpost as the rendered unit does (ExecStartPre, ExecStart, ExecStartPost), restarting on failure. */
  startLikeUnit(options?: { maxStarts?: number; readyTimeoutSeconds?: number }): Promise<number>;
  /** What a reboot does: every process this drill started anywhere under its folder ends. */
  reboot(): Promise<void>;
  history(): Promise<Record<string, unknown>[]>;
}

export async function drill(fn: (d: Drill) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  const root = join(dir, "opt");
  const apiPort = await freePort();
  const base = await writeManifest(dir, { apiPort, logLevel: "warn" });
  const url = `http://127.0.0.1:${apiPort}`;
  const release = async (version: string, broken = false) => {
    const manifest = join(dir, `${version}.yaml`);
    await Deno.writeTextFile(
      manifest,
      (await Deno.readTextFile(base)).replace("name: outpost-test", `name: site-${version.replaceAll(".", "-")}`),
    );
    return await buildRelease(dir, version, { manifest, root, broken });
  };
  const outpost = async (args: string[]) => {
    const output = await new Deno.Command(join(root, "current", "outpost"), { args, stdout: "piped", stderr: "piped" })
      .output();
    const decoder = new TextDecoder();
    return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
  };
  const unitChildren: Deno.ChildProcess[] = [];
  const startLikeUnit = async (options: { maxStarts?: number; readyTimeoutSeconds?: number } = {}) => {
    const unit = renderUnit(await loadConfig(base), {
      installRoot: root,
      rules: { directives: [], unresolved: [] },
      renderedAt: new Date().toISOString(),
    });
    const line = (key: string) => {
      const found = unit.split("\n").find((entry) => entry.startsWith(`${key}=`));
      assert.ok(found, `the unit has ${key}`);
      // "+" only lifts the sandbox, which this drill does not apply.
      return found.slice(key.length + 1).replace(/^[+-]+/, "").split(" ");
    };
    const [pre, start, post] = [line("ExecStartPre"), line("ExecStart"), line("ExecStartPost")];
    for (let attempt = 1; attempt <= (options.maxStarts ?? 6); attempt++) {
      const prepared = await new Deno.Command(pre[0], { args: pre.slice(1), stdout: "null", stderr: "null" }).output();
      if (!prepared.success) continue;
      const child = new Deno.Command(start[0], { args: start.slice(1), stdout: "null", stderr: "null" }).spawn();
      unitChildren.push(child);
      // The unit's 30 s gate, shortened so that a broken release costs seconds here.
      const postArgs = post.slice(1).map((arg) => arg === "$MAINPID" ? String(child.pid) : arg);
      postArgs[postArgs.indexOf("--timeout") + 1] = String(options.readyTimeoutSeconds ?? 4);
      const ready = await new Deno.Command(post[0], { args: postArgs, stdout: "null", stderr: "null" }).output();
      if (ready.success) return attempt;
      // systemd: stop (SIGTERM to the main process), Restart=on-failure after RestartSec.
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await child.status;
      clearTimeout(timer);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    throw new Error("The unit never started");
  };
  const reboot = async () => {
    for (const child of unitChildren.splice(0)) {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      await child.status;
    }
    // Processes started through setsid are no child of this one: found by their command line.
    for (let round = 0; round < 100; round++) {
      const pids = await ours(dir);
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          Deno.kill(pid, round < 60 ? "SIGTERM" : "SIGKILL");
        } catch { /* gone */ }
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const history = async () =>
    (await Deno.readTextFile(join(root, "history.jsonl")).catch(() => "")).trim().split("\n").filter(Boolean)
      .map((entry) => JSON.parse(entry));
  try {
    await fn({ dir, root, url, manifest: base, release, outpost, startLikeUnit, reboot, history });
  } finally {
    await reboot();
    await Deno.remove(dir, { recursive: true });
  }
}

/** PIDs of processes whose command line names `dir` (Deno reads no /proc listing without -A). */
async function ours(dir: string): Promise<number[]> {
  const output = await new Deno.Command("ps", { args: ["-eo", "pid=,stat=,args="], stdout: "piped" }).output();
  return new TextDecoder().decode(output.stdout).split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([pid, stat, ...args]) =>
      Number(pid) !== Deno.pid && !stat?.startsWith("Z") && args.join(" ").includes(dir)
    )
    .map(([pid]) => Number(pid));
}

/** The first install: no `current` yet, so the new binary's own launcher runs the upgrade. */
export async function install(d: Drill, binary: string) {
  const output = await new Deno.Command(binary, {
    args: ["upgrade", binary, "--root", d.root, "--ready-url", `${d.url}/readyz`, "--ready-timeout", "30"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
}

export async function health(url: string): Promise<{ name: string; version: string; pid: number; instanceId: string }> {
  return await (await fetch(`${url}/healthz`)).json();
}

export async function sendReadings(url: string, from: number, count: number) {
  const readings = Array.from(
    { length: count },
    (_, i) => ({ device: "d", ts: 1_763_805_600_000 + from + i, values: { a: i } }),
  );
  const response = await postJson(`${url}/v1/readings`, { readings });
  assert.equal(response.status, 202);
  await response.body?.cancel();
}

export async function readingCount(url: string): Promise<number> {
  return (await (await fetch(`${url}/v1/readings?device=d&limit=10000`)).json()).readings.length;
}

export async function currentVersion(root: string): Promise<string> {
  return (await Deno.readLink(join(root, "current"))).replace("releases/", "");
}

export async function confirmedVersions(root: string): Promise<string[]> {
  return JSON.parse(await Deno.readTextFile(join(root, "confirmed.json"))).map((entry: { version: string }) =>
    entry.version
  );
}
