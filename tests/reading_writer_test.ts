import assert from "node:assert/strict";
import { createLogger } from "../src/observability/log.ts";
import { openDatabase } from "../src/store/database.ts";
import { StoreFullError } from "../src/store/errors.ts";
import { ReadingWriter } from "../src/store/reading_writer.ts";

const quiet = createLogger("error", () => {});

Deno.test("concurrent writers share commits and each learns its own duplicates", async () => {
  const dir = await Deno.makeTempDir();
  const database = await openDatabase(dir, quiet);
  try {
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
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a writer at its size limit refuses with StoreFullError and stores nothing", async () => {
  const dir = await Deno.makeTempDir();
  const database = await openDatabase(dir, quiet);
  try {
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 100, usedBytes: () => 100 });
    await assert.rejects(
      writer.write([{ device: "x", ts: 1_763_805_600_000, values: { a: 1 } }], "test"),
      StoreFullError,
    );
    const count = await database.client.execute("SELECT count(*) AS n FROM readings");
    assert.equal(Number(count.rows[0].n), 0);
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
});
