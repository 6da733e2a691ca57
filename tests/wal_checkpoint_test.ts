/**
 * Who checkpoints the WAL (src/store/database.ts, src/store/wal_checkpoints.ts): the reading
 * writer, just before one of its commits, so that the commit which starts the WAL again is an
 * ingest commit and not a scoring pass's; SQLite's automatic checkpoint, at a higher bound, when
 * nothing is ingested. `mxFrame` falls only when a commit starts the WAL again.
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
import { CHECKPOINT_RETRY_MS, WalCheckpoints } from "../src/store/wal_checkpoints.ts";
import { withTempDatabase } from "./helpers/db.ts";
import { mountTmpfs, unmountTmpfs } from "./helpers/tmpfs.ts";

/** A WAL frame: a 24-byte header and a 4 KiB page; the file starts with a 32-byte header. */
const walBytes = (frames: number) => 32 + frames * (24 + 4096);
/** A row bigger than half a page: every commit of one writes at least one new page. */
const probeRow = `INSERT INTO wal_probe VALUES (x'${"ab".repeat(2_500)}')`;

/** A temp database with a `wal_probe` table for rows that each write a new page. */
function withProbeDatabase(encrypted: boolean, fn: (database: Database, walPath: string) => Promise<void>) {
  return withTempDatabase(async (database) => {
    await database.client.execute("CREATE TABLE wal_probe (body BLOB)");
    await fn(database, `${database.path}-wal`);
  }, { encrypted });
}

Deno.test("with nothing ingested, derived commits checkpoint at the automatic bound, so the WAL stays bounded", async () => {
  await withProbeDatabase(false, async (database, walPath) => {
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
  Deno.test(`with readings arriving, the WAL is started again by ingest commits, never by the scoring commit after one${encrypted ? " (encrypted store)" : ""}`, async () => {
    await withProbeDatabase(encrypted, async (database, walPath) => {
      const writer = new ReadingWriter(database.ingest, {
        maxSizeBytes: 1e12,
        usedBytes: () => 0,
        beforeCommit: () => database.checkpoints.beforeCommit(),
      });
      const frames = () => database.checkpoints.walIndex()!.frames;
      let ingestRestarts = 0;
      let largest = 0;
      // As in production: each ingest commit is followed by a derived commit (the scoring pass).
      for (let i = 0; i < 3 * INGEST_CHECKPOINT_PAGES; i++) {
        const beforeIngest = frames();
        await writer.write([{ device: "d", ts: 1_763_805_600_000 + i, values: { a: i } }], "test");
        if (frames() < beforeIngest) ingestRestarts++;
        const beforeDerived = frames();
        await commitDerived(database.client, [probeRow]);
        assert.ok(
          frames() > beforeDerived,
          `derived commit ${i} started the WAL again (${beforeDerived} -> ${frames()} frames)`,
        );
        largest = Math.max(largest, (await Deno.stat(walPath)).size);
      }
      assert.ok(ingestRestarts >= 2, `${ingestRestarts} restarts by ingest commits`);
      assert.ok(largest <= walBytes(INGEST_CHECKPOINT_PAGES + 10), `WAL peaked at ${largest} bytes`);
      await writer.close();
    });
  });
}

/** A 32 MB disk to fill up. */
const disk = await mountTmpfs(32, "outpost-wal-disk-");

Deno.test({
  name: "a checkpoint that fails on a full disk is logged and counted, does not fail ingest, and is tried again later",
  ignore: disk === null,
  async fn() {
    const logged: string[] = [];
    const log = createLogger("warn", (line) => logged.push(line));
    const database = await openDatabase(join(disk!, "data"), log);
    let clock = 0;
    const checkpoints = new WalCheckpoints(database.path, database.ingest, INGEST_CHECKPOINT_PAGES, log, {
      now: () => clock,
    });
    const writer = new ReadingWriter(database.ingest, {
      maxSizeBytes: 1e12,
      usedBytes: () => 0,
      beforeCommit: () => checkpoints.beforeCommit(),
    });
    const filler = join(disk!, "filler");
    try {
      await database.client.execute("CREATE TABLE wal_probe (body BLOB)");
      // 1,500 new pages through the WAL and copied back: the WAL file keeps its size for reuse.
      for (let i = 0; i < 1_500; i++) await commitDerived(database.client, [probeRow]);
      await database.client.execute("PRAGMA wal_checkpoint(PASSIVE)");
      // The disk is full: new pages fit in the reused WAL but not in the database file.
      const file = await Deno.open(filler, { write: true, create: true });
      try {
        while (true) await file.write(new Uint8Array(64 * 1024));
      } catch (error) {
        if (!(error instanceof Error && /space/i.test(error.message))) throw error;
      } finally {
        file.close();
      }
      let ts = 1_763_805_600_000;
      const ingestAndScore = async () => {
        await writer.write([{ device: "d", ts: ts++, values: { a: 1 } }], "test");
        await commitDerived(database.client, [probeRow]);
      };
      while (checkpoints.walIndex()!.frames < INGEST_CHECKPOINT_PAGES + 20) await ingestAndScore();
      assert.equal(checkpoints.failures, 1, "tried once, then left for the retry delay");
      assert.equal(logged.filter((line) => line.includes("store.checkpoint_failed")).length, 1);

      clock += CHECKPOINT_RETRY_MS;
      await ingestAndScore();
      assert.equal(checkpoints.failures, 2, "tried again after the delay, still full");

      await Deno.remove(filler);
      clock += CHECKPOINT_RETRY_MS;
      await ingestAndScore();
      assert.equal(checkpoints.failures, 2);
      assert.ok(checkpoints.walIndex()!.frames < 10, "checkpointed, and the ingest commit started the WAL again");
    } finally {
      await writer.close().catch(() => {});
      database.close();
      checkpoints.close();
      await unmountTmpfs(disk!);
    }
  },
});
