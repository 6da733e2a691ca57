/**
 * Issue 12 part 4, the API half: ingest tokens bound to devices, TLS with reload, the listen rule
 * beyond loopback, and the admin token from a file. The real program as a child with its real flags.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { parseConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/errors.ts";
import { loopbackFetch } from "../src/egress/loopback_fetch.ts";

import { apiExposure } from "../src/release/deployment_check.ts";
import { eventually } from "./helpers/eventually.ts";
import {
  type OutpostProcess,
  PROJECT_ROOT,
  runOutpostCommand,
  startOutpost,
  writeManifest,
} from "./helpers/outpost_process.ts";

const TLS = join(PROJECT_ROOT, "tests", "fixtures", "tls");
const CA = Deno.readTextFileSync(join(TLS, "ca.pem"));
const ADMIN = "admin-token-for-tests-0123456789";

/** A test manifest with extra lines under `spec.api:`. */
async function manifestWithApi(dir: string, apiLines: string[]): Promise<string> {
  const path = await writeManifest(dir);
  const text = await Deno.readTextFile(path);
  await Deno.writeTextFile(
    path,
    text.replace(/^( {4}listen: .*)$/m, `$1\n${apiLines.map((l) => `    ${l}`).join("\n")}`),
  );
  return path;
}

function post(outpost: OutpostProcess, readings: unknown[], token?: string): Promise<Response> {
  return fetch(`${outpost.url}/v1/readings`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ readings }),
  });
}

async function statusOf(response: Response): Promise<number> {
  await response.body?.cancel();
  return response.status;
}

async function answer(response: Response): Promise<{ status: number; body: Record<string, unknown> }> {
  return { status: response.status, body: await response.json() };
}

async function stored(outpost: OutpostProcess, device: string): Promise<number> {
  const body = await (await fetch(`${outpost.url}/v1/readings?device=${device}`)).json();
  return (body.readings as unknown[]).length;
}

const reading = (device: string, i = 0) => ({ device, ts: 1_763_805_600_000 + i, values: { t: 20 + i } });

Deno.test("beyond loopback, the manifest needs TLS and ingest tokens, or insecureListen said out loud", () => {
  const manifest = (api: string) =>
    `apiVersion: fde/v1\nkind: Deployment\nmetadata: { name: t }\nspec:\n  api:\n${api}\n  storage: { dataDir: /tmp/x }\n`;
  const problem = (api: string) => {
    try {
      parseConfig(manifest(api), "/tmp/m.yaml");
      return "";
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.message;
    }
  };
  const tls = `    tls: { certFile: ${TLS}/server.pem, keyFile: ${TLS}/server.key }`;
  assert.match(problem("    listen: 0.0.0.0:8080"), /spec\.api\.listen.*without TLS.*and ingest tokens/);
  assert.match(problem(`    listen: 10.0.0.5:8080\n${tls}`), /spec\.api\.listen.*without ingest tokens/);
  assert.match(problem("    listen: 0.0.0.0:8080\n    ingestAuth: token"), /without TLS \(spec\.api\.tls\)/);
  assert.equal(problem(`    listen: 0.0.0.0:8080\n    ingestAuth: token\n${tls}`), "");
  assert.equal(problem("    listen: 0.0.0.0:8080\n    insecureListen: true"), "");
  assert.equal(problem("    listen: 127.0.0.1:8080"), "");
  assert.equal(problem('    listen: "[::1]:8080"'), "");

  // check --deployment names an insecure listener, and passes the protected or local ones.
  const exposure = (api: string) => apiExposure(parseConfig(manifest(api), "/tmp/m.yaml"));
  assert.equal(exposure("    listen: 127.0.0.1:8080").pass, true);
  assert.equal(exposure(`    listen: 0.0.0.0:8080\n    ingestAuth: token\n${tls}`).pass, true);
  const insecure = exposure("    listen: 0.0.0.0:8080\n    insecureListen: true");
  assert.equal(insecure.pass, false);
  assert.match(insecure.reason, /beyond loopback with no TLS, no ingest tokens \(spec\.api\.insecureListen\)/);
});

