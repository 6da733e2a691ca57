import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../src/config/config.ts";
import { runtimeFlags } from "../src/permissions/flags.ts";
import { CircuitBreaker } from "../src/egress/circuit_breaker.ts";
import { TokenBucket } from "../src/egress/token_bucket.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import {
  MAIN,
  postJson,
  PROJECT_ROOT,
  runOutpostCommand,
  startOutpost,
  writeManifest,
} from "./helpers/outpost_process.ts";
import { query } from "./helpers/db.ts";

Deno.test("Deno refuses a destination outside the allowlist through fetch, node:net and Deno.connect; each attempt is audited", async () => {
  const dir = await Deno.makeTempDir();
  const target = Deno.listen({ hostname: "127.0.0.2", port: 0 });
  const port = (target.addr as Deno.NetAddr).port;
  try {
    const config = await loadConfig(await writeManifest(dir, { egressAllowed: ["127.0.0.1:9"] }));
    await Deno.mkdir(config.storage.dataDir, { recursive: true });
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--cached-only",
        ...runtimeFlags(config, { projectRoot: PROJECT_ROOT }),
        join(PROJECT_ROOT, "tests", "helpers", "egress_probe.ts"),
        config.storage.dataDir,
        String(port),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    const report = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.deepEqual(report.direct, { fetch: "NotCapable", nodeNet: "NotCapable", denoConnect: "NotCapable" });
    assert.deepEqual(report.viaEgress, {
      fetch: "EgressDeniedError",
      nodeNet: "EgressDeniedError",
      denoConnect: "EgressDeniedError",
      outsideManifest: "EgressDeniedError",
    });
    assert.deepEqual(report.audit, [
      [`127.0.0.2:${port}`, "refused_by_deno"],
      [`127.0.0.2:${port}`, "refused_by_deno"],
      [`127.0.0.2:${port}`, "refused_by_deno"],
      ["198.51.100.7:80", "refused_by_policy"],
    ]);
  } finally {
    target.close();
    await Deno.remove(dir, { recursive: true });
  }
});

async function auditVerify(manifest: string) {
  const { code, stdout } = await runOutpostCommand(manifest, ["audit", "verify"]);
  return { code, report: JSON.parse(stdout) };
}

Deno.test("audit verify detects an edited, a deleted and a reordered row and names the first bad one", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const manifest = await writeManifest(dir, {
    egressAllowed: [collector.destination],
    forwarding: ["raw: true", "batchSize: 1", `http: { url: "${collector.url}" }`],
    logLevel: "warn",
  });
  const outpost = await startOutpost(manifest);
  try {
    for (let i = 0; i < 6; i++) {
      const response = await postJson(`${outpost.url}/v1/readings`, {
        device: "d",
        ts: 1_763_805_600_000 + i,
        values: { a: i },
      });
      await response.body?.cancel();
    }
    await eventually(() => collector.items().length, (n) => n >= 6);
    const page = await (await fetch(`${outpost.url}/v1/egress/audit?limit=2`)).json();
    assert.equal(page.entries.length, 2);
    // The attempt row is committed before the request leaves, its outcome row after.
    assert.deepEqual(page.entries.map((entry: { outcome: string }) => entry.outcome), ["attempt", "ok"]);
    assert.equal(page.entries[0].destination, collector.destination);
    assert.equal(page.nextAfter, 2);
    assert.equal(await outpost.stop(), 0);

    const intact = await auditVerify(manifest);
    assert.equal(intact.code, 0, JSON.stringify(intact.report));
    assert.ok(intact.report.rows >= 6);

    const dataDir = join(dir, "data");
    await query(dataDir, "UPDATE egress_audit SET bytes_out = bytes_out + 1 WHERE id = 3");
    const edited = await auditVerify(manifest);
    assert.deepEqual([edited.code, edited.report.firstBadId], [1, 3]);
    assert.match(edited.report.reason, /edited/);
    await query(dataDir, "UPDATE egress_audit SET bytes_out = bytes_out - 1 WHERE id = 3");
    assert.equal((await auditVerify(manifest)).code, 0);

    await query(dataDir, "DELETE FROM egress_audit WHERE id = 2");
    const deleted = await auditVerify(manifest);
    assert.deepEqual([deleted.code, deleted.report.firstBadId], [1, 3]);
    assert.match(deleted.report.reason, /missing/);

    await query(dataDir, "UPDATE egress_audit SET id = 2 WHERE id = 4");
    const reordered = await auditVerify(manifest);
    assert.deepEqual([reordered.code, reordered.report.firstBadId], [1, 2]);
  } finally {
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sink outside egressAllowed is a manifest error at check and at startup", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir, {
      egressAllowed: ["collector.example.com:443"],
      forwarding: [
        'http: { url: "https://other.example.com/ingest" }',
        'mqtt: { url: "mqtt://collector.example.com" }',
      ],
    });
    for (const command of ["check", "run"]) {
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--cached-only",
          `--allow-read=${dir},${PROJECT_ROOT}`,
          "--ignore-env",
          MAIN,
          command,
          "--manifest",
          manifest,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 2);
      assert.match(
        stderr,
        /spec\.forwarding\.http\.url: other\.example\.com:443 is not in spec\.network\.egressAllowed/,
      );
      assert.match(
        stderr,
        /spec\.forwarding\.mqtt\.url: collector\.example\.com:1883 is not in spec\.network\.egressAllowed/,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the circuit opens after the threshold, lets one probe through half-open, and closes on success", async () => {
  const transitions: string[] = [];
  const breaker = new CircuitBreaker({
    failureThreshold: 2,
    openMs: 50,
    onTransition: (_, to) => transitions.push(to),
  });
  assert.equal(breaker.acquire(), 0);
  breaker.fail();
  assert.equal(breaker.state, "closed");
  breaker.fail();
  assert.equal(breaker.state, "open");
  assert.ok(breaker.acquire() > 0);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(breaker.acquire(), 0);
  assert.ok(breaker.acquire() > 0, "only one probe while half-open");
  breaker.fail();
  assert.equal(breaker.state, "open");
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(breaker.acquire(), 0);
  breaker.succeed();
  assert.deepEqual(transitions, ["open", "half_open", "open", "half_open", "closed"]);
});

