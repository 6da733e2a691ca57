import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import mqttPacket from "mqtt-packet";
import { connect as connectTcp, type Socket } from "node:net";
import { type MqttFrame, MqttFramer, MqttProtocolError } from "../src/ingest/mqtt_framing.ts";
import { type MqttMessage, MqttSession, type SessionOptions } from "../src/ingest/mqtt_session.ts";
import { processMemory } from "./bench/process_memory.ts";
import { BROKER_KIND, startBroker } from "./helpers/broker.ts";
import { query, storedReadings } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { connectPublisher, type Flood, flood } from "./helpers/mqtt_publisher.ts";
import { type OutpostProcess, startOutpost, waitForMqttIngest, writeManifest } from "./helpers/outpost_process.ts";

const MB = 1024 * 1024;
const TS = 1_763_805_600_000;

/** `{"readings":[1,1,...]}` with `count` elements: the crash-loop payload of issue 8. */
function ones(count: number): string {
  return `{"readings":[${"1,".repeat(count - 1)}1]}`;
}

function metric(text: string, series: string): number {
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

async function metrics(url: string): Promise<string> {
  return await (await fetch(`${url}/metrics`)).text();
}

function packet(packet: mqttPacket.Packet): Uint8Array {
  return new Uint8Array(mqttPacket.generate(packet));
}

function publishPacket(topic: string, payload: Uint8Array | string, qos: 0 | 1, messageId?: number): Uint8Array {
  return packet({ cmd: "publish", topic, payload: Buffer.from(payload), qos, messageId, dup: false, retain: false });
}

function concat(parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

function pushInChunks(framer: MqttFramer, bytes: Uint8Array, chunkSize: number): MqttFrame[] {
  const frames: MqttFrame[] = [];
  for (let at = 0; at < bytes.length; at += chunkSize) frames.push(...framer.push(bytes.subarray(at, at + chunkSize)));
  return frames;
}

const framingLimits = { maxPayloadBytes: 1_024, keptPayloadBytes: 16, maxControlBytes: 4_096 };

Deno.test("MQTT framer splits packets that arrive one byte at a time and keeps payloads within the bound whole", () => {
  const payload = new TextEncoder().encode('{"ts":1,"values":{"a":1}}');
  const bytes = concat([
    packet({ cmd: "connack", returnCode: 0, sessionPresent: false }),
    publishPacket("outpost/a/readings", payload, 1, 7),
    publishPacket("t", "", 0),
    packet({ cmd: "pingresp" }),
  ]);
  const frames = pushInChunks(new MqttFramer(framingLimits), bytes, 1);
  assert.deepEqual(frames.map((frame) => frame.kind), ["control", "publish", "publish", "control"]);
  assert.deepEqual(frames[1], {
    kind: "publish",
    topic: "outpost/a/readings",
    qos: 1,
    messageId: 7,
    payload,
    payloadBytes: payload.length,
  });
  assert.deepEqual(frames[2], { kind: "publish", topic: "t", qos: 0, payload: new Uint8Array(0), payloadBytes: 0 });
  assert.deepEqual(frames[3], { kind: "control", bytes: new Uint8Array([0xd0, 0]) });
});

Deno.test("MQTT framer keeps only the first bytes of a payload over the bound and reads on after it", () => {
  const big = new Uint8Array(100_000).map((_, i) => i % 251);
  const bytes = concat([
    publishPacket("outpost/big/readings", big, 1, 1),
    publishPacket("outpost/small/readings", "{}", 1, 2),
  ]);
  const frames = pushInChunks(new MqttFramer(framingLimits), bytes, 7_000);
  assert.deepEqual(frames, [
    {
      kind: "publish",
      topic: "outpost/big/readings",
      qos: 1,
      messageId: 1,
      payload: big.slice(0, 16),
      payloadBytes: 100_000,
    },
    {
      kind: "publish",
      topic: "outpost/small/readings",
      qos: 1,
      messageId: 2,
      payload: new TextEncoder().encode("{}"),
      payloadBytes: 2,
    },
  ]);
});

Deno.test("MQTT framer refuses a packet other than PUBLISH over its bound, and a malformed length", () => {
  const suback = packet({ cmd: "suback", messageId: 1, granted: new Array(5_000).fill(1) });
  assert.throws(() => new MqttFramer(framingLimits).push(suback.subarray(0, 10)), MqttProtocolError);
  assert.throws(
    () => new MqttFramer(framingLimits).push(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])),
    /more than 4 bytes/,
  );
  assert.throws(() => new MqttFramer(framingLimits).push(new Uint8Array([0x30, 0x02, 0x00, 0x00])), /empty topic/);
});