Deno.test("ingest tokens: none is 401, a token writes only its devices, nothing of a mixed body is stored", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await manifestWithApi(dir, ["ingestAuth: token"]);
  const outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: ADMIN } });
  try {
    for (const token of [undefined, "not-a-token", `opt_0123456789ab_${"A".repeat(43)}`]) {
      const { status, body } = await answer(await post(outpost, [reading("pump-7")], token));
      assert.equal(status, 401, JSON.stringify(body));
      assert.equal(body.error, "unauthorized");
    }
    // Issued by the CLI while the service runs: picked up without a restart.
    const issued = await runOutpostCommand(manifest, [
      "tokens",
      "issue",
      "--devices",
      "pump-7,line-3-*",
      "--label",
      "line 3",
    ]);
    assert.equal(issued.code, 0, issued.stderr);
    const { token, id } = JSON.parse(issued.stdout) as { token: string; id: string };
    const file = await Deno.readTextFile(join(outpost.dataDir, "ingest-tokens.json"));
    assert.ok(!file.includes(token.slice("opt_".length + 13)), "the secret is stored only as its hash");
    assert.equal((await Deno.stat(join(outpost.dataDir, "ingest-tokens.json"))).mode! & 0o777, 0o600);

    await eventually(() => post(outpost, [reading("pump-7")], token).then(statusOf), (status) => status === 202);
    assert.equal((await post(outpost, [reading("line-3-a", 1)], token)).status, 202);
    const foreign = await answer(await post(outpost, [reading("pump-7", 2), reading("pump-8", 3)], token));
    assert.equal(foreign.status, 403);
    assert.deepEqual([foreign.body.error, foreign.body.device, foreign.body.token], [
      "device_not_allowed",
      "pump-8",
      id,
    ]);
    assert.equal(await stored(outpost, "pump-8"), 0);
    assert.equal(await stored(outpost, "pump-7"), 1, "the allowed half of a refused body is not stored either");

    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_ingest_auth_refusals_total\{reason="device_not_allowed"\} 1/);
    assert.match(metrics, /outpost_ingest_auth_refusals_total\{reason="missing"\} 1/);
  } finally {
    await outpost.stop();
  }
});

