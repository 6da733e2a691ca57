import assert from "node:assert/strict";
import { join } from "node:path";
import { confirmedVersions, drill, install, readingCount, sendReadings } from "./helpers/upgrade_drill.ts";
import { startTime } from "../src/release/process.ts";

async function healthName(url: string): Promise<string> {
  return (await (await fetch(`${url}/healthz`)).json()).name;
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
    assert.match(broken.stderr, /1\.2\.0 failed: not confirmed within 3000 ms: .*: rolled back to 1\.1\.0/);
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
    for (
      const step of [
        "verified",
        "staged",
        "pending",
        "switched",
        "restarted",
        "confirmed",
        "live",
        "not_ready",
        "rolled_back",
      ]
    ) {
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

Deno.test("housekeeping: one upgrade at a time, a reused PID is never signalled, pruning keeps confirmed releases, refusals are recorded", async () => {
  await drill(async (d) => {
    await install(d, await d.release("1.0.0"));
    const gate = ["--root", d.root, "--ready-url", `${d.url}/readyz`, "--ready-timeout", "3"];

    // The lock: held by another upgrade (here: this test), a second one is refused and recorded.
    const lock = await Deno.open(join(d.root, "upgrade.lock"), { read: true, write: true });
    await lock.lock(true);
    const refused = await d.outpost(["upgrade", await d.release("1.1.0"), ...gate]);
    lock.close();
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /Another upgrade or rollback is running/);

    // Never-ready releases are not confirmed, so pruning removes them before any confirmed one.
    for (const version of ["1.1.0", "1.2.0", "1.3.0"]) {
      const broken = await d.outpost(["upgrade", await d.release(`${version}-broken`, true), ...gate]);
      assert.equal(broken.code, 1, broken.stderr);
    }
    // The ready timeout covers start-up and the settle period before the release confirms itself.
    const healthy = await d.outpost([
      "upgrade",
      await d.release("1.4.0"),
      ...gate.slice(0, -1),
      "20",
      "--keep",
      "2",
    ]);
    assert.equal(healthy.code, 0, healthy.stderr);
    const installed = [...Deno.readDirSync(join(d.root, "releases"))].map((entry) => entry.name).sort();
    assert.deepEqual(installed, ["1.0.0", "1.4.0"], "only confirmed releases survive pruning");
    assert.deepEqual(await confirmedVersions(d.root), ["1.0.0", "1.4.0"]);

    // The PID file names a process by PID, start time and executable: a PID file whose start time
    // does not match (PID reuse) is not signalled, even though kill(pid, 0) would succeed.
    const pidFile = join(d.root, "outpost.pid");
    const record = JSON.parse(await Deno.readTextFile(pidFile));
    assert.equal(record.starttime, await startTime(record.pid));
    assert.match(record.exe, /deno/);
    const sleeper = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      await Deno.writeTextFile(pidFile, JSON.stringify({ ...record, pid: sleeper.pid, exe: record.exe }));
      await d.outpost(["service", "stop", "--root", d.root]);
      assert.equal(await startTime(sleeper.pid) !== null, true, "the unrelated process was not signalled");
    } finally {
      sleeper.kill("SIGKILL");
      await sleeper.status;
    }
    await Deno.writeTextFile(pidFile, JSON.stringify(record));
    const steps = (await d.history()).map((line) => line.step);
    assert.ok(steps.includes("refused") && steps.includes("pruned") && steps.includes("stale_pid"), steps.join(","));
    assert.equal(await readingCount(d.url), 0);
    await sendReadings(d.url, 0, 1);
  });
});
