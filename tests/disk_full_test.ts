import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { mountTmpfs, unmountTmpfs } from "./helpers/tmpfs.ts";

/** A 3 MB disk for the data dir. */
const disk = await mountTmpfs(3);

Deno.test({
  name: "a full disk fails readiness with a reason, refuses ingest with 503, and Outpost recovers when space returns",
  ignore: disk === null,
  async fn() {
    const dir = await Deno.makeTempDir();
    const filler = join(disk!, "filler");
    try {
      await Deno.writeFile(filler, new Uint8Array(1024 * 1024));
      const manifest = await writeManifest(dir, { logLevel: "warn" });
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
        // Readiness recovers by its own probe, before any client writes again.
        await eventually(async () => (await fetch(`${outpost.url}/readyz`)).status, (code) => code === 200, 3_000);
        const retry = await postJson(`${outpost.url}/v1/readings`, {
          device: "d",
          ts: 1_763_900_000_000,
          values: { a: 1 },
        });
        assert.equal(retry.status, 202);
        await retry.body?.cancel();
        assert.match(outpost.log(), /"event":"store.commit_failed","reason":"disk full"/);
      } finally {
        assert.equal(await outpost.stop(), 0);
      }
    } finally {
      await unmountTmpfs(disk!);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a read-only data dir with an existing database is not ready (503), with the reason",
  ignore: disk === null,
  async fn() {
    const dir = await Deno.makeTempDir();
    const readOnly = await mountTmpfs(3);
    try {
      const manifest = await writeManifest(dir, { logLevel: "warn" });
      await Deno.writeTextFile(
        manifest,
        (await Deno.readTextFile(manifest)).replace(join(dir, "data"), join(readOnly!, "data")),
      );
      const first = await startOutpost(manifest);
      const stored = await postJson(`${first.url}/v1/readings`, {
        device: "d",
        ts: 1_763_805_600_000,
        values: { a: 1 },
      });
      assert.equal(stored.status, 202);
      await stored.body?.cancel();
      assert.equal(await first.stop(), 0);
      const remount = await new Deno.Command("mount", { args: ["-o", "remount,ro", readOnly!] }).output();
      assert.ok(remount.success);
      const outpost = await startOutpost(manifest, { waitReady: false });
      try {
        const ready = await eventually(
          () => fetch(`${outpost.url}/readyz`).then((response) => response, () => null),
          (response) => response !== null,
        );
        assert.equal(ready!.status, 503);
        assert.match(JSON.stringify(await ready!.json()), /read-only|readonly/i);
        const refused = await postJson(`${outpost.url}/v1/readings`, {
          device: "d",
          ts: 1_763_805_600_001,
          values: { a: 1 },
        });
        assert.equal(refused.status, 503);
        await refused.body?.cancel();
      } finally {
        const code = await outpost.stop();
        assert.equal(code, 0, outpost.log());
      }
    } finally {
      await unmountTmpfs(readOnly!);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
