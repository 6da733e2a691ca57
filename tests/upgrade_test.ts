import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { postJson, writeManifest } from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";
import { buildRelease } from "./helpers/release.ts";

interface Drill {
  dir: string;
  root: string;
  url: string;
  release(version: string, broken?: boolean): Promise<string>;
  outpost(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  stopService(): Promise<void>;
}

async function drill(fn: (d: Drill) => Promise<void>) {
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
  const stopService = async () => {
    try {
      const pid = Number(await Deno.readTextFile(join(root, "outpost.pid")));
      Deno.kill(pid, "SIGTERM");
      for (let i = 0; i < 200; i++) {
        try {
          Deno.kill(pid, "SIGCONT");
        } catch {
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } catch { /* not running */ }
  };
  try {
    await fn({ dir, root, url, release, outpost, stopService });
  } finally {
    await stopService();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The first install: no `current` yet, so the new binary's own launcher runs the upgrade. */
async function install(d: Drill, binary: string) {
  const output = await new Deno.Command(binary, {
    args: ["upgrade", binary, "--root", d.root, "--ready-url", `${d.url}/readyz`, "--ready-timeout", "30"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
}

async function healthName(url: string): Promise<string> {
  return (await (await fetch(`${url}/healthz`)).json()).name;
}

async function sendReadings(url: string, from: number, count: number) {
  const readings = Array.from(
    { length: count },
    (_, i) => ({ device: "d", ts: 1_763_805_600_000 + from + i, values: { a: i } }),
  );
  const response = await postJson(`${url}/v1/readings`, { readings });
  assert.equal(response.status, 202);
  await response.body?.cancel();
}

async function readingCount(url: string): Promise<number> {
  return (await (await fetch(`${url}/v1/readings?device=d&limit=10000`)).json()).readings.length;
}

Deno.test("upgrade to a healthy release; a release that never becomes ready rolls back by itself with no data lost; manual rollback returns offline", async () => {
  await drill(async (d) => {
    await install(d, await d.release("1.0.0"));
    assert.equal(await healthName(d.url), "site-1-0-0");
    await sendReadings(d.url, 0, 50);

    const gate = ["--root", d.root, "--ready-url", `${d.url}/readyz`, "--ready-timeout", "30"];
    const healthy = await d.outpost(["upgrade", await d.release("1.1.0"), ...gate]);
    assert.equal(healthy.code, 0, healthy.stderr);
    assert.equal(await Deno.readLink(join(d.root, "current")), join("releases", "1.1.0"));
    assert.equal(await healthName(d.url), "site-1-1-0");
    assert.equal(await readingCount(d.url), 50);
    await sendReadings(d.url, 50, 25);

    const broken = await d.outpost([
      "upgrade",
      await d.release("1.2.0", true),
      "--root",
      d.root,
      "--ready-url",
      `${d.url}/readyz`,
      "--ready-timeout",
      "3",
    ]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /1\.2\.0 did not become ready within 3000 ms: rolled back to 1\.1\.0/);
    assert.equal(await Deno.readLink(join(d.root, "current")), join("releases", "1.1.0"));
    assert.equal(await healthName(d.url), "site-1-1-0");
    assert.equal(await readingCount(d.url), 75, "no data lost");

    const manual = await d.outpost(["rollback", ...gate]);
    assert.equal(manual.code, 0, manual.stderr);
    assert.equal(await Deno.readLink(join(d.root, "current")), join("releases", "1.0.0"));
    assert.equal(await healthName(d.url), "site-1-0-0");
    assert.equal(await readingCount(d.url), 75);

    const history = (await Deno.readTextFile(join(d.root, "history.jsonl"))).trim().split("\n").map((line) =>
      JSON.parse(line).step
    );
    for (const step of ["verified", "staged", "switched", "restarted", "live", "not_ready", "rolled_back"]) {
      assert.ok(history.includes(step), `history records ${step}`);
    }
  });
});

Deno.test("a tampered binary is refused and nothing changes", async () => {
  await drill(async (d) => {
    await install(d, await d.release("1.0.0"));
    const binary = await d.release("2.0.0");
    await Deno.writeTextFile(binary, "\n# tampered\n", { append: true });
    const refused = await d.outpost(["upgrade", binary, "--root", d.root, "--ready-url", `${d.url}/readyz`]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /SHA-256 is [0-9a-f]{64}, .*\.sha256 says/);
    assert.equal(await Deno.readLink(join(d.root, "current")), join("releases", "1.0.0"));
    assert.deepEqual([...Deno.readDirSync(join(d.root, "releases"))].map((e) => e.name), ["1.0.0"]);
    assert.equal(await healthName(d.url), "site-1-0-0");
  });
});

Deno.test("SIGKILL in the middle of an upgrade leaves a consistent current and a service that starts", async () => {
  await drill(async (d) => {
    await install(d, await d.release("1.0.0"));
    await sendReadings(d.url, 0, 10);
    const upgrading = new Deno.Command(join(d.root, "current", "outpost"), {
      args: [
        "upgrade",
        await d.release("1.1.0", true),
        "--root",
        d.root,
        "--ready-url",
        `${d.url}/readyz`,
        "--ready-timeout",
        "30",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    // Kill it once it has switched and is waiting on the health gate.
    await eventually(
      async () => await Deno.readTextFile(join(d.root, "history.jsonl")).catch(() => ""),
      (text) => text.includes('"restarted"') && text.split("\n").filter((l) => l.includes('"restarted"')).length >= 2,
      20_000,
    );
    upgrading.kill("SIGKILL");
    await upgrading.status;
    await d.stopService();
    const current = await Deno.readLink(join(d.root, "current"));
    assert.ok(["releases/1.0.0", "releases/1.1.0"].includes(current), current);
    assert.ok((await Deno.stat(join(d.root, current, "outpost"))).isFile, "current points at a complete release");
    // The operator's recovery: roll back to the last release that was live, offline.
    const recovered = await d.outpost([
      "rollback",
      "--root",
      d.root,
      "--ready-url",
      `${d.url}/readyz`,
      "--ready-timeout",
      "30",
    ]);
    assert.equal(recovered.code, 0, recovered.stderr);
    assert.equal(await healthName(d.url), "site-1-0-0");
    assert.equal(await readingCount(d.url), 10);
  });
});