Deno.test("ingest tokens: rotation keeps the old secret for its grace, revocation holds within a second", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await manifestWithApi(dir, ["ingestAuth: token"]);
  const outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: ADMIN } });
  const admin = (path: string, method: string, body?: unknown, token = ADMIN) =>
    fetch(`${outpost.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  try {
    assert.equal((await answer(await admin("/v1/ingest-tokens", "POST", { devices: ["d"] }, "wrong"))).status, 401);
    const bad = await answer(await admin("/v1/ingest-tokens", "POST", { devices: ["a*b"] }));
    assert.equal(bad.status, 400);
    const issued = await answer(await admin("/v1/ingest-tokens", "POST", { devices: ["d"] }));
    assert.equal(issued.status, 201);
    const first = issued.body.token as string;
    const id = issued.body.id as string;
    assert.equal((await post(outpost, [reading("d")], first)).status, 202);

    const graced = await answer(await admin(`/v1/ingest-tokens/${id}/rotate`, "POST", { graceSeconds: 600 }));
    assert.equal(graced.status, 200);
    const second = graced.body.token as string;
    assert.ok(graced.body.previousSecretExpiresAt);
    assert.equal((await post(outpost, [reading("d", 1)], first)).status, 202, "old secret inside its grace");
    assert.equal((await post(outpost, [reading("d", 2)], second)).status, 202);

    const now = await answer(await admin(`/v1/ingest-tokens/${id}/rotate`, "POST", { graceSeconds: 0 }));
    const third = now.body.token as string;
    assert.equal((await post(outpost, [reading("d", 3)], second)).status, 401, "no grace: the old secret is gone");
    assert.equal((await post(outpost, [reading("d", 4)], third)).status, 202);

    const revoked = await runOutpostCommand(manifest, ["tokens", "revoke", id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    await eventually(() => post(outpost, [reading("d", 5)], third).then(statusOf), (status) => status === 401, 2_000);
    const listed = await answer(await admin("/v1/ingest-tokens", "GET"));
    assert.deepEqual(listed.body.tokens, []);
    assert.equal(
      (await runOutpostCommand(manifest, ["tokens", "revoke", id])).code,
      1,
      "revoking twice names the unknown id",
    );
  } finally {
    await outpost.stop();
  }
});

/** The SHA-256 fingerprint of the certificate the server at `port` presents. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: CA, servername: "localhost" }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.on("error", reject);
  });
}

Deno.test("TLS: served with the manifest's pair, clear HTTP refused, a renewed pair reloaded, a broken one not", async () => {
  const dir = await Deno.makeTempDir();
  const certs = join(dir, "certs");
  await Deno.mkdir(certs);
  await Deno.copyFile(join(TLS, "server.pem"), join(certs, "api.pem"));
  await Deno.copyFile(join(TLS, "server.key"), join(certs, "api.key"));
  const manifest = await manifestWithApi(dir, [`tls: { certFile: ${certs}/api.pem, keyFile: ${certs}/api.key }`]);
  const outpost = await startOutpost(manifest, { waitReady: false });
  const port = Number(new URL(outpost.url).port);
  const client = Deno.createHttpClient({ caCerts: [CA] });
  const https = `https://127.0.0.1:${port}`;
  try {
    const ready = () => fetch(`${https}/readyz`, { client }).then(statusOf, () => 0);
    await eventually(ready, (status) => status === 200, 20_000);
    await assert.rejects(fetch(`${outpost.url}/healthz`), "clear HTTP gets no answer");
    const first = await servedFingerprint(port);

    // Own-API calls pin the certificate in certFile: another one, even from the same CA, is refused.
    const own = await loopbackFetch(`${https}/healthz`, { tls: { certFile: join(certs, "api.pem") } });
    assert.equal(own.status, 200);
    await own.body?.cancel();
    await assert.rejects(
      loopbackFetch(`${https}/healthz`, { tls: { certFile: join(TLS, "server2.pem") } }),
      /did not present the API's certificate/,
    );

    // wait-ready (systemd's start gate) pins the API's own certificate over loopback.
    const waited = await runOutpostCommand(manifest, ["wait-ready", "--timeout", "10"]);
    assert.equal(waited.code, 0, waited.stderr);

    // A broken renewal (the new certificate with the old key) is not used; the old pair stays.
    await Deno.copyFile(join(TLS, "server2.pem"), join(certs, "api.pem"));
    await eventually(() => /http\.tls_reload_failed/.test(outpost.log()), Boolean, 10_000);
    assert.equal(await servedFingerprint(port), first);
    assert.equal((await fetch(`${https}/healthz`, { client })).status, 200);

    await Deno.copyFile(join(TLS, "server2.key"), join(certs, "api.key"));
    await eventually(() => servedFingerprint(port), (served) => served !== first, 10_000);
    assert.match(outpost.log(), /http\.tls_reloaded/);
    assert.equal((await fetch(`${https}/healthz`, { client })).status, 200);
  } finally {
    client.close();
    await outpost.stop();
  }
});

Deno.test("the admin token can come from a file (spec.api.adminTokenFile), read under the derived flags", async () => {
  const dir = await Deno.makeTempDir();
  const tokenFile = join(dir, "admin-token");
  await Deno.writeTextFile(tokenFile, `${ADMIN}\n`);
  const manifest = await manifestWithApi(dir, [`adminTokenFile: ${tokenFile}`]);
  const outpost = await startOutpost(manifest);
  try {
    const list = (token: string) =>
      fetch(`${outpost.url}/v1/ingest-tokens`, { headers: { authorization: `Bearer ${token}` } });
    const wrong = await list("x".repeat(ADMIN.length));
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const right = await list(ADMIN);
    assert.equal(right.status, 200, await right.clone().text());
    assert.deepEqual(await right.json(), { tokens: [] });
  } finally {
    await outpost.stop();
  }
});

Deno.test("the admin token needs the Bearer scheme, in any case", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir), { env: { OUTPOST_ADMIN_TOKEN: ADMIN } });
  try {
    const status = (authorization: string) =>
      fetch(`${outpost.url}/v1/ingest-tokens`, { headers: { authorization } }).then(statusOf);
    assert.equal(await status(`Bearer ${ADMIN}`), 200);
    assert.equal(await status(`bearer ${ADMIN}`), 200);
    assert.equal(await status(`BEARER  ${ADMIN} `), 200);
    assert.equal(await status(ADMIN), 401, "a bare token is not a bearer token");
    assert.equal(await status(`Basic ${ADMIN}`), 401);
  } finally {
    await outpost.stop();
  }
});
