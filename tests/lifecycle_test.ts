import assert from "node:assert/strict";
import { storedReadings } from "./helpers/db.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";

const HAS_PROMTOOL = await new Deno.Command("sh", { args: ["-c", "command -v promtool"], stdout: "null" }).output()
  .then((output) => output.success, () => false);

Deno.test("SIGTERM during ingest: in-flight commits finish, the store closes, exit 0 within the grace period", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir));
  try {
    const acknowledged: number[] = [];
    let inFlightAtStop = 0;
    let inFlight = 0;
    let batch = 0;
    const firstAck = Promise.withResolvers<void>();
    // Four clients send batches back to back until Outpost stops answering.
    const sends = Array.from({ length: 4 }, async () => {
      while (true) {
        const i = batch++;
        const readings = Array.from(
          { length: 100 },
          (_, j) => ({ device: "d", ts: 1_763_805_600_000 + i * 100 + j, values: { a: j } }),
        );
        inFlight++;
        try {
          const response = await postJson(`${outpost.url}/v1/readings`, { readings });
          await response.body?.cancel();
          if (response.status !== 202) return;
          acknowledged.push(...readings.map((r) => r.ts));
          firstAck.resolve();
        } catch {
          return; // refused after shutdown began
        } finally {
          inFlight--;
        }
      }
    });
    await firstAck.promise;
    inFlightAtStop = inFlight;
    const started = performance.now();
    const code = await outpost.stop();
    await Promise.all(sends);
    assert.equal(code, 0);
    assert.ok(performance.now() - started < 10_000);
    assert.match(outpost.log(), /"event":"store.closed"/);
    const stored = new Set((await storedReadings(outpost.dataDir)).map((r) => r.ts));
    assert.deepEqual(acknowledged.filter((ts) => !stored.has(ts)), []);
    assert.ok(
      acknowledged.length > 0 && inFlightAtStop > 0,
      `${acknowledged.length} acknowledged, ${inFlightAtStop} in flight`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("logs are one JSON object per line with ts, level and event", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir));
  await outpost.stop();
  try {
    const lines = outpost.log().trim().split("\n");
    assert.ok(lines.length >= 3);
    for (const line of lines) {
      const entry = JSON.parse(line);
      assert.equal(typeof entry.ts, "string");
      assert.ok(["debug", "info", "warn", "error"].includes(entry.level));
      assert.equal(typeof entry.event, "string");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/metrics is also served on a separate metricsPort and counts readings by source and result", async () => {
  const dir = await Deno.makeTempDir();
  const metricsPort = await freePort();
  const outpost = await startOutpost(await writeManifest(dir, { metricsPort }));
  try {
    const response = await postJson(`${outpost.url}/v1/readings`, {
      device: "d",
      ts: 1_763_805_600_000,
      values: { a: 1 },
    });
    await response.body?.cancel();
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(text, /outpost_readings_total\{source="http",result="stored"\} 1/);
    assert.match(text, /outpost_process_resident_memory_bytes [1-9]\d+/);
    assert.match(text, /outpost_store_readings 1/);
    assert.equal((await fetch(`${outpost.url}/metrics`)).status, 404);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "/metrics passes promtool check metrics with no warnings",
  ignore: !HAS_PROMTOOL,
  async fn() {
    const dir = await Deno.makeTempDir();
    const outpost = await startOutpost(await writeManifest(dir));
    try {
      const response = await postJson(`${outpost.url}/v1/readings`, {
        device: "d",
        ts: 1_763_805_600_000,
        values: { a: 1 },
      });
      await response.body?.cancel();
      await (await fetch(`${outpost.url}/v1/nowhere`)).body?.cancel();
      const text = await (await fetch(`${outpost.url}/metrics`)).text();
      const promtool = new Deno.Command("promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      })
        .spawn();
      const writer = promtool.stdin.getWriter();
      await writer.write(new TextEncoder().encode(text));
      await writer.close();
      const output = await promtool.output();
      const said = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 0, said);
      assert.equal(said.trim(), "");
    } finally {
      await outpost.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
