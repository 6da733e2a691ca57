import type { Client } from "@libsql/client";
import assert from "node:assert/strict";
import { join } from "node:path";
import { createLogger } from "../src/observability/log.ts";
import { LimitExceededError } from "../src/limit_exceeded_error.ts";
import { openDatabase } from "../src/store/database.ts";
import { commitDerived } from "../src/store/derived_commit.ts";
import { ReadingWriter } from "../src/store/reading_writer.ts";
import { deleteExpiredReadings } from "../src/store/retention.ts";
import { Store } from "../src/store/store.ts";
import { withTempDatabase } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";

const quiet = createLogger("error", () => {});
const reading = (device: string, ts: number) => ({ device, ts, values: { a: ts % 100 } });

const pragmas = async (client: Client) => ({
  synchronous: Number((await client.execute("PRAGMA synchronous")).rows[0][0]),
  busyTimeout: Number((await client.execute("PRAGMA busy_timeout")).rows[0][0]),
});

Deno.test("each connection keeps its role's pragmas after mixed ingest, derived commits and reads", async () => {
  await withTempDatabase(async (database) => {
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 1e12, usedBytes: () => 0 });
    await Promise.all([
      ...Array.from({ length: 50 }, (_, i) => writer.write([reading(`d${i % 5}`, 1_763_805_600_000 + i)], "test")),
      ...Array.from({ length: 20 }, (_, i) => commitDerived(database.client, [`UPDATE readings SET score = ${i}`])),
      ...Array.from({ length: 20 }, () => database.client.execute("SELECT count(*) FROM readings")),
    ]);
    await writer.close();
    // FULL = 2, NORMAL = 1; each client holds exactly one connection, so one read tells all.
    assert.deepEqual(await pragmas(database.ingest), { synchronous: 2, busyTimeout: 250 });
    assert.deepEqual(await pragmas(database.client), { synchronous: 1, busyTimeout: 250 });
  });
});

Deno.test("ids are never reused after retention empties the table, so cursors keep seeing new rows", async () => {
  await withTempDatabase(async (database) => {
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 1e12, usedBytes: () => 0 });
    await writer.write(Array.from({ length: 30 }, (_, i) => reading("d", 1_763_805_600_000 + i)), "test");
    const maxBefore = Number((await database.client.execute("SELECT max(id) FROM readings")).rows[0][0]);
    assert.equal(await deleteExpiredReadings(database.client, Number.MAX_SAFE_INTEGER), 29);
    await writer.write([reading("d", 1_763_805_700_000)], "test");
    const ids = (await database.client.execute("SELECT id FROM readings ORDER BY id")).rows.map((row) =>
      Number(row[0])
    );
    assert.deepEqual(ids, [maxBefore, maxBefore + 1]);
    await writer.close();
  });
});

Deno.test("retention deletes expired rows behind rows stamped in the future (a clock step back)", async () => {
  await withTempDatabase(async (database) => {
    const now = Date.now();
    let stamp = now + 365 * 86_400_000;
    const writer = new ReadingWriter(database.ingest, { maxSizeBytes: 1e12, usedBytes: () => 0, now: () => stamp });
    await writer.write(Array.from({ length: 6_000 }, (_, i) => reading("ahead", 1_763_805_600_000 + i)), "test");
    stamp = now - 10 * 86_400_000;
    await writer.write(Array.from({ length: 10_000 }, (_, i) => reading("old", 1_763_805_600_000 + i)), "test");
    stamp = now;
    await writer.write([reading("fresh", 1_763_805_600_000)], "test");
    assert.equal(await deleteExpiredReadings(database.client, now - 86_400_000), 10_000);
    const left = await database.client.execute("SELECT device, count(*) FROM readings GROUP BY device ORDER BY 1");
    assert.deepEqual(left.rows.map((row) => [row[0], Number(row[1])]), [["ahead", 6_000], ["fresh", 1]]);
    await writer.close();
  });
});

Deno.test("a writer refuses readings past spec.limits.writerPendingRows with a 503 limit error", async () => {
  await withTempDatabase(async (database) => {
    const writer = new ReadingWriter(database.ingest, {
      maxSizeBytes: 1e12,
      usedBytes: () => 0,
      maxPendingRows: 1_000,
    });
    const first = writer.write(Array.from({ length: 1_000 }, (_, i) => reading("d", 1_763_805_600_000 + i)), "t");
    const refused = writer.write([reading("d", 1_763_805_700_000)], "t");
    await assert.rejects(refused, (error) => {
      assert.ok(error instanceof LimitExceededError);
      assert.deepEqual([error.key, error.status], ["spec.limits.writerPendingRows", 503]);
      return true;
    });
    assert.deepEqual(await first, { inserted: 1_000, duplicates: 0 });
    assert.deepEqual(await writer.write([reading("d", 1_763_805_700_000)], "t"), { inserted: 1, duplicates: 0 });
    await writer.close();
  });
});