Deno.test(`MQTT ingest (${BROKER_KIND}) dead-letters payloads over spec.limits.mqttPayloadBytes cut short, acknowledged once, within 128 MB`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const manifest = await writeManifest(dir, { mqttUrl: broker.url });
  let outpost = await startOutpost(manifest);
  await waitForMqttIngest(outpost.url);
  const publisher = await connectPublisher(broker.url);
  try {
    const payloads = [ones(200_000), ones(1_000_000)];
    assert.deepEqual(payloads.map((payload) => payload.length), [400_014, 2_000_014]);
    for (const payload of payloads) await publisher.publish("outpost/pump-1/readings", payload);
    await publisher.publish("outpost/pump-1/readings", JSON.stringify({ ts: TS, values: { a: 1 } }));
    await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 1);
    const letters = await query(outpost.dataDir, "SELECT topic, reason, payload FROM dead_letters ORDER BY id");
    assert.equal(letters.length, 2);
    letters.forEach((letter, i) => {
      const size = payloads[i].length;
      assert.equal(
        letter.reason,
        `spec.limits.mqttPayloadBytes: Payload of ${size} bytes is over the limit of 262144 bytes` +
          ` (payload cut to its first 4096 of ${size} bytes)`,
      );
      assert.equal(letter.topic, "outpost/pump-1/readings");
      assert.equal(new TextDecoder().decode(letter.payload as ArrayBuffer), payloads[i].slice(0, 4_096));
    });
    const text = await metrics(outpost.url);
    assert.equal(metric(text, 'outpost_limit_refusals_total{limit="spec.limits.mqttPayloadBytes"}'), 2);
    assert.equal(metric(text, 'outpost_dead_letters_total{source="mqtt"}'), 2);
    assert.equal(metric(text, 'outpost_readings_total{source="mqtt",result="invalid"}'), 2);
    const { peak } = await processMemory(outpost.process.pid);
    assert.ok(peak < 128 * MB, `peak RSS ${(peak / MB).toFixed(1)} MB`);

    assert.equal(await outpost.stop(), 0);
    outpost = await startOutpost(manifest);
    await waitForMqttIngest(outpost.url);
    await publisher.publish("outpost/pump-1/readings", JSON.stringify({ ts: TS + 1, values: { a: 2 } }));
    await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 2);
    assert.equal((await query(outpost.dataDir, "SELECT id FROM dead_letters")).length, 2, "redelivered");
    assert.equal(metric(await metrics(outpost.url), 'outpost_dead_letters_total{source="mqtt"}'), 0);
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`MQTT ingest (${BROKER_KIND}) dead-letters a topic device id longer than spec.limits.nameLength`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: broker.url }));
  await waitForMqttIngest(outpost.url);
  const publisher = await connectPublisher(broker.url);
  try {
    const body = JSON.stringify({ ts: TS, values: { a: 1 } });
    await publisher.publish(`outpost/${"d".repeat(129)}/readings`, body);
    await publisher.publish(`outpost/${"e".repeat(128)}/readings`, body);
    const stored = await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 1);
    assert.equal(stored[0].device, "e".repeat(128));
    const letters = await query(outpost.dataDir, "SELECT topic, reason FROM dead_letters");
    assert.equal(letters.length, 1);
    assert.equal(letters[0].topic, `outpost/${"d".repeat(129)}/readings`);
    assert.match(String(letters[0].reason), /longer than 128 characters \(spec\.limits\.nameLength\)/);
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`MQTT ingest (${BROKER_KIND}) dead-letters a new device beyond spec.limits.devices and reads on`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: broker.url, limits: ["devices: 1"] }));
  await waitForMqttIngest(outpost.url);
  const publisher = await connectPublisher(broker.url);
  try {
    await publisher.publish("outpost/first/readings", JSON.stringify({ ts: TS, values: { a: 1 } }));
    await publisher.publish("outpost/second/readings", JSON.stringify({ ts: TS, values: { a: 1 } }));
    await publisher.publish("outpost/first/readings", JSON.stringify({ ts: TS + 1, values: { a: 2 } }));
    const stored = await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length === 2);
    assert.deepEqual(stored.map((row) => row.device), ["first", "first"]);
    const letters = await query(outpost.dataDir, "SELECT topic, reason FROM dead_letters");
    assert.equal(letters.length, 1);
    assert.equal(letters[0].topic, "outpost/second/readings");
    assert.match(String(letters[0].reason), /^spec\.limits\.devices: /);
    const text = await metrics(outpost.url);
    assert.equal(metric(text, 'outpost_limit_refusals_total{limit="spec.limits.devices"}'), 1);
    assert.equal(metric(text, "outpost_mqtt_connected"), 1);
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** How long each of `count` `/healthz` requests took, one every 100 ms. */
async function healthCheckTimes(url: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
    await response.body?.cancel();
    assert.equal(response.status, 200);
    times.push(Math.round(performance.now() - started));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return times;
}

interface FloodedOutpost {
  manifest: string;
  /** The Outpost process reading now (a test may restart it). */
  outpost: OutpostProcess;
  messages: Flood;
  /** Stops the flood, the publisher, Outpost and the broker, and removes the data. */
  close(): Promise<void>;
}