Deno.test("the token bucket allows a burst, then the refill rate", async () => {
  const bucket = new TokenBucket(100, 3);
  assert.deepEqual([bucket.take(), bucket.take(), bucket.take()], [0, 0, 0]);
  const wait = bucket.take();
  assert.ok(wait > 0 && wait <= 10, String(wait));
  await new Promise((resolve) => setTimeout(resolve, 25));
  assert.equal(bucket.take(), 0);
  assert.throws(() => new TokenBucket(0, 1), RangeError);
});

Deno.test("the allowlist renders as systemd IP rules, names resolved at render time", async () => {
  const { renderNetworkRules } = await import("../src/egress/os_rules.ts");
  const dir = await Deno.makeTempDir();
  try {
    const config = await loadConfig(
      await writeManifest(dir, {
        egressAllowed: ["collector.example.com:443", "10.9.8.7:8883", "unknown.invalid", "[fd00::5]:1883"],
        mqttUrl: "mqtt://[fd00::5]:1883",
      }),
    );
    const resolver = (host: string) =>
      host === "collector.example.com"
        ? Promise.resolve(["192.0.2.10", "2001:db8::10"])
        : Promise.reject(new Error("NXDOMAIN"));
    const rules = await renderNetworkRules(config, resolver);
    assert.deepEqual(rules.directives, [
      "IPAddressDeny=any",
      "IPAddressAllow=localhost 10.9.8.7 192.0.2.10 2001:db8::10 fd00::5",
      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ]);
    assert.deepEqual(rules.unresolved, [{ host: "unknown.invalid", error: "NXDOMAIN" }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a half-open probe refused by the rate limiter is given back: the next call may probe", async () => {
  const { AuditLog } = await import("../src/egress/audit.ts");
  const { Egress } = await import("../src/egress/egress.ts");
  const { openDatabase } = await import("../src/store/database.ts");
  const { createLogger } = await import("../src/observability/log.ts");
  const dir = await Deno.makeTempDir();
  const quiet = createLogger("error", () => {});
  const database = await openDatabase(dir, quiet);
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close(); // nothing listens: every call fails fast
  try {
    const egress = new Egress({
      allowed: [`127.0.0.1:${port}`],
      rateLimit: { perSecond: 5, burst: 1 },
      circuitBreaker: { failureThreshold: 1, openSeconds: 0.05 },
    }, { audit: new AuditLog(database.client), log: quiet });
    const call = () => egress.fetch("test", `http://127.0.0.1:${port}/`, { method: "POST", body: "x" });
    const reason = async () => {
      try {
        await call();
        return "delivered";
      } catch (error) {
        return (error as { reason?: string }).reason ?? "network_error";
      }
    };
    assert.equal(await reason(), "network_error"); // opens the circuit and spends the only token
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(await reason(), "rate_limited"); // half-open, but no token: the probe is given back
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(await reason(), "network_error"); // the probe goes out
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
});