Deno.test("the store refuses a device past spec.limits.devices, keeps the count across a restart, frees it by retention", async () => {
  const dir = await Deno.makeTempDir();
  const options = {
    dataDir: dir,
    maxSizeBytes: 1e12,
    retentionHours: 1,
    limits: { devices: 2, writerPendingRows: 10_000, deadLetterPayloadBytes: 8 },
  };
  let store = await Store.open(options, quiet);
  try {
    await store.write([reading("a", 1_763_805_600_000), reading("b", 1_763_805_600_000)], "t");
    await assert.rejects(store.write([reading("a", 1_763_805_600_001), reading("c", 1_763_805_600_000)], "t"), {
      name: "LimitExceededError",
      key: "spec.limits.devices",
    });
    await store.write([reading("b", 1_763_805_600_001)], "t");
    assert.equal(store.stats().devices, 2);
    await store.writeDeadLetter({ source: "t", reason: "bad", payload: new Uint8Array(100) });
    await store.close();
    store = await Store.open(options, quiet);
    assert.equal(store.stats().devices, 2);
    await assert.rejects(store.write([reading("c", 1_763_805_600_000)], "t"), { key: "spec.limits.devices" });
    const letter = await store.client.execute("SELECT length(payload) AS n, reason FROM dead_letters");
    assert.deepEqual([Number(letter.rows[0].n), String(letter.rows[0].reason)], [
      8,
      "bad (payload cut to its first 8 of 100 bytes)",
    ]);
    await store.close();
    // Retention (which runs at open) deletes all but the newest row, which is b's: a is forgotten.
    await new Promise((resolve) => setTimeout(resolve, 400));
    store = await Store.open({ ...options, retentionHours: 0.0001 }, quiet);
    await eventually(() => store.stats().devices, (devices) => devices === 1);
    await store.write([reading("c", 1_763_805_600_000)], "t");
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retention drops the aggregation watermark of a forgotten device once its windows have closed", async () => {
  const dir = await Deno.makeTempDir();
  const options = { dataDir: dir, maxSizeBytes: 1e12, retentionHours: 1 };
  const t = 1_763_805_600_000;
  let store = await Store.open(options, quiet);
  try {
    await store.write([reading("a", t), reading("b", t)], "t");
    await store.write([reading("c", t + 1)], "t");
    // As the aggregator leaves them: every device's watermark, and b's window still open.
    await store.client.batch([
      { sql: "INSERT INTO device_watermarks (device, max_ts) VALUES ('a', ?), ('b', ?), ('c', ?)", args: [t, t, t] },
      {
        sql: `INSERT INTO aggregate_windows (device, sensor, start_ms, first_reading_id, count, min, max, sum, last,
                last_ts, updated_ms) VALUES ('b', 'v', ?, 2, 1, 1, 1, 1, 1, ?, 0)`,
        args: [t, t],
      },
    ], "write");
    await store.close();
    // Retention at the next open deletes all but the newest reading (c's): a and b are forgotten.
    await new Promise((resolve) => setTimeout(resolve, 400));
    store = await Store.open({ ...options, retentionHours: 0.0001 }, quiet);
    await eventually(() => store.stats().devices, (devices) => devices === 1);
    const watermarks = async () =>
      (await store.client.execute("SELECT device FROM device_watermarks ORDER BY device")).rows.map((r) => r.device);
    assert.deepEqual(await eventually(watermarks, (devices) => devices.length === 2), ["b", "c"]);
    assert.equal(store.stats().retentionDeleted.device_watermarks, 1);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a store at its size limit keeps no dead letter (a flood of invalid messages cannot grow it past the bound)", async () => {
  const dir = await Deno.makeTempDir();
  const letter = { source: "mqtt", topic: "t", reason: "bad", payload: new Uint8Array(100) };
  let store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 1 }, quiet);
  try {
    assert.equal(await store.writeDeadLetter(letter), true);
    await store.close();
    store = await Store.open({ dataDir: dir, maxSizeBytes: 4096, retentionHours: 1 }, quiet);
    for (let i = 0; i < 10; i++) assert.equal(await store.writeDeadLetter(letter), false);
    const kept = await store.client.execute("SELECT count(*) AS n FROM dead_letters");
    assert.equal(Number(kept.rows[0].n), 1);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the store clock never goes back across a restart when the wall clock did", async () => {
  const dir = await Deno.makeTempDir();
  const options = { dataDir: dir, maxSizeBytes: 1e12, retentionHours: 1 };
  let store = await Store.open(options, quiet);
  try {
    const ahead = Date.now() + 3 * 365 * 86_400_000;
    await store.close();
    // As if the last run had a wall clock three years ahead, which has since been corrected.
    const database = await openDatabase(dir, quiet);
    await database.client.execute({ sql: "UPDATE store_clock SET clock_ms = ?, wall_ms = ?", args: [ahead, ahead] });
    database.close();
    store = await Store.open(options, quiet);
    await store.write([reading("d", 1_763_805_600_000)], "t");
    const received = Number((await store.client.execute("SELECT received_ms FROM readings")).rows[0][0]);
    assert.ok(received >= ahead, `${received} < ${ahead}`);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retention prunes dead letters, events, alerts and the audit log; audit verify still passes from the checkpoint", async () => {
  const { AuditLog, checkpointMac } = await import("../src/egress/audit.ts");
  const { AuditKey } = await import("../src/egress/audit_key.ts");
  const { headPath } = await import("../src/egress/audit_head.ts");
  const { verifyAuditFile } = await import("../src/egress/audit_file.ts");
  const dir = await Deno.makeTempDir();
  const keyLocation = { path: join(dir, "audit.key"), source: "manifest" as const };
  await Deno.writeTextFile(keyLocation.path, "k".repeat(32));
  const key = await AuditKey.load(keyLocation);
  const keyed = { key, headPath: headPath(dir) };
  const keepHours = { deadLetters: 1, events: 1, alerts: 1, audit: 1 };
  const signAuditCheckpoint = (checkpoint: { cutId: number; hash: string; createdMs: number }) =>
    checkpointMac(key, checkpoint);
  const options = { dataDir: dir, maxSizeBytes: 1e12, retentionHours: 1, keepHours, signAuditCheckpoint };
  let store = await Store.open(options, quiet);
  try {
    const audit = await AuditLog.open(store.client, keyed);
    const entry = { destination: "127.0.0.1:9", purpose: "t", bytesOut: 1, bytesIn: 0, outcome: "ok" as const };
    for (let i = 0; i < 5; i++) await audit.append(entry);
    await store.writeDeadLetter({ source: "t", reason: "bad", payload: new Uint8Array(4) });
    const old = Date.now() - 2 * 3_600_000;
    await store.client.batch([
      `INSERT INTO events (device, start_ts, end_ts, peak_score, model, top_sensors, readings)
         VALUES ('d', ${old}, ${old}, 2, 'm', '[]', 3), ('d', ${old}, NULL, 2, 'm', '[]', 3)`,
      `INSERT INTO alerts (event_id, device, state, ts, body) VALUES (1, 'd', 'start', ${old}, '{}')`,
    ], "write");
    await store.close();
    await new Promise((resolve) => setTimeout(resolve, 400));
    const short = 0.0001; // 0.36 s
    store = await Store.open(
      { ...options, keepHours: { deadLetters: short, events: 1, alerts: 1, audit: short } },
      quiet,
    );
    await eventually(() => store.stats().retentionDeleted, (deleted) => deleted.audit === 4);
    assert.deepEqual(store.stats().retentionDeleted, { deadLetters: 1, events: 1, alerts: 1, audit: 4 });
    const count = async (table: string) =>
      Number((await store.client.execute(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
    assert.deepEqual(
      [await count("dead_letters"), await count("events"), await count("alerts"), await count("egress_audit")],
      [0, 1, 0, 1],
    );
    await (await AuditLog.open(store.client, keyed)).append(entry);
    const intact = await verifyAuditFile({ dataDir: dir, encryptionKey: null }, keyLocation);
    assert.equal(intact.ok, true, JSON.stringify(intact));
    assert.equal(intact.ok && intact.rows, 2);
    assert.equal(
      intact.ok && intact.headHash,
      String((await store.client.execute("SELECT hash FROM egress_audit WHERE id = 6")).rows[0].hash),
    );
    // A second cut leaves one checkpoint, its own: verification needs no older one.
    await (await AuditLog.open(store.client, keyed)).append(entry);
    await store.close();
    await new Promise((resolve) => setTimeout(resolve, 400));
    store = await Store.open({ ...options, keepHours: { ...keepHours, audit: short } }, quiet);
    await eventually(() => store.stats().retentionDeleted, (deleted) => deleted.audit === 2);
    const checkpoints = await store.client.execute("SELECT cut_id FROM audit_checkpoints");
    assert.deepEqual(checkpoints.rows.map((row) => Number(row.cut_id)), [6]);
    const afterSecondCut = await verifyAuditFile({ dataDir: dir, encryptionKey: null }, keyLocation);
    assert.equal(afterSecondCut.ok && afterSecondCut.rows, 1, JSON.stringify(afterSecondCut));
    await store.client.execute("DELETE FROM audit_checkpoints");
    const broken = await verifyAuditFile({ dataDir: dir, encryptionKey: null }, keyLocation);
    assert.equal(broken.ok, false);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a device admitted by a write whose commit failed does not hold a place under spec.limits.devices", async () => {
  const dir = await Deno.makeTempDir();
  const options = {
    dataDir: dir,
    maxSizeBytes: 1e12,
    retentionHours: 1,
    limits: { devices: 1, writerPendingRows: 10_000, deadLetterPayloadBytes: 8 },
  };
  const store = await Store.open(options, quiet);
  try {
    await store.client.execute(
      "CREATE TRIGGER refuse_all BEFORE INSERT ON readings BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    );
    await assert.rejects(store.write([reading("a", 1_763_805_600_000)], "t"), { name: "StoreUnavailableError" });
    await store.client.execute("DROP TRIGGER refuse_all");
    assert.deepEqual(await store.write([reading("b", 1_763_805_600_000)], "t"), { inserted: 1, duplicates: 0 });
    assert.equal(store.stats().devices, 1);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
