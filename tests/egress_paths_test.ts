/**
 * "One way out": the MQTT ingest broker and the alert publisher connect through the egress
 * module like the sinks do; a remote broker must be allowlisted; an audit row that cannot be
 * written stops the call; bodies are read up to a bound; Outpost's calls to its own API go
 * through loopbackFetch.
 */
import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { join } from "node:path";
import { AuditLog } from "../src/egress/audit.ts";
import { Egress, RESPONSE_LIMIT_BYTES } from "../src/egress/egress.ts";
import { EgressDeniedError } from "../src/egress/errors.ts";
import { loopbackFetch } from "../src/egress/loopback_fetch.ts";
import { createLogger } from "../src/observability/log.ts";
import { openDatabase } from "../src/store/database.ts";
import { startBroker } from "./helpers/broker.ts";
import { Collector } from "./helpers/collector.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { MAIN, postJson, PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

async function runMain(args: string[], readable: string) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", `--allow-read=${PROJECT_ROOT},${readable}`, "--ignore-env", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    cwd: PROJECT_ROOT,
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

Deno.test("a broker off loopback outside egressAllowed fails check; allowlisted, policy show lists it as egress", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const refused = await writeManifest(dir, { mqttUrl: "mqtt://10.0.0.9" });
    const check = await runMain(["check", "--manifest", refused], dir);
    assert.equal(check.code, 2, check.stdout);
    assert.match(check.stderr, /spec\.ingest\.mqtt\.url: 10\.0\.0\.9:1883 is not in spec\.network\.egressAllowed/);

    const allowed = await writeManifest(dir, { mqttUrl: "mqtt://10.0.0.9", egressAllowed: ["10.0.0.9:1883"] });
    assert.equal((await runMain(["check", "--manifest", allowed], dir)).code, 0);
    const policy = await runMain(["policy", "show", "--manifest", allowed], dir);
    assert.equal(policy.code, 0, policy.stderr);
    assert.match(
      policy.stdout,
      /Outpost ──▶ 10\.0\.0\.9:1883 {2}\(MQTT ingest broker: readings from outpost\/\+\/readings/,
    );
    assert.doesNotMatch(policy.stdout, /egress disabled/);

    const local = await writeManifest(dir, { mqttUrl: "mqtt://127.0.0.1:1883" });
    const localPolicy = await runMain(["policy", "show", "--manifest", local], dir);
    assert.equal(localPolicy.code, 0, localPolicy.stderr);
    assert.match(localPolicy.stdout, /MQTT broker 127\.0\.0\.1:1883 \(loopback, not egress/);
    assert.match(localPolicy.stdout, /\(none: egress disabled, forwarding paused\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("MQTT ingest and the alert publisher connect through the egress: each connection attempt is audited", async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: broker.url, logLevel: "warn" }));
  try {
    const destination = `127.0.0.1:${broker.port}`;
    const rows = await eventually(
      () =>
        query(
          outpost.dataDir,
          "SELECT purpose, destination, outcome FROM egress_audit WHERE purpose IN ('ingest', 'alerts') ORDER BY id",
        ),
      (rows) => ["ingest", "alerts"].every((purpose) => rows.some((r) => r.purpose === purpose && r.outcome === "ok")),
    );
    for (const purpose of ["ingest", "alerts"]) {
      const outcomes = rows.filter((row) => row.purpose === purpose).map((row) => [row.destination, row.outcome]);
      assert.deepEqual(outcomes.slice(0, 2), [[destination, "attempt"], [destination, "ok"]], purpose);
    }
  } finally {
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an audit row that cannot be written blocks the delivery and is counted; once it can, the batch goes", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const outpost = await startOutpost(
    await writeManifest(dir, {
      egressAllowed: [collector.destination],
      logLevel: "warn",
      forwarding: [
        "raw: true",
        "batchSize: 1",
        "backoff: { minMs: 50, maxMs: 200 }",
        `http: { url: "${collector.url}" }`,
      ],
    }),
  );
  const db = createClient({ url: `file:${join(outpost.dataDir, "outpost.db")}` });
  try {
    await db.execute(`CREATE TRIGGER audit_down BEFORE INSERT ON egress_audit
                      BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END`);
    const accepted = await postJson(`${outpost.url}/v1/readings`, {
      device: "pump-1",
      ts: 1_763_805_600_000,
      values: { a: 1 },
    });
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    const auditFailed = new RegExp(
      `outpost_egress_attempts_total\\{[^}]*outcome="audit_failed"[^}]*\\} (\\d+)`,
    );
    await eventually(
      async () => (await (await fetch(`${outpost.url}/metrics`)).text()).match(auditFailed)?.[1],
      (count) => Number(count) >= 2,
    );
    assert.equal(collector.requests, 0, "nothing left without its audit row");
    assert.match(outpost.log(), /"event":"egress.audit_failed"/);

    await db.execute("DROP TRIGGER audit_down");
    await eventually(() => collector.items().length, (n) => n === 1);
    // The outcome row is written once the collector's answer is in.
    const rows = await eventually(
      () => query(outpost.dataDir, "SELECT outcome FROM egress_audit WHERE purpose = 'forward' ORDER BY id"),
      (rows) => rows.length >= 2,
    );
    assert.deepEqual(rows.map((row) => row.outcome).slice(0, 2), ["attempt", "ok"]);
  } finally {
    db.close();
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a collector answering with an endless body: the egress reads RESPONSE_LIMIT_BYTES and audits that", async () => {
  const dir = await Deno.makeTempDir();
  const quiet = createLogger("error", () => {});
  const database = await openDatabase(dir, quiet);
  const chunk = new Uint8Array(64 * 1024).fill(120);
  let sent = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () =>
    new Response(
      new ReadableStream({
        pull(controller) {
          sent += chunk.length;
          if (sent > 512 * 1024 * 1024) controller.close(); // a bound for the test itself
          else controller.enqueue(chunk);
        },
      }),
    ));
  const destination = `127.0.0.1:${server.addr.port}`;
  try {
    const audit = new AuditLog(database.client);
    const egress = new Egress({
      allowed: [destination],
      rateLimit: { perSecond: 100, burst: 100 },
      circuitBreaker: { failureThreshold: 5, openSeconds: 1 },
    }, { audit, log: quiet });
    const response = await egress.fetch("test", `http://${destination}/`, { method: "POST", body: "x" });
    assert.equal((await response.arrayBuffer()).byteLength, RESPONSE_LIMIT_BYTES);
    assert.ok(sent < 64 * 1024 * 1024, `the server produced ${sent} bytes before the read stopped`);
    const rows = await audit.list(0, 10);
    assert.deepEqual(rows.map((row) => [row.outcome, row.bytesOut, row.bytesIn]), [
      ["attempt", 1, 0],
      ["ok", 1, RESPONSE_LIMIT_BYTES],
    ]);

    // A destination neither allowlisted nor a loopback peer: refused before any socket, audited.
    await assert.rejects(egress.socket("ingest", { host: "10.0.0.9", port: 1883 }), EgressDeniedError);
    assert.deepEqual((await audit.list(0, 10)).slice(2).map((row) => [row.destination, row.outcome]), [
      ["10.0.0.9:1883", "refused_by_policy"],
    ]);
  } finally {
    await server.shutdown();
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loopbackFetch calls only this device, follows no redirect, and bounds the body", async () => {
  let hits = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    hits++;
    if (new URL(request.url).pathname === "/moved") {
      return new Response(null, { status: 307, headers: { location: "http://192.0.2.1/" } });
    }
    return new Response("y".repeat(10_000));
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    await assert.rejects(loopbackFetch("http://192.0.2.1:8080/readyz"), TypeError);
    await assert.rejects(loopbackFetch("http://outpost.example.com/readyz"), TypeError);
    assert.equal(hits, 0);
    const moved = await loopbackFetch(`${base}/moved`);
    assert.equal(moved.status, 307);
    assert.equal(moved.headers.get("location"), "http://192.0.2.1/");
    const bounded = await loopbackFetch(`${base}/`, { maxBodyBytes: 100 });
    assert.equal((await bounded.text()).length, 100);
    // The API's own listen address is admitted even off loopback (here Deno's flags then stop it).
    const own = { host: "192.0.2.1", port: 8080 };
    await assert.rejects(loopbackFetch("http://192.0.2.1:8081/", { apiListen: own }), TypeError);
    await assert.rejects(loopbackFetch("http://192.0.2.1:8080/", { apiListen: own }), Deno.errors.NotCapable);
  } finally {
    await server.shutdown();
  }
});
