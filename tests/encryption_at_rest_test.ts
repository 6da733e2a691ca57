/**
 * The buffer encrypted at rest (`spec.storage.encryption`): the real program, started as a child
 * with its derived permission flags, takes readings over HTTP and MQTT; then every file under the
 * data dir is searched for the distinctive names it was sent, as `strings` would find them. The
 * same run without encryption must find them, or the search proves nothing.
 */
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { loadConfig } from "../src/config/config.ts";

import { checkDeployment } from "../src/release/deployment_check.ts";
import { DATABASE_FILE, databaseFileState } from "../src/store/database.ts";
import { sha256Hex } from "../src/sha256.ts";
import { startBroker } from "./helpers/broker.ts";
import { eventually } from "./helpers/eventually.ts";
import { connectPublisher } from "./helpers/mqtt_publisher.ts";
import {
  type ManifestOptions,
  postJson,
  runOutpostCommand,
  startOutpost,
  waitForMqttIngest,
  writeManifest,
} from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";

const HTTP_DEVICE = "ZEBRAPUMP-4417";
const SENSOR = "quokkaFlowRate";
const MQTT_DEVICE = "OKAPIVALVE-9932";
const DEAD_LETTER = "MARMOSETDEADLETTER";
const NEEDLES = [HTTP_DEVICE, SENSOR, MQTT_DEVICE, DEAD_LETTER];

/**
 * A manifest for the data dir `<dir>/data`, with the store encrypted by the key file `keyFile` when
 * given; named after the key (`plain.yaml`, `db-key.yaml`), so manifests for one data dir coexist.
 */
async function manifestFor(dir: string, keyFile: string | null, options: ManifestOptions = {}): Promise<string> {
  const written = await writeManifest(dir, options);
  const text = await Deno.readTextFile(written);
  await Deno.remove(written);
  const encryption = keyFile === null ? "" : `    encryption: { enabled: true, keyFile: ${keyFile} }\n`;
  const path = join(dir, `${keyFile === null ? "plain" : basename(keyFile)}.yaml`);
  await Deno.writeTextFile(path, text.replace(/( {4}maxSizeMB: .*\n)/, `$1${encryption}`));
  return path;
}

/** A key file outside the data dir, as `openssl rand -hex 32` writes one. */
async function writeKey(path: string): Promise<string> {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  await Deno.writeTextFile(path, Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("") + "\n", {
    mode: 0o600,
  });
  return path;
}

/** Every file under `dir` (recursively) → the needles its bytes or its path (as `ls` shows it) contain. */
async function scan(dir: string, needles: readonly string[]): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  const encoded = needles.map((needle) => [needle, new TextEncoder().encode(needle)] as const);
  // A running Outpost renames staging files (`*.tmp`) into place while the scan walks: one gone by
  // the time it is read is scanned under its final name.
  const gone = (error: unknown) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    return null;
  };
  const walk = async (folder: string) => {
    const entries = await Array.fromAsync(Deno.readDir(folder)).catch(gone);
    for (const entry of entries ?? []) {
      const path = join(folder, entry.name);
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile) {
        const bytes = await Deno.readFile(path).catch(gone);
        if (bytes === null) continue;
        const name = path.slice(dir.length + 1);
        found.set(name, encoded.filter(([needle, n]) => name.includes(needle) || contains(bytes, n)).map(([n]) => n));
      }
    }
  };
  await walk(dir);
  return found;
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = haystack.indexOf(needle[0]); i !== -1; i = haystack.indexOf(needle[0], i + 1)) {
    if (i + needle.length > haystack.length) return false;
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

function leaks(found: Map<string, string[]>, except?: RegExp): Record<string, string[]> {
  return Object.fromEntries([...found].filter(([path, needles]) => needles.length > 0 && !except?.test(path)));
}

/**
 * Where the plaintext store keeps what it is sent: the database and the calibrated model bundles
 * (their folder names the device, model.json lists its sensors and fitted levels). Encrypted, the
 * bundles are sealed too (src/detect/bundle_seal.ts), so the encrypted scan tolerates nothing.
 */
const PLAINTEXT_OUTSIDE_STORE = /^models\/calibrated\//;

/** Readings over HTTP and MQTT, and an invalid MQTT payload (a dead letter), all committed. */
async function sendPlantData(url: string, brokerUrl: string): Promise<void> {
  const now = Date.now();
  const readings = Array.from({ length: 50 }, (_, i) => ({
    device: HTTP_DEVICE,
    ts: now - 50_000 + i * 1000,
    values: { [SENSOR]: 30 + i / 10, temperature: 70 },
  }));
  const response = await postJson(`${url}/v1/readings`, { readings });
  assert.equal(response.status, 202, await response.text());
  await waitForMqttIngest(url);
  const publisher = await connectPublisher(brokerUrl);
  try {
    await publisher.publish(`outpost/${MQTT_DEVICE}/readings`, JSON.stringify({ ts: now, values: { [SENSOR]: 1 } }));
    await publisher.publish(`outpost/${MQTT_DEVICE}/readings`, `{"${DEAD_LETTER}": not json`);
  } finally {
    await publisher.close();
  }
  await eventually(
    async () => {
      const body = await (await fetch(`${url}/v1/readings?device=${MQTT_DEVICE}`)).json();
      const metrics = await (await fetch(`${url}/metrics`)).text();
      return {
        readings: body.readings.length,
        deadLetters: /outpost_dead_letters_total(\{[^}]*\})? [1-9]/.test(metrics),
      };
    },
    (seen) => seen.readings === 1 && seen.deadLetters,
  );
}

