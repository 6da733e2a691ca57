/**
 * Issue 12 parts 4-5 under attack: what an independent review broke, each kept broken-proof here.
 * The real program as a child with its derived flags, or the real code in concurrent processes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/errors.ts";
import { IngestTokens, TOKENS_FILE } from "../src/api/ingest_tokens.ts";
import { isSealed } from "../src/detect/bundle_seal.ts";

import { DATABASE_FILE, databaseFileState } from "../src/store/database.ts";
import { eventually } from "./helpers/eventually.ts";
import { PROJECT_ROOT, runOutpostCommand, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const TLS = join(PROJECT_ROOT, "tests", "fixtures", "tls");
const CA = Deno.readTextFileSync(join(TLS, "ca.pem"));
const LIMITS = { ingestTokens: 100_000, devicesPerToken: 10, nameLength: 128 };

/** Inserts `lines` (already indented) after the first line matching `after` in the manifest. */
async function amend(manifest: string, after: RegExp, lines: string[]): Promise<void> {
  const text = await Deno.readTextFile(manifest);
  assert.match(text, after);
  await Deno.writeTextFile(manifest, text.replace(after, (line) => `${line}\n${lines.join("\n")}`));
}

async function writeKey(path: string): Promise<string> {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  await Deno.writeTextFile(path, Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("") + "\n");
  return path;
}

