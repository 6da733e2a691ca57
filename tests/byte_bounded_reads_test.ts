/**
 * Passes behind the writer read readings by their size as well as their count: 2,000 readings of
 * 64 sensors with 128-character names are 19 MB of JSON, several times that once parsed, against
 * a V8 heap of 64 MiB. A pass cut for size must still go on until nothing is waiting.
 */
import assert from "node:assert/strict";
import { Aggregator } from "../src/forward/aggregator.ts";
import { Outbox } from "../src/store/outbox.ts";
import { Inference } from "../src/detect/inference.ts";
import { ModelRegistry } from "../src/detect/registry.ts";
import { Scorer } from "../src/detect/scorer.ts";
import { createLogger } from "../src/observability/log.ts";
import type { Database } from "../src/store/database.ts";
import { ReadingWriter } from "../src/store/reading_writer.ts";
import { maxReadingId, readingsAfterWithin } from "../src/store/readings.ts";
import { RollupPass } from "../src/store/rollup_pass.ts";
import { DEFAULT_DETECTION as DETECTION } from "./helpers/detection_defaults.ts";
import { withTempDatabase } from "./helpers/db.ts";
import { FORWARDING_CONFIG } from "./helpers/forwarding_config.ts";

const quiet = createLogger("error", () => {});
const count = async (client: Database["client"], sql: string) => Number((await client.execute(sql)).rows[0][0]);
const T0 = 1_763_805_600_000;
const longName = (j: number) => `${"s".repeat(124)}${String(j).padStart(4, "0")}`;
/** A reading of 64 sensors with 128-character names: about 9 KB of JSON. */
const fat = (device: string, i: number) => ({
  device,
  ts: T0 + i * 1000,
  values: Object.fromEntries(Array.from({ length: 64 }, (_, j) => [longName(j), Math.sin(i / 7 + j) + (i % 5) / 10])),
});

async function writeFat(database: Database, count: number, device = "fat") {
  const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 1e12, usedBytes: () => 0 });
  for (let i = 0; i < count; i += 100) {
    await writer.write(Array.from({ length: Math.min(100, count - i) }, (_, k) => fat(device, i + k)), "test");
  }
  await writer.close();
}

Deno.test("a read by size keeps the readings whose values fit the bound (or the first alone) and says when it cut", async () => {
  await withTempDatabase(async (database) => {
    await writeFat(database, 10);
    const sizes = (await readingsAfterWithin(database.client, 0, 10, 1e9)).readings.map((r) => r.valuesJson.length);
    const firstThree = sizes[0] + sizes[1] + sizes[2];
    const bounded = await readingsAfterWithin(database.client, 0, 10, firstThree + sizes[3] - 1);
    assert.deepEqual([bounded.readings.map((r) => r.id), bounded.cut], [[1, 2, 3], true]);
    const exact = await readingsAfterWithin(database.client, 0, 10, firstThree);
    assert.deepEqual(
      [exact.readings.map((r) => r.id), exact.cut],
      [[1, 2, 3], true],
      "a reading ending on the bound fits",
    );
    const one = await readingsAfterWithin(database.client, 0, 10, 1);
    assert.deepEqual([one.readings.length, one.cut], [1, true], "a reading larger than the bound still goes");
    const byCount = await readingsAfterWithin(database.client, 6, 2, 1e9);
    assert.deepEqual([byCount.readings.map((r) => r.id), byCount.cut], [[7, 8], false]);
    const rest = await readingsAfterWithin(database.client, 8, 100, 1e9);
    assert.deepEqual([rest.readings.map((r) => r.id), rest.cut], [[9, 10], false]);
  });
});

Deno.test("rollups fold 600 readings of 9 KB (5 MB) in commits of at most 1 MB, all of them in one fold call", async () => {
  await withTempDatabase(async (database) => {
    await writeFat(database, 600);
    const pass = new RollupPass(database.client, { maxSensors: 64 });
    assert.equal(await pass.fold(1000), 600);
    assert.equal(await count(database.client, "SELECT sum(readings) FROM rollup_minutes WHERE device = 'fat'"), 600);
    assert.equal(await pass.fold(1000), 0);
  });
});

Deno.test("the scorer catches up on 2,400 readings of 9 KB (22 MB) behind its cursor: passes cut for size go on", async () => {
  await withTempDatabase(async (database, dir) => {
    await writeFat(database, 1_200, "fat-a");
    await writeFat(database, 1_200, "fat-b");
    const inference = new Inference(1);
    const registry = new ModelRegistry(database.client, inference, { modelsDir: `${dir}/models`, log: quiet });
    await registry.init();
    const scorer = new Scorer(database.client, DETECTION, { registry, inference, outbox: null, log: quiet });
    try {
      await scorer.catchUp();
      assert.equal(scorer.cursor, await maxReadingId(database.client), "one catch-up scores to the end");
      const scored = await count(
        database.client,
        "SELECT count(*) FROM readings WHERE score IS NOT NULL AND device = 'fat-b'",
      );
      assert.ok(scored >= 700, `fat-b scored after its calibration: ${scored}`);
    } finally {
      await scorer.stop();
      await inference.release();
    }
  });
});

Deno.test("the aggregator folds 600 readings of 9 KB in passes of at most 1 MB, all of them in one catch-up", async () => {
  await withTempDatabase(async (database) => {
    await writeFat(database, 600);
    const outbox = new Outbox(database.client, { sinks: [], ttlMs: FORWARDING_CONFIG.ttlMs, maxBufferBytes: 1e9 });
    const aggregator = new Aggregator(database.client, FORWARDING_CONFIG, {
      outbox,
      log: quiet,
      now: () => T0 + 3_600_000,
    });
    assert.equal(await aggregator.catchUp(), 600);
  });
});
