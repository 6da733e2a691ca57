/**
 * The append-only history of each scope's model (src/store/assignment_history.ts): every change
 * of a device's model through the real program (calibration, a signed upload, a deactivation, a
 * rollback, an operator's recalibration) is in `GET /v1/models` newest first, paged; a store from
 * before the table migrates and records its assignments; a release restore records its changes
 * in the same transaction; the history stays within its bounds.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { keyFingerprint, signFile } from "../src/release/signature.ts";
import { HISTORY_ROWS_PER_SCOPE, historyPage, pruneHistory } from "../src/store/assignment_history.ts";
import { MIGRATIONS } from "../src/store/migrations.ts";
import { recordModelEvent, restoreAssignments, swapToPreviousModel } from "../src/store/models_table.ts";
import { Store } from "../src/store/store.ts";
import { createLogger } from "../src/observability/log.ts";
import { encodeBase64 } from "./helpers/base64.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { newTestKey, type TestKey } from "./helpers/release.ts";
import { fetchReadings } from "./helpers/replay.ts";
import { sqrtModel, tinyBundle } from "./fixtures/tiny_models.ts";

const TOKEN = "assignment-history-token";
const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
const quiet = createLogger("error", () => {});

async function signModel(onnx: Uint8Array, key: TestKey): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "model.onnx");
    await Deno.writeFile(file, onnx);
    await signFile(file, key, { kind: "model" });
    return await Deno.readTextFile(`${file}.sig`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interface HistoryRow {
  id: number;
  at: string;
  kind: string;
  model: { id: number; name: string; version: string; sha256: string } | null;
  previous: number | null;
  reason: string | null;
  signedBy: string | null;
}

Deno.test("a device's model history lists calibration, a signed upload, its deactivation, a rollback and a recalibration, newest first and paged", async () => {
  const dir = await Deno.makeTempDir();
  const key = await newTestKey("ops");
  const manifest = await writeManifest(dir, { detection: ["calibration: { readings: 20 }"], logLevel: "error" });
  await Deno.writeTextFile(
    manifest,
    `  release:\n    trustedKeys:\n      - id: ${key.trusted.id}\n        publicKey: ${key.publicKey}\n`,
    { append: true },
  );
  const outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } });
  const send = async (from: number, count: number, value: (i: number) => number) => {
    const readings = Array.from({ length: count }, (_, k) => ({
      device: "odd",
      ts: 1_763_805_600_000 + (from + k) * 1000,
      values: { a: value(from + k), b: 1 + Math.sin(from + k) },
    }));
    const response = await postJson(`${outpost.url}/v1/readings`, { readings });
    assert.equal(response.status, 202);
    await response.body?.cancel();
  };
  const admin = async (path: string, body: unknown) => {
    const response = await fetch(`${outpost.url}${path}`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    assert.ok(response.ok, JSON.stringify(answer));
    return answer;
  };
  const models = async (query: string) => {
    const response = await fetch(`${outpost.url}/v1/models?${query}`);
    const body = await response.json();
    assert.equal(response.status, 200, JSON.stringify(body));
    return body as { history: HistoryRow[]; nextHistoryCursor: string | null; assignment: { current: number } };
  };
  try {
    await send(0, 30, (i) => 5 + Math.cos(i));
    await eventually(() => fetchReadings(outpost.url, "odd"), (rows) => rows.at(-1)?.score != null, 30_000);
    const [calibrated] = (await models("device=odd")).history;
    assert.equal(calibrated.kind, "calibrated");
    assert.equal(calibrated.model?.name, "baseline/odd");
    assert.equal(calibrated.signedBy, null);

    const sqrt = sqrtModel(2);
    const uploaded = (await admin("/v1/models", {
      manifest: tinyBundle(sqrt, ["a", "b"], "sqrt"),
      onnx: encodeBase64(sqrt),
      signature: await signModel(sqrt, key),
      device: "odd",
    })).model;
    // A negative reading makes the square root NaN: the model is deactivated for the device.
    await send(30, 1, () => -1);
    await eventually(() => models("device=odd"), (m) => m.history[0].kind === "deactivated", 30_000);
    await admin("/v1/models/rollback", { device: "odd" });
    await admin("/v1/devices/odd/calibrate", {});

    const all = await models("device=odd");
    assert.deepEqual(all.history.map((row) => [row.kind, row.model?.id]), [
      ["recalibration", calibrated.model!.id],
      ["rollback", calibrated.model!.id],
      ["deactivated", uploaded.id],
      ["uploaded", uploaded.id],
      ["calibrated", calibrated.model!.id],
    ]);
    const [recalibration, rollback, deactivated, upload] = all.history;
    assert.equal(upload.signedBy, keyFingerprint(key.publicKey));
    assert.equal(upload.reason, "signed by trusted key ops");
    assert.equal(upload.model?.sha256.length, 64);
    assert.equal(upload.previous, calibrated.model!.id);
    assert.match(deactivated.reason!, /NaN/);
    assert.equal(rollback.previous, uploaded.id);
    assert.match(recalibration.reason!, /recalibrate/);
    const times = all.history.map((row) => Date.parse(row.at));
    assert.deepEqual(times, [...times].sort((x, y) => y - x), "newest first");
    assert.ok(Math.abs(times[0] - Date.now()) < 60_000, "times are the store clock's (here the wall clock)");

    // Pages of two by historyCursor, without gaps; the models list pages on its own.
    const seen: number[] = [];
    let cursor: string | null = "";
    while (cursor !== null) {
      const page = await models(`device=odd&limit=2${cursor ? `&historyCursor=${cursor}` : ""}`);
      assert.ok(page.history.length <= 2);
      seen.push(...page.history.map((row) => row.id));
      cursor = page.nextHistoryCursor;
    }
    assert.deepEqual(seen, all.history.map((row) => row.id));
    const refused = await fetch(`${outpost.url}/v1/models?device=odd&historyCursor=!!`);
    assert.equal(refused.status, 400);
    assert.match((await refused.json()).message, /\bhistoryCursor\b/);
    assert.deepEqual((await models("scope=global")).history, []);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a store from before the history migrates and records each assignment; restores, rollbacks and bounds keep the history right", async () => {
  const dir = await Deno.makeTempDir();
  // The schema of the previous version (migration 9), with two models and one assignment.
  const old = createClient({ url: `file:${join(dir, "outpost.db")}` });
  await old.execute(
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
  );
  for (const migration of MIGRATIONS.filter((each) => each.version <= 9)) {
    await old.batch([...migration.statements, {
      sql: "INSERT INTO schema_migrations (version, description, applied_ms) VALUES (?, ?, ?)",
      args: [migration.version, migration.description, Date.now()],
    }], "write");
  }
  await old.batch([
    "INSERT INTO models VALUES (1, 'm', '1', 'uploaded', '/x/1', 'aa', 1000), (2, 'm', '2', 'uploaded', '/x/2', 'bb', 2000)",
    "INSERT INTO model_assignments VALUES ('pump', 2, 1, 2500)",
  ], "write");
  old.close();
  const store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 1 }, quiet);
  try {
    const client = store.client;
    const page = async (scope: string) => (await historyPage(client, { scope, beforeId: null, limit: 300 })).entries;
    const [recorded] = await page("pump");
    assert.deepEqual(
      [recorded.kind, recorded.modelId, recorded.version, recorded.sha256, recorded.previousModelId, recorded.tsMs],
      ["recorded", 2, "2", "bb", 1, 2500],
    );

    // A release restore: one scope set, one dropped, both recorded with the reason in one commit.
    await restoreAssignments(client, { assign: [{ scope: "*", modelId: 1 }], unassign: ["pump"], reason: "r1" }, 3000);
    assert.deepEqual((await page("*")).map((e) => [e.kind, e.modelId, e.reason, e.tsMs]), [
      ["release_restore", 1, "r1", 3000],
    ]);
    assert.deepEqual((await page("pump")).map((e) => [e.kind, e.modelId, e.reason]), [
      ["release_unassigned", 2, "r1"],
      ["recorded", 2, "the assignment when this history began (an upgrade); earlier changes were not kept"],
    ]);
    // A rollback with nothing to return to changes nothing and records nothing.
    assert.equal(await swapToPreviousModel(client, "*", 4000), null);
    assert.equal((await page("*")).length, 1);

    // At most HISTORY_ROWS_PER_SCOPE rows a scope, the newest kept.
    for (let i = 0; i < HISTORY_ROWS_PER_SCOPE + 10; i++) {
      await recordModelEvent(client, { scope: "*", kind: "deactivated", modelId: 1, reason: `r${i}` }, 5000 + i);
    }
    const capped = await page("*");
    assert.equal(capped.length, HISTORY_ROWS_PER_SCOPE);
    assert.equal(capped[0].reason, `r${HISTORY_ROWS_PER_SCOPE + 9}`);
    // Retention deletes old rows but the newest of each scope with a model; a scope without one
    // (a device the store forgot) loses its history entirely.
    assert.equal(await pruneHistory(client, 1_000_000, 7), HISTORY_ROWS_PER_SCOPE - 1 + 2);
    assert.deepEqual((await page("*")).map((e) => e.reason), [`r${HISTORY_ROWS_PER_SCOPE + 9}`]);
    assert.deepEqual(await page("pump"), []);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
