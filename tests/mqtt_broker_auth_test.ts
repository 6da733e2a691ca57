/**
 * MQTT ingest and the alert publisher against a broker that wants a login, TLS (mqtts://) and a
 * client certificate: the real program as a child process under its manifest's permission
 * flags, a real broker on loopback. Every case runs with aedes (in-process, so on a fresh
 * machine); the login and TLS cases run with mosquitto too when it is installed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import mqtt from "mqtt";
import { type BrokerKind, type BrokerOptions, MOSQUITTO, startBroker, type TestBroker } from "./helpers/broker.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import {
  MAIN,
  type OutpostProcess,
  PROJECT_ROOT,
  startOutpost,
  waitForMqttIngest,
  writeManifest,
} from "./helpers/outpost_process.ts";

const TLS = join(PROJECT_ROOT, "tests", "fixtures", "tls");
const CA = join(TLS, "ca.pem");
const SERVER = { certFile: join(TLS, "server.pem"), keyFile: join(TLS, "server.key") };
const CLIENT = { certFile: join(TLS, "client.pem"), keyFile: join(TLS, "client.key") };
const USERS = { outpost: "outpost-s3cret-pw", sensor: "sensor-pw" };
const KINDS: BrokerKind[] = ["aedes", "mosquitto"];

interface BrokerLogin {
  username?: string;
  /** Written to a file outside the data dir with a trailing newline (trimmed by Outpost). */
  password?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/** A manifest for `url` with the broker settings of `login` in spec.ingest.mqtt. */
async function manifestFor(dir: string, url: string, login: BrokerLogin): Promise<string> {
  const path = await writeManifest(dir, { mqttUrl: url });
  const lines: string[] = [];
  if (login.username) lines.push(`      username: ${login.username}`);
  if (login.password !== undefined) {
    const passwordFile = join(dir, "broker-password");
    await Deno.writeTextFile(passwordFile, `${login.password}\n`);
    lines.push(`      passwordFile: ${passwordFile}`);
  }
  if (login.tls) {
    lines.push("      tls:", ...Object.entries(login.tls).map(([key, value]) => `        ${key}: ${value}`));
  }
  const text = await Deno.readTextFile(path);
  await Deno.writeTextFile(
    path,
    text.replace("      clientId: outpost-test\n", `$&${lines.map((l) => `${l}\n`).join("")}`),
  );
  return path;
}

/** A sensor publishing over the broker's transport, with its own login and certificate. */
async function sensor(broker: TestBroker, options: BrokerOptions) {
  const read = (path: string) => Deno.readTextFileSync(path);
  const client = await mqtt.connectAsync(broker.url, {
    clientId: `sensor-${crypto.randomUUID()}`,
    protocolVersion: 4,
    reconnectPeriod: 0,
    ...(options.users ? { username: "sensor", password: USERS.sensor } : {}),
    ...(options.tls ? { ca: read(CA), rejectUnauthorized: true } : {}),
    ...(options.tls?.requireClientCert ? { cert: read(CLIENT.certFile), key: read(CLIENT.keyFile) } : {}),
  });
  return {
    publish: (device: string, ts: number, temp: number) =>
      client.publishAsync(`outpost/${device}/readings`, JSON.stringify({ ts, values: { temp } }), { qos: 1 }),
    close: () => client.endAsync(true),
  };
}

async function brokerDetail(outpost: OutpostProcess): Promise<string> {
  const body = await (await fetch(`${outpost.url}/readyz`)).json() as { checks: { name: string; detail: string }[] };
  return body.checks.find((check) => check.name === "mqtt_broker")?.detail ?? "";
}

/** Readings of `device` through the API (GET /v1/readings). */
async function apiReadings(outpost: OutpostProcess, device: string): Promise<{ tsMs: number; values: unknown }[]> {
  const response = await fetch(`${outpost.url}/v1/readings?device=${device}`);
  assert.equal(response.status, 200);
  return ((await response.json()) as { readings: { tsMs: number; values: unknown }[] }).readings
    .map(({ tsMs, values }) => ({ tsMs, values }));
}

function auditRows(outpost: OutpostProcess, purpose: string) {
  return query(
    outpost.dataDir,
    `SELECT purpose, outcome, error, bytes_out AS bytesOut FROM egress_audit WHERE purpose = '${purpose}' ORDER BY id`,
  );
}

/** Starts a broker and Outpost (in that order), runs `body`, then stops all it started. */
async function withSetup(
  kind: BrokerKind,
  brokerOptions: BrokerOptions,
  login: BrokerLogin,
  body: (context: { broker: TestBroker; outpost: OutpostProcess; dir: string }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "outpost-broker-auth-" });
  const broker = await startBroker(undefined, { kind, ...brokerOptions });
  let outpost: OutpostProcess | undefined;
  try {
    outpost = await startOutpost(await manifestFor(dir, broker.url, login));
    await body({ broker, outpost, dir });
  } finally {
    await outpost?.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
}

