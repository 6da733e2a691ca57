import assert from "node:assert/strict";
import { Collector } from "./helpers/collector.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const readings = (from: number) =>
  Array.from(
    { length: 50 },
    (_, i) => ({ device: "pump-1", ts: 1_763_805_600_000 + (from + i) * 1000, values: { a: i } }),
  );

async function startWithCollector(dir: string, collector: Collector) {
  return await startOutpost(
    await writeManifest(dir, {
      egressAllowed: [collector.destination],
      logLevel: "info",
      forwarding: [
        "raw: true",
        "backoff: { minMs: 50, maxMs: 200 }",
        `http: { url: "${collector.url}", timeoutMs: 60000 }`,
      ],
    }),
  );
}

Deno.test("SIGTERM with a collector that never answers: the delivery is aborted, the store closes, exit 0 within the grace", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  collector.hang = true;
  const outpost = await startWithCollector(dir, collector);
  try {
    const accepted = await postJson(`${outpost.url}/v1/readings`, { readings: readings(0) });
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    await eventually(() => collector.requests, (n) => n > 0);
    const started = performance.now();
    const code = await outpost.stop();
    const took = performance.now() - started;
    assert.equal(code, 0, outpost.log().slice(-2000));
    assert.ok(took < 10_000, `stopped in ${Math.round(took)} ms`);
    assert.match(outpost.log(), /"event":"store.closed"/);
    assert.doesNotMatch(outpost.log(), /shutdown_timeout/);
  } finally {
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a collector answering 307 is not followed: the delivery fails, the audit names the Location, the batch stays queued", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const elsewhere = await Collector.create();
  collector.redirectTo = elsewhere.url;
  const outpost = await startWithCollector(dir, collector);
  try {
    const accepted = await postJson(`${outpost.url}/v1/readings`, { readings: readings(0) });
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    const audit = await eventually(
      () =>
        query(
          outpost.dataDir,
          "SELECT outcome, error FROM egress_audit WHERE purpose = 'forward' AND outcome != 'attempt' ORDER BY id",
        ),
      (rows) => rows.length >= 2,
    );
    assert.equal(audit[0].outcome, "http_error");
    assert.equal(audit[0].error, `HTTP 307 redirect to ${elsewhere.url} not followed`);
    assert.equal(elsewhere.requests, 0);
    collector.redirectTo = null;
    await eventually(() => collector.items().length, (n) => n === 50);
    assert.equal(elsewhere.requests, 0);
  } finally {
    await outpost.stop();
    await collector.stop();
    await elsewhere.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
