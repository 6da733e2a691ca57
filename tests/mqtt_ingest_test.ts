import assert from "node:assert/strict";
import { BROKER_KIND, startBroker } from "./helpers/broker.ts";
import { query, storedReadings } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { connectPublisher } from "./helpers/mqtt_publisher.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";

async function readiness(url: string) {
  const response = await fetch(`${url}/readyz`);
  return { status: response.status, body: await response.json() };
}

Deno.test(`MQTT ingest (${BROKER_KIND}) stores QoS 1 readings, taking the device from the topic or the payload`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: broker.url }));
  const publisher = await connectPublisher(broker.url);
  try {
    await eventually(() => readiness(outpost.url), (r) => r.body.status === "ready");
    await publisher.publish("outpost/pump-7/readings", JSON.stringify({ ts: 1_763_805_600_000, values: { temp: 70 } }));
    await publisher.publish(
      "outpost/pump-8/readings",
      JSON.stringify({ readings: [{ device: "pump-8", ts: "2026-11-22T10:00:01Z", values: { temp: 71, rpm: 1500 } }] }),
    );
    const stored = await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 2);
    assert.deepEqual(stored, [
      { device: "pump-7", ts: 1_763_805_600_000, values: { temp: 70 } },
      { device: "pump-8", ts: Date.parse("2026-11-22T10:00:01Z"), values: { temp: 71, rpm: 1500 } },
    ]);
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`MQTT ingest (${BROKER_KIND}) dead-letters invalid payloads with the reason and keeps running`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: broker.url }));
  const publisher = await connectPublisher(broker.url);
  try {
    await eventually(() => readiness(outpost.url), (r) => r.body.status === "ready");
    await publisher.publish("outpost/pump-7/readings", "not json");
    await publisher.publish("outpost/pump-7/readings", JSON.stringify({ ts: 1_763_805_600_000, values: { t: "hot" } }));
    await publisher.publish(
      "outpost/pump-7/readings",
      JSON.stringify({ device: "pump-9", ts: 1_763_805_600_000, values: { t: 1 } }),
    );
    await publisher.publish("outpost/pump-7/readings", new Uint8Array([0xff, 0xfe, 0x00]));
    await publisher.publish("outpost/pump-7/readings", JSON.stringify({ ts: 1_763_805_600_001, values: { t: 1 } }));
    const letters = await eventually(
      () => query(outpost.dataDir, "SELECT topic, reason FROM dead_letters ORDER BY id"),
      (rows) => rows.length === 4,
    );
    assert.match(String(letters[0].reason), /invalid JSON/);
    assert.match(String(letters[1].reason), /values\.t: /);
    assert.match(String(letters[2].reason), /does not match the topic's device/);
    assert.equal(letters[0].topic, "outpost/pump-7/readings");
    assert.deepEqual(
      (await eventually(() => storedReadings(outpost.dataDir), (r) => r.length === 1))[0].ts,
      1_763_805_600_001,
    );
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_dead_letters_total\{source="mqtt"\} 4/);
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`MQTT ingest (${BROKER_KIND}): broker down is degraded, not unready; HTTP works; Outpost connects when it comes up`, async () => {
  const dir = await Deno.makeTempDir();
  const port = await freePort();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: `mqtt://127.0.0.1:${port}` }));
  let broker;
  try {
    const down = await readiness(outpost.url);
    assert.equal(down.status, 200);
    assert.equal(down.body.status, "degraded");
    const response = await postJson(`${outpost.url}/v1/readings`, {
      device: "p",
      ts: 1_763_805_600_000,
      values: { a: 1 },
    });
    assert.equal(response.status, 202);
    await response.body?.cancel();
    broker = await startBroker(port);
    await eventually(() => readiness(outpost.url), (r) => r.body.status === "ready", 40_000);
    const publisher = await connectPublisher(broker.url);
    await publisher.publish("outpost/q/readings", JSON.stringify({ ts: 1_763_805_600_000, values: { a: 2 } }));
    await publisher.close();
    await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 2);
  } finally {
    await outpost.stop();
    await broker?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`MQTT ingest (${BROKER_KIND}) keeps its session: messages sent while Outpost is down arrive after restart`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const manifest = await writeManifest(dir, { mqttUrl: broker.url });
  let outpost = await startOutpost(manifest);
  const publisher = await connectPublisher(broker.url);
  try {
    await eventually(() => readiness(outpost.url), (r) => r.body.status === "ready");
    assert.equal(await outpost.stop(), 0);
    for (let i = 0; i < 20; i++) {
      await publisher.publish(
        "outpost/offline/readings",
        JSON.stringify({ ts: 1_763_805_600_000 + i, values: { a: i } }),
      );
    }
    outpost = await startOutpost(manifest);
    const stored = await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 20);
    assert.deepEqual(stored.map((row) => row.values.a), Array.from({ length: 20 }, (_, i) => i));
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});