for (const kind of KINDS) {
  const ignore = kind === "mosquitto" && MOSQUITTO === null;

  Deno.test({
    name: `MQTT ingest (${kind}) logs in with username and passwordFile; the alert publisher logs in too`,
    ignore,
    fn: () =>
      withSetup(
        kind,
        { users: USERS },
        { username: "outpost", password: USERS.outpost },
        async ({ broker, outpost }) => {
          await waitForMqttIngest(outpost.url);
          const publisher = await sensor(broker, { users: USERS });
          try {
            await publisher.publish("pump-1", 1_763_805_600_000, 70.5);
            const readings = await eventually(() => apiReadings(outpost, "pump-1"), (rows) => rows.length === 1);
            assert.deepEqual(readings, [{ tsMs: 1_763_805_600_000, values: { temp: 70.5 } }]);
            await eventually(() => broker.connected(), (ids) => ids.includes("outpost-test-alerts"));
            assert.ok(broker.connected().includes("outpost-test"));
            assert.ok(!outpost.log().includes(USERS.outpost), "the password is never logged");
          } finally {
            await publisher.close();
          }
        },
      ),
  });

  Deno.test({
    name: `MQTT ingest (${kind}): a refused login is reported with its reason and retried with backoff; ` +
      "a corrected passwordFile is used without a restart",
    ignore,
    fn: () =>
      withSetup(kind, { users: USERS }, { username: "outpost", password: "not-the-password" }, async (context) => {
        const { broker, outpost, dir } = context;
        const detail = await eventually(() => brokerDetail(outpost), (text) => text.includes("refused"));
        assert.match(detail, /^backoff: Broker refused the connection: (bad username or password|not authorized)/);
        assert.match(detail, /spec\.ingest\.mqtt\.username "outpost" and passwordFile/);
        // Retried, but with backoff: a few attempts in 3 s, not a tight loop; and no crash.
        const first = (await auditRows(outpost, "ingest")).filter((row) => row.outcome === "attempt").length;
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        const attempts = (await auditRows(outpost, "ingest")).filter((row) => row.outcome === "attempt").length;
        assert.ok(attempts > first && attempts - first <= 6, `${attempts - first} attempts in 3 s`);
        const exited = await Promise.race([outpost.process.status.then(() => true), Promise.resolve(false)]);
        assert.equal(exited, false);
        assert.match(outpost.log(), /"detect\.alert_broker_refused"/);
        assert.ok(!outpost.log().includes("not-the-password"), "the password is never logged");

        await Deno.writeTextFile(join(dir, "broker-password"), `${USERS.outpost}\n`);
        await waitForMqttIngest(outpost.url, 40_000);
        const publisher = await sensor(broker, { users: USERS });
        try {
          await publisher.publish("pump-2", 1_763_805_600_000, 1);
          await eventually(() => apiReadings(outpost, "pump-2"), (rows) => rows.length === 1);
        } finally {
          await publisher.close();
        }
        // The alert publisher too: mqtt.js alone would never retry after a refused CONNACK.
        await eventually(() => broker.connected(), (ids) => ids.includes("outpost-test-alerts"), 40_000);
      }),
  });

  const tlsBroker: BrokerOptions = { users: USERS, tls: SERVER };
  Deno.test({
    name: `MQTT ingest (${kind}) over mqtts:// trusts the broker through caFile; both connections are audited as TLS`,
    ignore,
    fn: () =>
      withSetup(
        kind,
        tlsBroker,
        { username: "outpost", password: USERS.outpost, tls: { caFile: CA } },
        async ({ broker, outpost }) => {
          await waitForMqttIngest(outpost.url);
          const publisher = await sensor(broker, tlsBroker);
          try {
            await publisher.publish("pump-3", 1_763_805_600_000, 3);
            await eventually(() => apiReadings(outpost, "pump-3"), (rows) => rows.length === 1);
          } finally {
            await publisher.close();
          }
          const ingest = await auditRows(outpost, "ingest+tls");
          assert.deepEqual(ingest.slice(0, 2).map((row) => row.outcome), ["attempt", "ok"]);
          await eventually(() => auditRows(outpost, "alerts+tls"), (rows) => rows.some((row) => row.outcome === "ok"));
          assert.deepEqual(await auditRows(outpost, "ingest"), [], "no plain TCP connection to an mqtts:// broker");
        },
      ),
  });

  Deno.test({
    name: `MQTT ingest (${kind}) over mqtts:// without caFile refuses a broker certificate from a private CA`,
    ignore,
    fn: () =>
      withSetup(kind, tlsBroker, { username: "outpost", password: USERS.outpost }, async ({ broker, outpost }) => {
        const detail = await eventually(() => brokerDetail(outpost), (text) => text.includes("TLS"));
        assert.match(detail, /TLS: the broker's certificate is not trusted .*set spec\.ingest\.mqtt\.tls\.caFile/);
        const failed = await eventually(
          () => auditRows(outpost, "ingest+tls"),
          (rows) => rows.some((row) => row.outcome === "network_error"),
        );
        assert.match(String(failed.find((row) => row.outcome === "network_error")!.error), /certificate/);
        assert.ok(!broker.connected().includes("outpost-test"));
        assert.equal(outpost.process.pid > 0, true);
      }),
  });

  const mutualTls: BrokerOptions = { users: USERS, tls: { ...SERVER, caFile: CA, requireClientCert: true } };
  Deno.test({
    name: `MQTT ingest (${kind}) presents its client certificate to a broker that requires one`,
    ignore,
    fn: () =>
      withSetup(
        kind,
        mutualTls,
        { username: "outpost", password: USERS.outpost, tls: { caFile: CA, ...CLIENT } },
        async ({ broker, outpost }) => {
          await waitForMqttIngest(outpost.url);
          const publisher = await sensor(broker, mutualTls);
          try {
            await publisher.publish("pump-4", 1_763_805_600_000, 4);
            await eventually(() => apiReadings(outpost, "pump-4"), (rows) => rows.length === 1);
          } finally {
            await publisher.close();
          }
          await eventually(() => broker.connected(), (ids) => ids.includes("outpost-test-alerts"));
        },
      ),
  });

  Deno.test({
    name: `MQTT ingest (${kind}) without certFile is refused by a broker that requires a client certificate`,
    ignore,
    fn: () =>
      withSetup(
        kind,
        mutualTls,
        { username: "outpost", password: USERS.outpost, tls: { caFile: CA } },
        async ({ broker, outpost }) => {
          const detail = await eventually(() => brokerDetail(outpost), (text) => text.includes("TLS"), 15_000);
          assert.match(detail, /TLS: the broker requires a client certificate .*set spec\.ingest\.mqtt\.tls\.certFile/);
          assert.ok(!broker.connected().includes("outpost-test"));
        },
      ),
  });
}

Deno.test("MQTT ingest over mqtts:// verifies the host name: a certificate for 127.0.0.1 does not pass for 127.0.0.2", () =>
  withSetup(
    "aedes",
    { host: "127.0.0.2", users: USERS, tls: SERVER },
    { username: "outpost", password: USERS.outpost, tls: { caFile: CA } },
    async ({ broker, outpost }) => {
      const detail = await eventually(() => brokerDetail(outpost), (text) => text.includes("TLS"));
      assert.match(detail, /TLS: the broker's certificate does not name 127\.0\.0\.2/);
      assert.ok(!broker.connected().includes("outpost-test"));
    },
  ));

Deno.test("Outpost refuses to start when a broker login or TLS file cannot be used, naming its manifest key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost-broker-auth-" });
  try {
    const cases: [BrokerLogin, () => Promise<void>, RegExp][] = [
      [
        { username: "outpost", password: "" },
        async () => {},
        /spec\.ingest\.mqtt\.passwordFile cannot be used: .*empty/,
      ],
      [
        { username: "outpost", password: "x" },
        () => Deno.remove(join(dir, "broker-password")),
        /spec\.ingest\.mqtt\.passwordFile cannot be used: .*broker-password/,
      ],
      [
        { tls: { caFile: join(dir, "outpost.yaml") } },
        async () => {},
        /spec\.ingest\.mqtt\.tls\.caFile cannot be used: .*no PEM certificate/,
      ],
      [
        { tls: { caFile: CA, certFile: CLIENT.certFile, keyFile: SERVER.keyFile } },
        async () => {},
        /spec\.ingest\.mqtt\.tls\.keyFile cannot be used: .*not the key of the certificate/,
      ],
    ];
    for (const [login, spoil, expected] of cases) {
      const url = login.tls ? "mqtts://127.0.0.1:1" : "mqtt://127.0.0.1:1";
      const manifest = await manifestFor(dir, url, login);
      await spoil();
      const outpost = await startOutpost(manifest, { waitReady: false });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        outpost.process.status,
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 20_000)),
      ]);
      clearTimeout(timer);
      await outpost.stop();
      assert.equal(status?.code, 1, `Outpost did not fail to start:\n${outpost.log()}`);
      assert.match(outpost.log(), expected);
      assert.match(outpost.log(), /Outpost could not start/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("policy show says how the broker connection is secured", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost-broker-auth-" });
  try {
    const policy = async (url: string, login: BrokerLogin) => {
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--cached-only", `--allow-read=${PROJECT_ROOT},${dir}`, "--ignore-env", MAIN, "policy", "show"]
          .concat(["--manifest", await manifestFor(dir, url, login)]),
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      return new TextDecoder().decode(output.stdout);
    };
    const secured = await policy("mqtts://127.0.0.1:8883", {
      username: "outpost",
      password: "x",
      tls: { caFile: CA, ...CLIENT },
    });
    assert.match(
      secured,
      /MQTT broker 127\.0\.0\.1:8883 \(.*TLS, CA .*ca\.pem, client certificate; login as "outpost"\)/,
    );
    assert.match(await policy("mqtt://127.0.0.1:1883", {}), /MQTT broker 127\.0\.0\.1:1883 \(.*plain TCP; no login\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
