import assert from "node:assert/strict";
import { StoreFullError } from "../src/store/errors.ts";
import { FreshReadings } from "../src/detect/fresh_readings.ts";
import { ReadingWriter } from "../src/store/reading_writer.ts";
import { type CommittedReadings, readingsAfterWithin } from "../src/store/readings.ts";
import { withTempDatabase } from "./helpers/db.ts";

Deno.test("concurrent writers share commits and each learns its own duplicates", async () => {
  await withTempDatabase(async (database) => {
    let commits = 0;
    const writer = new ReadingWriter(database.ingest, {
      maxSizeBytes: 1e12,
      usedBytes: () => 0,
      onCommit: () => commits++,
    });
    const writes = Array.from(
      { length: 200 },
      (_, i) =>
        writer.write([{ device: `d${i % 4}`, ts: 1_763_805_600_000 + Math.floor(i / 4), values: { a: i } }], "test"),
    );
    const results = await Promise.all(writes);
    assert.ok(commits < 20, `${commits} commits for 200 writes`);
    assert.equal(results.reduce((sum, r) => sum + r.inserted, 0), 200);
    const again = await writer.write([
      { device: "d0", ts: 1_763_805_600_000, values: { a: 0 } },
      { device: "d9", ts: 1_763_805_600_000, values: { a: 0 } },
    ], "test");
    assert.deepEqual(again, { inserted: 1, duplicates: 1 });
    await writer.close();
    await assert.rejects(writer.write([{ device: "x", ts: 1_763_805_600_000, values: { a: 1 } }], "test"));
  });
});

Deno.test("a writer at its size limit refuses with StoreFullError and stores nothing", async () => {
  await withTempDatabase(async (database) => {
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 100, usedBytes: () => 100 });
    await assert.rejects(
      writer.write([{ device: "x", ts: 1_763_805_600_000, values: { a: 1 } }], "test"),
      StoreFullError,
    );
    const count = await database.client.execute("SELECT count(*) AS n FROM readings");
    assert.equal(Number(count.rows[0].n), 0);
  });
});

Deno.test("the readings a commit hands to the scorer are the rows the store holds, ids included; a commit with duplicates hands none", async () => {
  await withTempDatabase(async (database) => {
    const handed: (CommittedReadings | null)[] = [];
    const writer = new ReadingWriter(database.ingest, {
      maxSizeBytes: 1e12,
      usedBytes: () => 0,
      onCommit: (_inserted, committed) => handed.push(committed),
    });
    const t0 = 1_763_805_600_000;
    // Concurrent writes share commits; some values are not integers, one sensor name is unicode.
    await Promise.all(Array.from({ length: 50 }, (_, i) =>
      writer.write([
        { device: `d${i % 3}`, ts: t0 + i, values: { a: i / 7, "température": -i } },
        { device: "e", ts: t0 + i, values: { b: 1e-300 * i } },
      ], "test")));
    await writer.write(
      [{ device: "d0", ts: t0, values: { a: 0 } }, { device: "new", ts: t0, values: { a: 1 } }],
      "test",
    );
    await writer.write([{ device: "after", ts: t0, values: { z: 2 } }], "test");
    const { readings: stored } = await readingsAfterWithin(database.client, 0, 1000, 1e12);
    const known = handed.filter((commit) => commit !== null);
    assert.equal(handed.filter((commit) => commit === null).length, 1, "the commit with a duplicate hands nothing");
    const fromCommits = known.flatMap((commit) => commit.rows());
    const duplicateCommitRow = stored.find((row) => row.device === "new")!;
    assert.deepEqual(fromCommits, stored.filter((row) => row.id !== duplicateCommitRow.id));
  });
});

Deno.test("fresh readings answer a pass exactly as the store would, or not at all", async () => {
  await withTempDatabase(async (database) => {
    const fresh = new FreshReadings({ maxRows: 40, maxBytes: 4_000 });
    const writer = new ReadingWriter(database.ingest, {
      maxSizeBytes: 1e12,
      usedBytes: () => 0,
      onCommit: (_inserted, committed) => fresh.committed(committed),
    });
    const t0 = 1_763_805_600_000;
    let ts = t0;
    const write = (count: number, device = "d") =>
      writer.write(Array.from({ length: count }, () => ({ device, ts: ts++, values: { a: ts % 13 } })), "test");
    let cursor = 0;
    const pass = async (limit: number) => {
      const held = fresh.after(cursor, limit);
      const { readings: stored } = await readingsAfterWithin(database.client, cursor, limit, 1e12);
      if (held !== null) assert.deepEqual(held, stored, `after ${cursor}`);
      if (stored.length > 0) cursor = stored[stored.length - 1].id;
      return held !== null;
    };
    await write(5);
    assert.ok(await pass(100), "a pass right behind the writer is answered");
    await write(3);
    await write(4);
    assert.ok(await pass(2), "a pass that takes part of them");
    assert.ok(await pass(100), "and the rest");
    await write(30);
    await write(30); // past maxRows: let go
    assert.equal(await pass(50), false);
    await write(2); // starts again, ahead of the scorer
    assert.equal(await pass(100), false, "the scorer still behind reads the store");
    await write(1);
    assert.ok(await pass(100), "caught up, it is answered again");
    await write(1);
    await writer.write([{ device: "d", ts: t0, values: { a: 0 } }], "test"); // a duplicate: unknown ids
    await write(1);
    assert.equal(await pass(100), false);
    await write(1);
    assert.ok(await pass(100));
    await write(3, "x".repeat(1_500)); // past maxBytes
    assert.equal(await pass(100), false);
    await writer.close();
  });
});
