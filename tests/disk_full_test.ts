import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

/** A 3 MB tmpfs for the data dir; null where mounting is not permitted (not root). */
async function smallDisk(): Promise<string | null> {
  const dir = await Deno.makeTempDir({ prefix: "outpost-disk-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=3m", "tmpfs", dir],
    stderr: "null",
  })
    .output().catch(() => null);
  if (!mount?.success) {
    await Deno.remove(dir);
    return null;
  }
  return dir;
}

const disk = await smallDisk();

Deno.test({
  name: "a full disk fails readiness with a reason, refuses ingest with 503, and Outpost recovers when space returns",
  ignore: disk === null,
  async fn() {
    const dir = await Deno.makeTempDir();
    const filler = join(disk!, "filler");
    try {
      await Deno.writeFile(filler, new Uint8Array(1024 * 1024));
      const manifest = await writeManifest(dir, { logLevel: "error" });
      await Deno.writeTextFile(
        manifest,
        (await Deno.readTextFile(manifest)).replace(join(dir, "data"), join(disk!, "data")),
      );
      const outpost = await startOutpost(manifest);
      try {
        let status = 202;
        let body: Record<string, unknown> = {};
        for (let batch = 0; batch < 400 && status === 202; batch++) {
          const readings = Array.from({ length: 100 }, (_, i) => ({
            device: "d",
            ts: 1_763_805_600_000 + batch * 100 + i,
            values: { a: i, pad: batch },
          }));
          const response = await postJson(`${outpost.url}/v1/readings`, { readings });
          status = response.status;
          body = await response.json();
        }
        assert.equal(status, 503);
        assert.equal(body.error, "store_unavailable");
        const notReady = await fetch(`${outpost.url}/readyz`);
        assert.equal(notReady.status, 503);
        assert.match(JSON.stringify(await notReady.json()), /disk full/);
        assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);

        await Deno.remove(filler);
        const retry = await postJson(`${outpost.url}/v1/readings`, {
          device: "d",
          ts: 1_900_000_000_000,
          values: { a: 1 },
        });
        assert.equal(retry.status, 202);
        await retry.body?.cancel();
        await eventually(async () => (await fetch(`${outpost.url}/readyz`)).status, (code) => code === 200);
      } finally {
        assert.equal(await outpost.stop(), 0);
      }
    } finally {
      await new Deno.Command("umount", { args: [disk!] }).output();
      await Deno.remove(disk!, { recursive: true });
      await Deno.remove(dir, { recursive: true });
    }
  },
});
