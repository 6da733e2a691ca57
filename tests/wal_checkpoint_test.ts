/**
 * Who checkpoints the WAL (src/store/database.ts, src/store/wal_checkpoints.ts): the reading
 * writer, just before one of its commits, so that the commit which starts the WAL again is an
 * ingest commit and not a scoring pass's; SQLite's automatic checkpoint, at a higher bound, when
 * nothing is ingested.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createLogger } from "../src/observability/log.ts";
import {
  AUTOMATIC_CHECKPOINT_PAGES,
  type Database,
  INGEST_CHECKPOINT_PAGES,
  openDatabase,
} from "../src/store/database.ts";
import { commitDerived } from "../src/store/derived_commit.ts";
import { ReadingWriter } from "../src/store/reading_writer.ts";

const quiet = createLogger("error", () => {});
/** A WAL frame: a 24-byte header and a 4 KiB page; the file starts with a 32-byte header. */
const walBytes = (frames: number) => 32 + frames * (24 + 4096);
/** A row bigger than half a page: every commit of one writes at least one new page. */
const probeRow = `INSERT INTO wal_probe VALUES (x'${"ab".repeat(2_500)}')`;

async function withDatabase(encrypted: boolean, fn: (database: Database, walPath: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  let encryptionKey = null;
  if (encrypted) {
    encryptionKey = { path: join(dir, "db-key"), source: "manifest" as const };
    await Deno.writeTextFile(encryptionKey.path, "0123456789abcdef".repeat(4));
  }
  const database = await openDatabase(join(dir, "data"), quiet, { encryptionKey });
  try {
    await database.client.execute("CREATE TABLE wal_probe (body BLOB)");
    await fn(database, `${database.path}-wal`);
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("with nothing ingested, derived commits checkpoint at the automatic bound, so the WAL stays bounded", async () => {
  await withDatabase(false, async (database, walPath) => {
    let largest = 0;
    for (let i = 0; i < AUTOMATIC_CHECKPOINT_PAGES + 500; i++) {
      await commitDerived(database.client, [probeRow]);
      largest = Math.max(largest, (await Deno.stat(walPath)).size);
    }
    // Past the writer's bound: a derived commit did not checkpoint there...
    assert.ok(largest > walBytes(INGEST_CHECKPOINT_PAGES + 100), `WAL peaked at ${largest} bytes`);
    // ...but did at the automatic one (a WAL file is reused after a checkpoint, not grown).
    assert.ok(largest <= walBytes(AUTOMATIC_CHECKPOINT_PAGES + 10), `WAL peaked at ${largest} bytes`);
  });
});

for (const encrypted of [false, true]) {
  Deno.test(`the writer checkpoints before its commit, which starts the WAL again, not the derived commit after it${encrypted ? " (encrypted store)" : ""}`, async () => {
    await withDatabase(encrypted, async (database, walPath) => {
      const writer = new ReadingWriter(database.ingest, {
        maxSizeBytes: 1e12,
        usedBytes: () => 0,
        beforeCommit: () => database.checkpoints.beforeCommit(),
      });
      let ts = 1_763_805_600_000;
      let largest = 0;
      for (let round = 0; round < 3; round++) {
        // Derived commits fill the WAL to the writer's bound (the automatic bound is far above).
        while (database.checkpoints.walIndex()!.frames < INGEST_CHECKPOINT_PAGES) {
          await commitDerived(database.client, [probeRow]);
          await writer.write([{ device: "d", ts: ts++, values: { a: 1 } }], "test");
          largest = Math.max(largest, (await Deno.stat(walPath)).size);
        }
        assert.ok(database.checkpoints.walIndex()!.frames < INGEST_CHECKPOINT_PAGES + 10);
        await writer.write([{ device: "d", ts: ts++, values: { a: 1 } }], "test");
        // The writer's commit came right after the checkpoint: it started the WAL from its
        // beginning (an automatic checkpoint inside its commit would have left that to the next).
        const after = database.checkpoints.walIndex()!;
        assert.ok(after.frames < 10, `${after.frames} frames in the WAL after the writer's commit`);
        await commitDerived(database.client, [probeRow]);
        assert.ok(database.checkpoints.walIndex()!.frames < 20);
      }
      assert.ok(largest <= walBytes(INGEST_CHECKPOINT_PAGES + 10), `WAL peaked at ${largest} bytes`);
      await writer.close();
    });
  });
}
