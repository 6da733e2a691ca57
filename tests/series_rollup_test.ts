import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { join } from "node:path";
import type { Reading } from "../src/ingest/reading_schema.ts";
import { createLogger } from "../src/observability/log.ts";
import { MIGRATIONS } from "../src/store/migrations.ts";
import { ROLLUP_MS } from "../src/store/reading_rollups.ts";
import { RAW_READINGS, type ReadingSeries, readingSeries, type SeriesQuery } from "../src/store/reading_series.ts";
import { deleteExpiredReadings } from "../src/store/retention.ts";
import { READINGS_PER_PASS, RollupPass } from "../src/store/rollup_pass.ts";
import { Store } from "../src/store/store.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const quiet = createLogger("error", () => {});
const START = Date.parse("2026-11-22T00:00:00Z");
const HOUR = 3_600_000;

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
    return seed / 2_147_483_648;
  };
}

/** Readings of `device` at about 1 Hz over [fromMs, toMs), with sensors that come and go. */
function readings(device: string, fromMs: number, toMs: number, seed: number, stepMs = 1_000): Reading[] {
  const next = random(seed);
  const out: Reading[] = [];
  for (let ts = fromMs; ts < toMs; ts += stepMs) {
    const values: Record<string, number> = { a: (next() - 0.5) * 200, b: Math.round(next() * 1_000) - 500 };
    if (next() < 0.5) values.c = next() * 1e-3;
    if (next() < 0.02) values.rare = next() * 1e12;
    out.push({ device, ts: ts + Math.floor(next() * (stepMs / 2)), values });
  }
  return out;
}

/**
 * What a series must be, computed from the readings themselves on the grid the answer chose:
 * whole minutes from the minute `from` falls in when its buckets are whole minutes, else from
 * `from`.
 */
function expected(stored: readonly Reading[], q: SeriesQuery, bucketMs: number): ReadingSeries {
  const origin = bucketMs % ROLLUP_MS === 0 ? Math.floor(q.fromTs / ROLLUP_MS) * ROLLUP_MS : q.fromTs;
  const buckets = new Map<number, { n: number; values: Map<string, [number, number]> }>();
  const names = new Set<string>();
  for (const reading of stored) {
    if (reading.device !== q.device || reading.ts < q.fromTs || reading.ts >= q.toTs) continue;
    const key = Math.floor((reading.ts - origin) / bucketMs);
    let bucket = buckets.get(key);
    if (!bucket) buckets.set(key, bucket = { n: 0, values: new Map() });
    bucket.n++;
    for (const [sensor, value] of Object.entries(reading.values)) {
      names.add(sensor);
      const seen = bucket.values.get(sensor);
      bucket.values.set(sensor, seen ? [Math.min(seen[0], value), Math.max(seen[1], value)] : [value, value]);
    }
  }
  const keys = [...buckets.keys()].sort((a, b) => a - b);
  const sorted = [...names].sort();
  return {
    bucketMs,
    ts: keys.map((key) => Math.max(origin + key * bucketMs, q.fromTs)),
    readings: keys.map((key) => buckets.get(key)!.n),
    score: keys.map(() => null),
    anomalous: keys.map(() => 0),
    sensors: Object.fromEntries(
      sorted.slice(0, q.maxSensors).map((sensor) => [sensor, {
        min: keys.map((key) => buckets.get(key)!.values.get(sensor)?.[0] ?? null),
        max: keys.map((key) => buckets.get(key)!.values.get(sensor)?.[1] ?? null),
      }]),
    ),
    truncated: sorted.length > q.maxSensors,
  };
}

/** Asks for `q` and checks the answer against the readings, and the grid it chose. */
async function assertSeries(store: Store, stored: readonly Reading[], q: SeriesQuery, label: string): Promise<void> {
  const series = await readingSeries(store.client, q);
  const asked = Math.ceil((q.toTs - q.fromTs) / q.buckets);
  const inRange = stored.filter((r) => r.device === q.device && r.ts >= q.fromTs && r.ts < q.toTs).length;
  const rolledUp = asked >= ROLLUP_MS || inRange > RAW_READINGS;
  if (rolledUp) {
    assert.equal(series.bucketMs % ROLLUP_MS, 0, `${label}: whole minutes`);
    assert.ok(series.bucketMs >= asked, `${label}: at most the buckets asked for`);
    const origin = Math.floor(q.fromTs / ROLLUP_MS) * ROLLUP_MS;
    assert.ok(Math.ceil((q.toTs - origin) / series.bucketMs) <= q.buckets, `${label}: at most ${q.buckets} buckets`);
  } else {
    assert.equal(series.bucketMs, asked, `${label}: the bucket asked for`);
  }
  assert.equal(Object.getPrototypeOf(series.sensors), null, "sensor names cannot meet Object.prototype");
  assert.deepEqual({ ...series, sensors: { ...series.sensors } }, expected(stored, q, series.bucketMs), label);
}

