import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const reading = (ts: number) => ({ device: "pump-1", ts, values: { a: 1 } });
const HAS_SQLITE3 = await new Deno.Command("sh", { args: ["-c", "command -v sqlite3"], stdout: "null" }).output()
  .then((output) => output.success, () => false);

Deno.test("a second Outpost on the same data dir exits non-zero naming the data dir and the holder's PID", async () => {
  const dir = await Deno.makeTempDir();
  const first = await startOutpost(await writeManifest(dir, { logLevel: "error" }));
  try {
    const secondDir = await Deno.makeTempDir();
    const manifest = await writeManifest(secondDir, { logLevel: "error" });
    await Deno.writeTextFile(
      manifest,
      (await Deno.readTextFile(manifest)).replace(join(secondDir, "data"), first.dataDir),
    );
    const second = await startOutpost(manifest, { waitReady: false });
    assert.equal((await second.process.status).code, 1);
    await second.stop();
    assert.match(
      second.log(),
      new RegExp(`Data dir ${first.dataDir} is in use by another Outpost \\(PID ${first.process.pid}\\)`),
    );
    const accepted = await postJson(`${first.url}/v1/readings`, reading(1_763_805_600_000));
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    await Deno.remove(secondDir, { recursive: true });
  } finally {
    assert.equal(await first.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "a write lock held by another process gives 503 with Retry-After and not-ready; released, ingest works within a second",
  ignore: !HAS_SQLITE3,
  fn: lockHeldElsewhere,
});

async function lockHeldElsewhere() {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  const sqlite = new Deno.Command("sqlite3", {
    args: [join(outpost.dataDir, "outpost.db")],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const input = sqlite.stdin.getWriter();
  try {
    // The shell waits for the lock (its default is to fail at once): Outpost may hold it for a
    // commit just then, and a BEGIN that failed would leave nothing locked.
    await input.write(
      new TextEncoder().encode(".timeout 5000\nBEGIN IMMEDIATE;\nINSERT INTO cursors VALUES ('lock-test', 0);\n"),
    );
    const refused = await eventually(
      () => postJson(`${outpost.url}/v1/readings`, reading(1_763_805_600_000)),
      (response) => response.status !== 202,
    );
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "5");
    assert.match((await refused.json()).message, /database locked/);
    const notReady = await fetch(`${outpost.url}/readyz`);
    assert.equal(notReady.status, 503);
    assert.match(JSON.stringify(await notReady.json()), /database locked/);
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);

    await input.write(new TextEncoder().encode("ROLLBACK;\n"));
    const released = performance.now();
    await eventually(async () => (await fetch(`${outpost.url}/readyz`)).status, (status) => status === 200, 1_000);
    const accepted = await postJson(`${outpost.url}/v1/readings`, reading(1_763_805_600_001));
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    assert.ok(performance.now() - released < 1_000);
    assert.match(outpost.log(), /"event":"store.commit_failed"/);
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_store_commit_failures_total [1-9]/);
  } finally {
    await input.close().catch(() => {});
    await sqlite.status;
    assert.equal(await outpost.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
}
