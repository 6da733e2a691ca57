/**
 * `audit verify` inside the running program (src/egress/audit_verification.ts): a log tampered
 * with while Outpost runs turns the status and `outpost_audit_tamper_detected` bad without a
 * restart, on its schedule (the component over a real libSQL store) and when an operator asks
 * (the real program, its real flags, a row edited through a separate libSQL client as in
 * tests/audit_tamper_test.ts).
 */
import { createClient } from "@libsql/client";
import assert from "node:assert/strict";
import { join } from "node:path";
import { AuditLog } from "../src/egress/audit.ts";
import { headPath } from "../src/egress/audit_head.ts";
import { AuditKey } from "../src/egress/audit_key.ts";
import { startAuditVerification } from "../src/egress/audit_verification.ts";
import { createLogger } from "../src/observability/log.ts";
import { Metrics } from "../src/observability/metrics.ts";
import { Store } from "../src/store/store.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const quiet = createLogger("error", () => {});

async function editRow(dataDir: string, id: number, destination: string): Promise<void> {
  const client = createClient({ url: `file:${join(dataDir, "outpost.db")}` });
  try {
    const result = await client.execute({
      sql: "UPDATE egress_audit SET destination = ? WHERE id = ?",
      args: [destination, id],
    });
    assert.equal(result.rowsAffected, 1);
  } finally {
    client.close();
  }
}

function gauge(text: string, name: string): number {
  const line = text.split("\n").find((each) => each.startsWith(`${name} `));
  assert.ok(line, `${name} is in /metrics`);
  return Number(line.slice(name.length + 1));
}

Deno.test("the scheduled verify sees a row edited while the log is open: status and gauge turn bad without a restart", async () => {
  const dir = await Deno.makeTempDir();
  const store = await Store.open({ dataDir: dir, maxSizeBytes: 1e12, retentionHours: 10_000 }, quiet);
  const metrics = new Metrics(() => store.stats());
  const stop = new AbortController();
  try {
    const key = await AuditKey.load({ source: "default", path: join(dir, "keys", "audit.key") }, { create: true });
    const audit = await AuditLog.open(store.client, { key, headPath: headPath(dir), now: () => store.now() });
    for (let i = 0; i < 1_500; i++) {
      void audit.append({ destination: "collector:443", purpose: "forward", bytesOut: i, bytesIn: 0, outcome: "ok" });
    }
    await audit.settled();
    const verification = startAuditVerification(
      { client: store.client, key, headPath: headPath(dir), log: quiet, metrics },
      { signal: stop.signal, firstDelayMs: 0, intervalMs: 300 },
    );
    const ok = await eventually(() => verification.status(), (status) => status.state === "ok", 20_000);
    assert.equal(ok.last?.ok && ok.last.rows, 1_500);
    assert.equal(ok.last?.trigger, "start");
    assert.equal(gauge(await metrics.render(), "outpost_audit_tamper_detected"), 0);
    assert.ok(gauge(await metrics.render(), "outpost_audit_verify_last_completed_timestamp_seconds") > 0);

    await editRow(dir, 700, "elsewhere:443");
    const failed = await eventually(() => verification.status(), (status) => status.state === "failed", 20_000);
    assert.equal(failed.last?.ok, false);
    assert.deepEqual(
      failed.last && !failed.last.ok && [failed.last.problem, failed.last.firstBadId, failed.last.trigger],
      ["edited", 700, "schedule"],
    );
    assert.equal(gauge(await metrics.render(), "outpost_audit_tamper_detected"), 1);
    // Appends go on; the finding stays (the row is still edited).
    await audit.append({ destination: "collector:443", purpose: "forward", bytesOut: 1, bytesIn: 0, outcome: "ok" });
    const again = await verification.verifyNow();
    assert.equal(again.state, "failed");
    assert.equal(again.last?.trigger, "operator");
    stop.abort();
    await verification.finished;
    assert.equal(verification.status().next, null, "nothing scheduled after the stop");
  } finally {
    stop.abort();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the running program's audit verify: ok in /v1/status after start; a row edited while it runs is found on POST /v1/egress/audit/verify, and the gauge says so", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const token = "audit-verify-admin";
  const outpost = await startOutpost(
    await writeManifest(dir, {
      egressAllowed: [collector.destination],
      forwarding: ["raw: true", "batchSize: 1", `http: { url: "${collector.url}" }`],
      logLevel: "warn",
    }),
    { env: { OUTPOST_ADMIN_TOKEN: token } },
  );
  try {
    for (let i = 0; i < 3; i++) {
      const response = await postJson(`${outpost.url}/v1/readings`, {
        device: "d",
        ts: Date.now() + i,
        values: { a: i },
      });
      assert.equal(response.status, 202);
      await response.body?.cancel();
    }
    await eventually(() => collector.items().length, (n) => n >= 3, 20_000);
    const verify = () => fetch(`${outpost.url}/v1/egress/audit/verify`).then((r) => r.json());
    const ok = await eventually(verify, (status) => status.state === "ok", 20_000);
    assert.ok(ok.last.rows > 0 && ok.last.trigger === "start", JSON.stringify(ok));
    const status = await (await fetch(`${outpost.url}/v1/status`)).json();
    assert.equal(status.audit.verify.state, "ok");
    assert.match(await (await fetch(`${outpost.url}/metrics`)).text(), /^outpost_audit_tamper_detected 0$/m);

    await editRow(join(dir, "data"), 1, "elsewhere:443");
    const refused = await fetch(`${outpost.url}/v1/egress/audit/verify`, { method: "POST" });
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
    const response = await fetch(`${outpost.url}/v1/egress/audit/verify`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(response.status, 200);
    const found = await response.json();
    assert.equal(found.state, "failed");
    assert.deepEqual([found.last.problem, found.last.firstBadId, found.last.trigger], ["edited", 1, "operator"]);
    assert.equal((await (await fetch(`${outpost.url}/v1/status`)).json()).audit.verify.state, "failed");
    assert.match(await (await fetch(`${outpost.url}/metrics`)).text(), /^outpost_audit_tamper_detected 1$/m);
    assert.match(outpost.log(), /audit\.verify_failed/);
  } finally {
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