/** Outpost on a fresh broker with one device's readings flooding in, 5,000 of them already stored. */
async function floodedOutpost(): Promise<FloodedOutpost> {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const manifest = await writeManifest(dir, { mqttUrl: broker.url });
  const outpost = await startOutpost(manifest);
  await waitForMqttIngest(outpost.url);
  const publisher = await connectPublisher(broker.url);
  const messages = flood(publisher, "outpost/flood/readings", (i) => JSON.stringify({ ts: TS + i, values: { i } }));
  const run: FloodedOutpost = {
    manifest,
    outpost,
    messages,
    async close() {
      await messages.stop().catch(() => {});
      await publisher.close();
      await run.outpost.stop();
      await broker.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
  try {
    await eventually(() => storedReadings(outpost.dataDir), (rows) => rows.length >= 5_000, 20_000);
  } catch (error) {
    await run.close();
    throw error;
  }
  return run;
}

Deno.test(`MQTT ingest (${BROKER_KIND}): health checks answer during a flood that is scored`, async () => {
  const run = await floodedOutpost();
  try {
    // The device calibrated on its first readings, so the flood is scored as it is ingested.
    const healthMs = await healthCheckTimes(run.outpost.url, 5);
    assert.ok(metric(await metrics(run.outpost.url), "outpost_scored_readings_total") > 0, "the flood is scored");
    // Immediates kept the event loop from polling I/O (src/event_loop_turn.ts): medians of 2.9-3.3 s over
    // 5 checks. Now 0.13-0.25 s (aedes) and 0.4-1.1 s (mosquitto), single checks up to 2.7 s: the
    // publisher, the broker and Outpost saturate the same two cores.
    const median = [...healthMs].sort((a, b) => a - b)[2];
    assert.ok(median < 2_000, `/healthz took ${healthMs.join(", ")} ms`);
  } finally {
    await run.close();
  }
});

Deno.test(`MQTT ingest (${BROKER_KIND}) stops reading at SIGTERM during a flood: exits 0 at once, loses nothing it acknowledged`, async () => {
  const run = await floodedOutpost();
  try {
    const stopping = performance.now();
    const code = await run.outpost.stop();
    const stopMs = performance.now() - stopping;
    const storedByFirst = (await storedReadings(run.outpost.dataDir)).length;
    const published = await run.messages.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(run.outpost.log(), /shutdown_timeout/);
    // Before the fixes, backpressure resumed the paused socket and stop() waited out its 5 s for acks that
    // never drained; later, immediates held the signal back for up to 4.6 s (src/event_loop_turn.ts).
    assert.ok(stopMs < 3_000, `stopped after ${Math.round(stopMs)} ms`);
    assert.ok(published > storedByFirst, `flood still running at stop: ${published} published`);

    run.outpost = await startOutpost(run.manifest);

    await waitForMqttIngest(run.outpost.url);
    const stored = await eventually(() => storedReadings(run.outpost.dataDir), (r) => r.length >= published, 30_000);
    assert.equal(stored.length, published);
    assert.equal(new Set(stored.map((row) => row.ts)).size, published);
    // Whatever the first process stored it had acknowledged: none of it comes back as a duplicate.
    assert.equal(metric(await metrics(run.outpost.url), 'outpost_readings_total{source="mqtt",result="duplicate"}'), 0);
  } finally {
    await run.close();
  }
});

Deno.test({
  name: `MQTT session (${BROKER_KIND}) opens at CONNACK: a queued backlog that outlasts the connect timeout comes once`,
  // aedes sends the SUBACK before the queued messages, so only mosquitto (CI) shows the failure.
  ignore: BROKER_KIND !== "mosquitto",
}, async () => {
  const broker = await startBroker();
  const { hostname, port } = new URL(broker.url);
  const sessionOptions = (onMessage: (message: MqttMessage) => Promise<void>): SessionOptions => ({
    connect: () =>
      new Promise<Socket>((resolve, reject) => {
        const socket = connectTcp(Number(port), hostname);
        socket.once("connect", () => resolve(socket));
        socket.once("error", reject);
      }),
    clientId: "backlog-session",
    topics: ["backlog/#"],
    keepaliveSeconds: 30,
    maxPayloadBytes: 1_024,
    keptPayloadBytes: 64,
    connectTimeoutMs: 1_000,
    onMessage,
  });
  const publisher = await connectPublisher(broker.url);
  let session: MqttSession | null = null;
  try {
    // A first session leaves its subscription with the broker, which queues what comes while it is gone.
    await (await MqttSession.open(sessionOptions(() => Promise.resolve()))).stop(1_000);
    const count = 8_000;
    for (let start = 0; start < count; start += 200) {
      await Promise.all(
        Array.from({ length: 200 }, (_, i) => publisher.publish(`backlog/${start + i}`, `${start + i}`)),
      );
    }
    // Nothing is acknowledged for 2.5 s, longer than the 1 s connect timeout: reading pauses at
    // 2,000 messages in flight, with the SUBACK still behind the rest of the backlog. Waiting for it
    // timed the session out, and the next one took again what the first had handled.
    const received: string[] = [];
    const held = new Promise<void>((resolve) => setTimeout(resolve, 2_500));
    session = await MqttSession.open(sessionOptions((message) => {
      received.push(new TextDecoder().decode(message.payload));
      return held;
    }));
    await eventually(() => received.length, (length) => length >= count, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(received.length, count);
    assert.equal(new Set(received).size, count);
  } finally {
    await session?.stop(1_000);
    await publisher.close();
    await broker.close();
  }
});