Deno.test("two processes changing the ingest tokens at once lose nothing: no issued token dropped, no revoked one back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // What `outpost tokens` and the admin routes run, in two processes at full speed.
    const child = join(dir, "churn.ts");
    const module = pathToFileURL(join(PROJECT_ROOT, "src", "api", "ingest_tokens.ts")).href;
    await Deno.writeTextFile(
      child,
      `import { IngestTokens } from ${JSON.stringify(module)};
const [dataDir, tag] = Deno.args;
const tokens = new IngestTokens(dataDir, ${JSON.stringify(LIMITS)});
const kept = [];
for (let i = 0; i < 150; i++) {
  const issued = tokens.issue({ devices: [tag + "-" + i] });
  if (i % 2 === 1) tokens.revoke(issued.id);
  else kept.push(issued.id);
}
console.log(JSON.stringify(kept));
`,
    );
    const run = (tag: string) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--cached-only",
          "--config",
          join(PROJECT_ROOT, "deno.json"),
          "--allow-read",
          `--allow-write=${dir}`,
          child,
          dir,
          tag,
        ],
        stdin: "null",
      }).output();
    const outputs = await Promise.all([run("a"), run("b")]);
    const kept: string[] = [];
    for (const output of outputs) {
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      kept.push(...JSON.parse(new TextDecoder().decode(output.stdout)));
    }
    const listed = new IngestTokens(dir, LIMITS).list().map((token) => token.id);
    assert.deepEqual(listed.toSorted(), kept.toSorted());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rotation expiry edited into something that is not a date refuses every token, never keeps the old secret for good", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tokens = new IngestTokens(dir, LIMITS);
    const old = tokens.issue({ devices: ["pump-7"] }).token;
    const rotated = tokens.rotate(old.slice(4, 16), 60).token;
    const path = join(dir, TOKENS_FILE);
    const file = JSON.parse(await Deno.readTextFile(path));
    const previous = file.tokens[0].secrets.find((secret: { expiresAt: string | null }) => secret.expiresAt !== null);
    previous.expiresAt = "never";
    await Deno.writeTextFile(path, JSON.stringify(file));

    const service = new IngestTokens(dir, LIMITS);
    for (const token of [old, rotated]) {
      assert.deepEqual(service.authenticate(`Bearer ${token}`), { ok: false, reason: "store_unreadable" });
    }
    assert.throws(() => service.list(), /not a valid token file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TLS: clients that never finish a handshake are closed after headersTimeoutMs, so they cannot hold every slot", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { limits: ["connections: 3", "headersTimeoutMs: 1000"] });
  await amend(manifest, /^ {4}listen: .*$/m, [`    tls: { certFile: ${TLS}/server.pem, keyFile: ${TLS}/server.key }`]);
  const outpost = await startOutpost(manifest, { waitReady: false });
  const port = Number(new URL(outpost.url).port);
  const client = Deno.createHttpClient({ caCerts: [CA] });
  const healthz = () =>
    fetch(`https://127.0.0.1:${port}/healthz`, { client, signal: AbortSignal.timeout(2_000) })
      .then(async (response) => (await response.body?.cancel(), response.status), () => 0);
  const silent: Deno.TcpConn[] = [];
  try {
    await eventually(healthz, (status) => status === 200, 20_000);
    // Every slot taken by a socket that connects and sends nothing, not even a ClientHello.
    for (let i = 0; i < 3; i++) silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    const started = performance.now();
    const closed = await Promise.all(silent.map(async (conn) => {
      const ended = conn.read(new Uint8Array(16)).then(() => true, () => true);
      const held = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 6_000));
      return await Promise.race([ended, held]);
    }));
    assert.deepEqual(closed, [true, true, true], "silent handshakes still open after 6 s");
    assert.ok(performance.now() - started < 4_000, `closed only after ${Math.round(performance.now() - started)} ms`);
    assert.equal(await healthz(), 200);
  } finally {
    for (const conn of silent) {
      try {
        conn.close();
      } catch { /* closed by the server */ }
    }
    client.close();
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the copy an interrupted db decrypt left beside an encrypted store is removed at the next start", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = await writeKey(join(dir, "db-key"));
    const manifest = await writeManifest(dir);
    await amend(manifest, /^ {4}maxSizeMB: .*$/m, [`    encryption: { enabled: true, keyFile: ${key} }`]);
    const first = await startOutpost(manifest);
    assert.equal(await first.stop(), 0);
    const database = join(first.dataDir, DATABASE_FILE);
    assert.equal(await databaseFileState(database), "encrypted");
    // What `db decrypt` killed before its rename leaves: the whole buffer in clear.
    const leftovers = [`${database}.converting`, `${database}.converting-journal`];
    for (const path of leftovers) await Deno.writeTextFile(path, "SQLite format 3\0 ZEBRAPUMP-4417 quokkaFlowRate");

    const second = await startOutpost(manifest);
    try {
      for (const path of leftovers) await assert.rejects(Deno.stat(path), Deno.errors.NotFound, path);
      assert.match(second.log(), /store\.conversion_leftover_removed/);
    } finally {
      assert.equal(await second.stop(), 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("db decrypt opens the bundles sealed with the store's key and db encrypt seals them again, so calibrated models keep loading", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = await writeKey(join(dir, "db-key"));
    const plain = await writeManifest(dir, { detection: ["calibration: { readings: 20 }"] });
    const encrypted = join(dir, "encrypted.yaml");
    await Deno.copyFile(plain, encrypted);
    await amend(encrypted, /^ {4}maxSizeMB: .*$/m, [`    encryption: { enabled: true, keyFile: ${key} }`]);
    const device = "ZEBRAPUMP-4417";
    const t0 = Date.now() - 120_000;
    const post = (url: string, from: number, count: number) =>
      fetch(`${url}/v1/readings`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          readings: Array.from({ length: count }, (_, i) => ({
            device,
            ts: t0 + (from + i) * 1000,
            values: { quokkaFlowRate: 30 + Math.sin(from + i), temperature: 70 + Math.cos(from + i) },
          })),
        }),
      }).then(async (response) => (await response.body?.cancel(), response.status));
    /** Posts one more reading and waits until the device's model has scored it. */
    const scored = async (manifest: string, at: number) => {
      const outpost = await startOutpost(manifest);
      try {
        assert.equal(await post(outpost.url, at, 1), 202);
        const latest = new Date(t0 + at * 1000).toISOString();
        await eventually(
          async () => (await (await fetch(`${outpost.url}/v1/devices`)).json()).devices[0],
          (state) => state?.model?.source === "calibrated" && state.latestScore?.ts === latest,
          20_000,
        );
      } finally {
        assert.equal(await outpost.stop(), 0);
      }
    };
    const bundleFiles = async () => {
      const files: Uint8Array[] = [];
      const calibrated = join(dir, "data", "models", "calibrated");
      for await (const folder of Deno.readDir(calibrated)) {
        for (const name of ["model.json", "model.onnx"]) {
          files.push(await Deno.readFile(join(calibrated, folder.name, name)));
        }
      }
      assert.ok(files.length > 0);
      return files;
    };

    // Calibrated on an encrypted store: the bundle is sealed.
    const outpost = await startOutpost(encrypted);
    try {
      assert.equal(await post(outpost.url, 0, 30), 202);
    } finally {
      assert.equal(await outpost.stop(), 0);
    }
    await scored(encrypted, 30);
    assert.ok((await bundleFiles()).every(isSealed));

    // Decrypted, then started with encryption off: the model must still load and score.
    const decrypted = await runOutpostCommand(encrypted, ["db", "decrypt"]);
    assert.equal(decrypted.code, 0, decrypted.stderr);
    assert.ok((await bundleFiles()).every((bytes) => !isSealed(bytes)));
    await scored(plain, 31);

    // The README's key change: encrypt again with a new key; the bundles are sealed with it.
    await writeKey(key);
    const reencrypted = await runOutpostCommand(encrypted, ["db", "encrypt"]);
    assert.equal(reencrypted.code, 0, reencrypted.stderr);
    assert.ok((await bundleFiles()).every(isSealed));
    await scored(encrypted, 32);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a database key file inside the data dir is refused also when a symlink hides it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const dataDir = join(dir, "data");
    await Deno.mkdir(dataDir);
    await writeKey(join(dataDir, "db-key"));
    await Deno.symlink(dataDir, join(dir, "via-link"));
    const manifest = (data: string, keyFile: string) =>
      `apiVersion: fde/v1\nkind: Deployment\nmetadata: { name: t }\nspec:\n  storage:\n    dataDir: ${data}\n` +
      `    encryption: { enabled: true, keyFile: ${keyFile} }\n`;
    for (
      const [data, keyFile] of [[dataDir, join(dir, "via-link", "db-key")], [
        join(dir, "via-link"),
        join(dataDir, "db-key"),
      ]]
    ) {
      assert.throws(
        () => parseConfig(manifest(data, keyFile), join(dir, "m.yaml")),
        (error) =>
          error instanceof ConfigError &&
          /spec\.storage\.encryption\.keyFile: .* is inside the data dir/.test(error.message),
        `${keyFile} with the data dir ${data}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task start derives the flags with the database key file the environment names", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = await writeKey(join(dir, "db-key"));
    const manifest = await writeManifest(dir);
    await amend(manifest, /^ {4}maxSizeMB: .*$/m, ["    encryption: { enabled: true }"]);
    // The launcher derives the flags; with the variable hidden from it, it saw no key at all.
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "start", "check", "--manifest", manifest],
      cwd: PROJECT_ROOT,
      stdin: "null",
      env: { NO_COLOR: "1", OUTPOST_DB_KEY_FILE: key },
    }).output();
    assert.equal(check.code, 0, new TextDecoder().decode(check.stderr));
    assert.match(new TextDecoder().decode(check.stdout), /"valid": true/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an audit log with no rows (egress disabled) is not reported as tampered at the next start", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir);
    const first = await startOutpost(manifest);
    assert.equal(await first.stop(), 0);
    const second = await startOutpost(manifest);
    assert.equal(await second.stop(), 0);
    assert.doesNotMatch(second.log(), /audit\.tamper_detected/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "files outpost tokens and db encrypt write as root go to the data dir's owner, so the service's own user can use them",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const manifest = await writeManifest(dir);
      const outpost = await startOutpost(manifest);
      assert.equal(await outpost.stop(), 0);
      // The service's user (systemd's DynamicUser) owns the data dir and what the service wrote.
      const service = { uid: 65534, gid: 65534 };
      for await (const entry of Deno.readDir(outpost.dataDir)) {
        Deno.chownSync(join(outpost.dataDir, entry.name), service.uid, service.gid);
      }
      Deno.chownSync(outpost.dataDir, service.uid, service.gid);

      new IngestTokens(outpost.dataDir, LIMITS).issue({ devices: ["pump-7"] });
      const key = await writeKey(join(dir, "db-key"));
      await amend(manifest, /^ {4}maxSizeMB: .*$/m, [`    encryption: { enabled: true, keyFile: ${key} }`]);
      const encrypted = await runOutpostCommand(manifest, ["db", "encrypt"]);
      assert.equal(encrypted.code, 0, encrypted.stderr);

      for (const name of [TOKENS_FILE, "ingest-tokens.lock", DATABASE_FILE]) {
        const info = await Deno.stat(join(outpost.dataDir, name));
        assert.deepEqual({ uid: info.uid, gid: info.gid }, service, name);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
