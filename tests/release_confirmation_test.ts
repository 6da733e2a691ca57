import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";

Deno.test("a confirmation that cannot be written (disk full, no descriptor) is retried, and never ends the process", async () => {
  const dir = await Deno.makeTempDir();
  const dataDir = join(dir, "data");
  // A folder where the file goes: every write of it fails, as on a full disk.
  const blocker = join(dataDir, "release-confirmation.json");
  await Deno.mkdir(join(blocker, "in-the-way"), { recursive: true });
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  try {
    await eventually(
      () => Promise.resolve(outpost.log()),
      (log) => log.includes("release.confirmation_failed"),
      15_000,
    );
    // Past the settle period and the failed write: still serving.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);
    await Deno.remove(blocker, { recursive: true });
    const confirmed = await eventually(
      () => Deno.readTextFile(blocker).catch(() => ""),
      (text) => text.includes("instanceId"),
      15_000,
    );
    assert.ok(JSON.parse(confirmed).confirmedAt);
  } finally {
    const code = await outpost.stop();
    assert.equal(code, 0);
    await Deno.remove(dir, { recursive: true });
  }
});