/** Ranges that cut minutes at either end or both, or none; long, short, one bucket, raw. */
function ranges(device: string, maxSensors = 64): [string, SeriesQuery][] {
  const q = (fromTs: number, toTs: number, buckets: number): SeriesQuery => ({
    device,
    fromTs,
    toTs,
    buckets,
    maxSensors,
  });
  return [
    ["3 h in 600 buckets (shorter than a minute, too many readings for raw)", q(START, START + 3 * HOUR, 600)],
    ["3 h in 2,000 buckets", q(START, START + 3 * HOUR, 2_000)],
    ["edges cut minutes, 7 buckets", q(START + 12_345, START + 3 * HOUR - 7_777, 7)],
    ["edges cut minutes, 1 bucket", q(START + 12_345, START + 3 * HOUR - 7_777, 1)],
    ["edges cut minutes, 600 buckets over 5 h", q(START - HOUR + 59_999, START + 4 * HOUR + 1, 600)],
    ["90 s across a minute boundary", q(START + 30_500, START + 120_500, 1)],
    ["45 s within a minute", q(START + 60_000 * 70 + 5_000, START + 60_000 * 70 + 50_000, 1)],
    ["50 min raw at 5 s", q(START + 61_234, START + 61_234 + 50 * 60_000, 600)],
    ["from before the data", q(START - HOUR, START + HOUR + 30_000, 100)],
  ];
}