async function withPlantData(encrypted: boolean) {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  // A sink nobody answers: aggregates stay in the outbox, which is part of the store.
  const sinkPort = await freePort();
  const keyFile = encrypted ? await writeKey(join(dir, "db-key")) : null;
  const manifest = await manifestFor(dir, keyFile, {
    mqttUrl: broker.url,
    detection: ["calibration: { readings: 20 }"],
    egressAllowed: [`127.0.0.1:${sinkPort}`],
    forwarding: [
      "aggregateSeconds: 10",
      "graceSeconds: 0",
      "idleCloseSeconds: 1",
      `http: { url: "http://127.0.0.1:${sinkPort}/ingest" }`,
    ],
  });
  const outpost = await startOutpost(manifest);
  let running: Map<string, string[]>;
  let stopped: Map<string, string[]>;
  try {
    await sendPlantData(outpost.url, broker.url);
    // Aggregates of closed windows wait in the outbox for a sink that never answers.
    await eventually(
      async () => (await (await fetch(`${outpost.url}/v1/status`)).json()).forwarding.outbox.items.aggregate,
      (aggregates) => aggregates > 0,
    );
    running = await scan(outpost.dataDir, NEEDLES);
  } finally {
    assert.equal(await outpost.stop(), 0);
    await broker.close();
  }
  try {
    stopped = await scan(outpost.dataDir, NEEDLES);
    return { running, stopped, state: await databaseFileState(join(outpost.dataDir, DATABASE_FILE)) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("without encryption, device ids, sensor names and dead letters are readable in the data dir (the scan can fail)", async () => {
  const { running, stopped, state } = await withPlantData(false);
  assert.equal(state, "plaintext");
  for (const found of [running, stopped]) {
    const inStore = leaks(found, PLAINTEXT_OUTSIDE_STORE);
    assert.deepEqual([...new Set(Object.values(inStore).flat())].sort(), [...NEEDLES].sort(), JSON.stringify(inStore));
    assert.ok(Object.keys(inStore).every((path) => path.startsWith(DATABASE_FILE)), JSON.stringify(inStore));
  }
});

Deno.test("with encryption, no file under the data dir holds a device id, sensor name or dead letter, running or stopped", async () => {
  const { running, stopped, state } = await withPlantData(true);
  assert.equal(state, "encrypted");
  assert.ok(running.has(`${DATABASE_FILE}-wal`), `the WAL was scanned: ${[...running.keys()]}`);
  const bundles = [...stopped.keys()].filter((path) => PLAINTEXT_OUTSIDE_STORE.test(path));
  assert.ok(bundles.some((path) => path.endsWith("model.json")), `a calibrated bundle was scanned: ${bundles}`);
  assert.deepEqual(leaks(running), {}, "nothing in clear while running");
  assert.deepEqual(leaks(stopped), {}, "the database, its WAL, the sealed bundles and every other file");
  console.log(`files under the data dir: ${[...stopped.keys()].sort().join(", ")}`);
});

/** A stopped store holding one HTTP reading, plaintext or encrypted with `keyFile`. */
async function storeWithReading(dir: string, keyFile: string | null): Promise<string> {
  const manifest = await manifestFor(dir, keyFile);
  const outpost = await startOutpost(manifest);
  try {
    const response = await postJson(`${outpost.url}/v1/readings`, {
      device: HTTP_DEVICE,
      ts: Date.now(),
      values: { [SENSOR]: 1 },
    });
    assert.equal(response.status, 202);
  } finally {
    assert.equal(await outpost.stop(), 0);
  }
  return manifest;
}

async function refusedStart(manifest: string): Promise<string> {
  const outpost = await startOutpost(manifest, { waitReady: false });
  const status = await outpost.process.status;
  await outpost.stop();
  assert.equal(status.code, 1, outpost.log());
  assert.doesNotMatch(outpost.log(), /^\s+at /m, "no stack trace");
  return outpost.log();
}

async function databaseHash(dataDir: string): Promise<string> {
  return sha256Hex(await Deno.readFile(join(dataDir, DATABASE_FILE)));
}

Deno.test("Outpost refuses to start on a store that does not match its encryption setting, naming the case and leaving it untouched", async () => {
  const dir = await Deno.makeTempDir();
  const dataDir = join(dir, "data");
  const key = await writeKey(join(dir, "db-key"));
  const otherKey = await writeKey(join(dir, "other-key"));
  const shortKey = join(dir, "short-key");
  await Deno.writeTextFile(shortKey, "too-short\n");
  try {
    await storeWithReading(dir, null);
    const plain = await databaseHash(dataDir);
    const enabled = await refusedStart(await manifestFor(dir, key));
    assert.match(enabled, /is not encrypted, but spec\.storage\.encryption is enabled: .*"outpost db encrypt"/);
    assert.equal(await databaseHash(dataDir), plain, "the plaintext store is not converted behind the operator");

    const short = await refusedStart(await manifestFor(dir, shortKey));
    assert.match(short, /Database key too short in .*short-key \(spec\.storage\.encryption\.keyFile\): 9 bytes/);
    assert.doesNotMatch(short, /too-short/, "the key's content is never printed");

    await Deno.remove(dataDir, { recursive: true });
    await storeWithReading(dir, key);
    const encrypted = await databaseHash(dataDir);
    const disabled = await refusedStart(await manifestFor(dir, null));
    assert.match(disabled, /is encrypted \(or is not a database\), but spec\.storage\.encryption is not enabled/);
    const wrong = await refusedStart(await manifestFor(dir, otherKey));
    assert.match(wrong, /does not open with the key .*other-key \(spec\.storage\.encryption\.keyFile\): wrong key/);
    assert.equal(await databaseHash(dataDir), encrypted);
    assert.doesNotMatch(wrong, new RegExp((await Deno.readTextFile(otherKey)).trim()), "the key is never logged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("outpost db encrypt converts a stopped plaintext store in place, refuses a running one, and db decrypt converts back", async () => {
  const dir = await Deno.makeTempDir();
  const dataDir = join(dir, "data");
  const key = await writeKey(join(dir, "db-key"));
  try {
    const plainManifest = await storeWithReading(dir, null);
    const manifest = await manifestFor(dir, key);
    assert.ok(Object.values(leaks(await scan(dataDir, NEEDLES))).flat().includes(HTTP_DEVICE));

    const noKey = await runOutpostCommand(plainManifest, ["db", "encrypt"]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /needs the database key/);

    const running = await startOutpost(plainManifest);
    try {
      const refused = await runOutpostCommand(manifest, ["db", "encrypt"]);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /in use by another Outpost/);
    } finally {
      assert.equal(await running.stop(), 0);
    }

    const encrypted = await runOutpostCommand(manifest, ["db", "encrypt"]);
    assert.equal(encrypted.code, 0, encrypted.stderr);
    const result = JSON.parse(encrypted.stdout);
    assert.equal(result.outcome, "converted");
    assert.equal(result.encrypted, true);
    assert.equal(await databaseFileState(join(dataDir, DATABASE_FILE)), "encrypted");
    assert.deepEqual(leaks(await scan(dataDir, NEEDLES)), {});
    const again = await runOutpostCommand(manifest, ["db", "encrypt"]);
    assert.equal(JSON.parse(again.stdout).outcome, "unchanged");

    const outpost = await startOutpost(manifest);
    try {
      const body = await (await fetch(`${outpost.url}/v1/readings?device=${HTTP_DEVICE}`)).json();
      assert.equal(body.readings.length, 1, "the reading stored in clear is served from the encrypted store");
      assert.ok(SENSOR in body.readings[0].values);
    } finally {
      assert.equal(await outpost.stop(), 0);
    }

    const decrypted = await runOutpostCommand(manifest, ["db", "decrypt"]);
    assert.equal(decrypted.code, 0, decrypted.stderr);
    assert.equal(JSON.parse(decrypted.stdout).outcome, "converted");
    assert.match(decrypted.stderr, /set spec\.storage\.encryption\.enabled: false/);
    assert.equal(await databaseFileState(join(dataDir, DATABASE_FILE)), "plaintext");
    const plain = await startOutpost(plainManifest);
    try {
      const body = await (await fetch(`${plain.url}/v1/readings?device=${HTTP_DEVICE}`)).json();
      assert.equal(body.readings.length, 1);
    } finally {
      assert.equal(await plain.stop(), 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit verify, audit export and check --deployment open an encrypted store with the configured key", async () => {
  const dir = await Deno.makeTempDir();
  const key = await writeKey(join(dir, "db-key"));
  try {
    const manifest = await storeWithReading(dir, key);
    const verify = await runOutpostCommand(manifest, ["audit", "verify"]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(JSON.parse(verify.stdout).ok, true);
    const exported = await runOutpostCommand(manifest, ["audit", "export", "--out", "-"]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stdout, /"format":"outpost-audit-export"/);

    const wrong = await manifestFor(dir, await writeKey(join(dir, "other-key")));
    const refused = await runOutpostCommand(wrong, ["audit", "verify"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /does not open with the key/);

    const outpost = await startOutpost(manifest);
    try {
      const criteria = await checkDeployment(await loadConfig(manifest), {
        root: join(dir, "root"),
        service: "none",
        derivedFlags: [],
      });
      const encryption = criteria.find((each) => each.name === "store encrypted at rest as configured");
      assert.ok(encryption);
      assert.equal(encryption.pass, true, encryption.reason);
      assert.match(encryption.reason, /is encrypted at rest .* opens with the key .*db-key/);
      const disabled = await checkDeployment(await loadConfig(await manifestFor(dir, null)), {
        root: join(dir, "root"),
        service: "none",
        derivedFlags: [],
      });
      const mismatch = disabled.find((each) => each.name === "store encrypted at rest as configured");
      assert.equal(mismatch?.pass, false);
    } finally {
      await outpost.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the key from systemd's credential db-key opens the store under the flags derived with it", async () => {
  const dir = await Deno.makeTempDir();
  const credentials = join(dir, "credentials");
  await Deno.mkdir(credentials);
  await writeKey(join(credentials, "db-key"));
  const manifest = await manifestFor(dir, null);
  await Deno.writeTextFile(
    manifest,
    (await Deno.readTextFile(manifest)).replace(/( {4}maxSizeMB: .*\n)/, "$1    encryption: { enabled: true }\n"),
  );
  // startOutpost derives the flags from the manifest in this process, as a launcher under systemd
  // would with the unit's CREDENTIALS_DIRECTORY; the child inherits the variable.
  Deno.env.set("CREDENTIALS_DIRECTORY", credentials);
  try {
    const config = await loadConfig(manifest);
    assert.deepEqual(config.storage.encryptionKey, { path: join(credentials, "db-key"), source: "credentials" });
    const outpost = await startOutpost(manifest);
    try {
      const response = await postJson(`${outpost.url}/v1/readings`, {
        device: HTTP_DEVICE,
        ts: Date.now(),
        values: { [SENSOR]: 1 },
      });
      assert.equal(response.status, 202);
    } finally {
      assert.equal(await outpost.stop(), 0);
    }
    assert.equal(await databaseFileState(join(dir, "data", DATABASE_FILE)), "encrypted");
  } finally {
    Deno.env.delete("CREDENTIALS_DIRECTORY");
    await Deno.remove(dir, { recursive: true });
  }
});
