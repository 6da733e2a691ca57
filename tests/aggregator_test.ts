import assert from "node:assert/strict";
import { Aggregator } from "../src/forward/aggregator.ts";
import { Outbox } from "../src/store/outbox.ts";
import { createLogger } from "../src/observability/log.ts";
import { openDatabase } from "../src/store/database.ts";
import { ReadingWriter } from "../src/store/reading_writer.ts";
import { FORWARDING_CONFIG } from "./helpers/forwarding_config.ts";

const quiet = createLogger("error", () => {});
const config = FORWARDING_CONFIG;

Deno.test("historical data replayed hours later aggregates by reading time, windows closing past end plus grace", async () => {
  const dir = await Deno.makeTempDir();
  const database = await openDatabase(dir, quiet);
  try {
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 1e12, usedBytes: () => 0 });
    const outbox = new Outbox(database.client, { sinks: [], ttlMs: config.ttlMs, maxBufferBytes: 1e9 });
    const aggregator = new Aggregator(database.client, config, { outbox, log: quiet });
    const start = Date.parse("2026-11-01T00:00:00Z"); // three weeks ago
    // 3 minutes at 1 Hz, replayed out of order within each minute.
    const readings = [];
    for (let second = 0; second < 180; second++) {
      readings.push({ device: "pump 7", ts: start + second * 1000, values: { temp: second, flow: -second } });
    }
    for (let i = 0; i < readings.length; i += 30) await writer.write(readings.slice(i, i + 30).reverse(), "test");
    await aggregator.catchUp();
    const queued = (await outbox.next("http", 100)).map((item) => JSON.parse(item.body));
    // Minutes 0 and 1 closed (a reading past end + 5 s arrived); minute 2 stays open (idle timer).
    assert.deepEqual(queued.map((item) => [item.sensor, item.start]).sort(), [
      ["flow", start],
      ["flow", start + 60_000],
      ["temp", start],
      ["temp", start + 60_000],
    ]);
    const temp0 = queued.find((item) => item.sensor === "temp" && item.start === start);
    assert.deepEqual(
      { ...temp0, id: undefined },
      {
        id: undefined,
        kind: "aggregate",
        device: "pump 7",
        sensor: "temp",
        start,
        seconds: 60,
        count: 60,
        min: 0,
        max: 59,
        mean: 29.5,
        last: 59,
      },
    );
    // A late reading for a closed minute makes a new item with its own id, not a lost update.
    await writer.write([{ device: "pump 7", ts: start + 1_500, values: { temp: 1000 } }], "test");
    await writer.write([{ device: "pump 7", ts: start + 181_000, values: { temp: 1 } }], "test");
    await aggregator.catchUp();
    const late = (await outbox.next("http", 100)).map((item) => JSON.parse(item.body))
      .filter((item) => item.sensor === "temp" && item.start === start);
    assert.equal(late.length, 2);
    assert.notEqual(late[0].id, late[1].id);
    assert.deepEqual([late[1].count, late[1].max], [1, 1000]);
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
});