Deno.test("a series from per-minute rollups equals the one from raw readings, also where the range cuts minutes and while rollups lag", async () => {
  const dir = await Deno.makeTempDir();
  const store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 10_000 }, quiet);
  try {
    const pass = new RollupPass(store.client, { maxSensors: 64 });
    const pump = readings("pump", START, START + 3 * HOUR, 1);
    // A gap of five minutes, and another device in the same minutes.
    const stored = [...pump.filter((r) => r.ts < START + 50 * 60_000 || r.ts >= START + 55 * 60_000)];
    const other = readings("other", START, START + HOUR, 2);
    // Out of order: the second hour arrives first.
    const order = [...stored.slice(3_000, 7_000), ...stored.slice(0, 3_000), ...stored.slice(7_000), ...other];
    for (let i = 0; i < order.length; i += 500) await store.write(order.slice(i, i + 500), "test");
    stored.push(...other);
    const check = async (phase: string) => {
      for (const [label, q] of [...ranges("pump"), ...ranges("other")]) {
        await assertSeries(store, stored, q, `${phase}: ${q.device}: ${label}`);
      }
    };
    await check("nothing folded yet");
    for (let i = 0; i < 3; i++) assert.equal(await pass.fold(), READINGS_PER_PASS);
    await check("partly folded");
    await pass.catchUp();
    await check("all folded");
    // Late readings (half a second later than each) in minutes already folded, and a new hour.
    const late = readings("pump", START + 500, START + HOUR, 3, 2_000).map((r) => ({
      ...r,
      ts: r.ts - (r.ts % 1_000) + 999,
    }))
      .concat(readings("pump", START + 3 * HOUR, START + 4 * HOUR, 4));
    for (let i = 0; i < late.length; i += 500) await store.write(late.slice(i, i + 500), "test");
    stored.push(...late);
    await check("late readings above the cursor");
    await pass.catchUp();
    await check("late readings folded");
    const rows = await store.client.execute("SELECT count(*) AS n FROM rollup_sensors WHERE device = 'pump'");
    assert.ok(Number(rows.rows[0].n) <= 4 * 60 * 4, `one row per minute and sensor: ${rows.rows[0].n}`);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retention's cut is repaired: rollups of deleted minutes go, cut minutes are rebuilt, and series match the remaining readings throughout", async () => {
  const dir = await Deno.makeTempDir();
  const store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 10_000 }, quiet);
  try {
    const pass = new RollupPass(store.client, { maxSensors: 64 });
    const all = readings("pump", START - HOUR, START + 2 * HOUR, 5);
    // The first wave: the hour before START whole, and every other reading of the next hour.
    const first = all.filter((r, i) => r.ts < START || (r.ts < START + HOUR && i % 2 === 0));
    const inFirst = new Set(first);
    const second = all.filter((r) => !inFirst.has(r));
    for (let i = 0; i < first.length; i += 500) await store.write(first.slice(i, i + 500), "test");
    await pass.catchUp();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const cutoff = store.now();
    await new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < second.length; i += 500) await store.write(second.slice(i, i + 500), "test");
    await pass.catchUp();

    assert.equal(await deleteExpiredReadings(store.client, cutoff), first.length);
    const check = async (phase: string) => {
      for (const [label, q] of ranges("pump")) await assertSeries(store, second, q, `${phase}: ${label}`);
    };
    await check("right after retention");
    await pass.catchUp();
    await check("after the rebuild");
    const minutes = await store.client.execute(`SELECT m.minute, m.readings, (SELECT count(*) FROM readings r
        WHERE r.device = m.device AND r.ts >= m.minute * 60000 AND r.ts < (m.minute + 1) * 60000) AS stored
      FROM rollup_minutes m`);
    assert.equal(minutes.rows.length, 120, "only the minutes that hold readings");
    for (const row of minutes.rows) assert.equal(Number(row.readings), Number(row.stored), `minute ${row.minute}`);
    const orphans = await store.client.execute(
      "SELECT count(*) AS n FROM rollup_sensors s WHERE NOT EXISTS (SELECT 1 FROM rollup_minutes m WHERE m.device = s.device AND m.minute = s.minute)",
    );
    assert.equal(Number(orphans.rows[0].n), 0);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rollups keep at most sensorsPerDevice sensors a minute, the first by name, and a series stays exact for any limit", async () => {
  const dir = await Deno.makeTempDir();
  const store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 10_000 }, quiet);
  try {
    // A hostile device: 20 new sensor names in every reading.
    const next = random(7);
    const noisy: Reading[] = Array.from({ length: 600 }, (_, i) => ({
      device: "noisy",
      ts: START + i * 1_000,
      values: Object.fromEntries(
        Array.from({ length: 20 }, () => [`s${Math.floor(next() * 1e6)}`, Math.round(next() * 100)]),
      ),
    }));
    await store.write(noisy, "test");
    await new RollupPass(store.client, { maxSensors: 8 }).catchUp();
    const perMinute = await store.client.execute(
      "SELECT max(n) AS most FROM (SELECT count(*) AS n FROM rollup_sensors GROUP BY device, minute)",
    );
    assert.equal(Number(perMinute.rows[0].most), 8);
    const dropped = await store.client.execute("SELECT DISTINCT dropped_above FROM rollup_minutes");
    assert.deepEqual(dropped.rows.map((row) => Number(row.dropped_above)), [8]);
    for (const maxSensors of [1, 8, 30]) {
      for (const [label, q] of ranges("noisy", maxSensors)) {
        await assertSeries(store, noisy, q, `at most ${maxSensors} sensors: ${label}`);
      }
    }
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a database from before rollups opens ready at once and gets its rollups built behind the cursor", async () => {
  const dir = await Deno.makeTempDir();
  const dataDir = join(dir, "data");
  await Deno.mkdir(dataDir);
  // The schema of the previous version (migration 8), with 30,000 readings in it.
  const old = createClient({ url: `file:${join(dataDir, "outpost.db")}` });
  const previous = MIGRATIONS.filter((migration) => migration.version <= 8);
  await old.execute(
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
  );
  for (const migration of previous) {
    await old.batch([...migration.statements, {
      sql: "INSERT INTO schema_migrations (version, description, applied_ms) VALUES (?, ?, ?)",
      args: [migration.version, migration.description, Date.now()],
    }], "write");
  }
  const stored = readings("pump", START, START + 30_000 * 1_000, 9);
  for (let i = 0; i < stored.length; i += 500) {
    const chunk = stored.slice(i, i + 500);
    await old.execute({
      sql: `INSERT INTO readings (device, ts, values_json, source, received_ms) VALUES ${
        "(?, ?, ?, 'http', ?),".repeat(chunk.length).slice(0, -1)
      }`,
      args: chunk.flatMap((r) => [r.device, r.ts, JSON.stringify(r.values), Date.now()]),
    });
  }
  await old.execute({ sql: "INSERT INTO known_devices VALUES ('pump', ?)", args: [Date.now()] });
  old.close();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "info", detection: ["enabled: false"] }));
  try {
    assert.match(outpost.log(), /"event":"store.migrated".*"version":9/);
    await eventually(
      async () => (await query(dataDir, "SELECT position FROM cursors WHERE name = 'rollup'"))[0]?.position,
      (position) => Number(position) === stored.length,
      30_000,
    );
    const q = { device: "pump", fromTs: START + 1_234, toTs: START + 30_000 * 1_000 - 4_321, buckets: 600 };
    const response = await fetch(
      `${outpost.url}/v1/devices/pump/series?from=${q.fromTs}&to=${q.toTs}&buckets=${q.buckets}`,
    );
    assert.equal(response.status, 200);
    const { device, from, to, events, ...series } = await response.json();
    assert.deepEqual([device, from, to, events], [
      "pump",
      new Date(q.fromTs).toISOString(),
      new Date(q.toTs).toISOString(),
      [],
    ]);
    assert.deepEqual(series, expected(stored, { ...q, maxSensors: 64 }, series.bucketMs));
    assert.equal(series.bucketMs, 60_000);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
