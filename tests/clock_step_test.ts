/**
 * A device whose wall clock is years behind at boot (a Raspberry Pi without an RTC) and then
 * steps forward (NTP): Outpost runs under libfaketime with the monotonic clock left real, and the
 * step is written to faketime's timestamp file while it runs.
 */
import assert from "node:assert/strict";
import { Collector } from "./helpers/collector.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const hasFaketime = await Deno.stat(LIBFAKETIME).then(() => true, () => false);

Deno.test({
  name: "a clock years behind at boot that then steps forward loses nothing: kept by retention, forwarded, not expired",
  ignore: !hasFaketime,
  async fn() {
    const dir = await Deno.makeTempDir();
    const clockFile = `${dir}/faketime`;
    await Deno.writeTextFile(clockFile, "-3y\n");
    const collector = await Collector.create({ up: false });
    const manifest = await writeManifest(dir, {
      egressAllowed: [collector.destination],
      logLevel: "warn",
      forwarding: ["raw: true", "backoff: { minMs: 50, maxMs: 200 }", `http: { url: "${collector.url}" }`],
    });
    await Deno.writeTextFile(
      manifest,
      (await Deno.readTextFile(manifest)).replace("  storage:\n", "  storage:\n    retentionHours: 1\n"),
    );
    const env = {
      LD_PRELOAD: LIBFAKETIME,
      FAKETIME_TIMESTAMP_FILE: clockFile,
      FAKETIME_NO_CACHE: "1",
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
    };
    let outpost = await startOutpost(manifest, { env });
    try {
      const now = Date.now(); // the test's own clock is right
      const readings = Array.from(
        { length: 50 },
        (_, i) => ({ device: "pump-1", ts: now - 50_000 + i * 1000, values: { a: i } }),
      );
      // The device's clock reads 2023: readings dated now are not refused as "in the future".
      const accepted = await postJson(`${outpost.url}/v1/readings`, { readings });
      assert.equal(accepted.status, 202, await accepted.text());

      await Deno.writeTextFile(clockFile, "+0\n"); // NTP steps the clock three years forward
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(await outpost.stop(), 0);
      outpost = await startOutpost(manifest, { env }); // retention runs at start
      const ahead = await postJson(`${outpost.url}/v1/readings`, {
        readings: [{ device: "pump-1", ts: Date.now() + 3_600_000, values: { a: 1 } }],
      });
      assert.equal(ahead.status, 400, "with a plausible clock, readings an hour ahead are refused");
      await ahead.body?.cancel();

      const held = await query(outpost.dataDir, "SELECT count(*) AS n FROM readings");
      assert.equal(held[0].n, 50, "retention by the store's clock keeps readings received minutes ago");
      collector.start();
      const readingIds = () => [...collector.unique().values()].filter((item) => item.kind === "reading").length;
      await eventually(readingIds, (n) => n === 50);
    } finally {
      await outpost.stop();
      await collector.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
