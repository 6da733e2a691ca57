import assert from "node:assert/strict";
import { BROKER_KIND, startBroker } from "./helpers/broker.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import { connectPublisher } from "./helpers/mqtt_publisher.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const BASE = Date.parse("2026-11-22T10:00:00Z");

function forwardingManifest(dir: string, collector: Collector, extra: string[] = []) {
  return writeManifest(dir, {
    egressAllowed: [collector.destination],
    circuitOpenSeconds: 1,
    forwarding: [
      "aggregateSeconds: 10",
      "graceSeconds: 0",
      "idleCloseSeconds: 2",
      "raw: true",
      "batchSize: 200",
      "backoff: { minMs: 50, maxMs: 400 }",
      `http: { url: "${collector.url}" }`,
      ...extra,
    ],
    logLevel: "warn",
  });
}

/** Readings for `devices` devices, one per second from `fromSecond`, values = second + device index. */
async function sendSeconds(url: string, devices: number, fromSecond: number, seconds: number) {
  for (let s = fromSecond; s < fromSecond + seconds; s += 50) {
    const readings = [];
    for (let second = s; second < Math.min(s + 50, fromSecond + seconds); second++) {
      for (let d = 0; d < devices; d++) {
        readings.push({ device: `pump-${d}`, ts: BASE + second * 1000, values: { temp: second + d, rpm: 1000 } });
      }
    }
    const response = await postJson(`${url}/v1/readings`, { readings });
    assert.equal(response.status, 202);
    await response.body?.cancel();
  }
}

Deno.test("aggregates and raw readings arrive exactly once per id across collector outages", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create({ up: false });
  const outpost = await startOutpost(await forwardingManifest(dir, collector));
  try {
    await sendSeconds(outpost.url, 2, 0, 60);
    const status = await eventually(
      async () => await (await fetch(`${outpost.url}/v1/status`)).json(),
      (s) => s.forwarding.state === "retrying" && s.egress.destinations[0]?.circuit === "open",
    );
    assert.equal(status.egress.destinations[0].destination, collector.destination);
    const during = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(during, new RegExp(`outpost_egress_circuit_state\\{destination="${collector.destination}"\\} 2`));
    assert.match(during, /outpost_egress_attempts_total\{destination="[^"]+",outcome="network_error"\} [1-9]/);
    collector.start();
    // 2 devices x 60 s raw readings; 2 devices x 2 sensors x 6 windows of 10 s (the last closes when idle).
    await eventually(() => collector.unique(), (unique) => unique.size === 120 + 24, 20_000);
    await collector.stop();
    await sendSeconds(outpost.url, 2, 60, 30);
    await new Promise((resolve) => setTimeout(resolve, 300));
    collector.start();
    const unique = await eventually(() => collector.unique(), (u) => u.size === 180 + 36, 20_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(collector.items().length, unique.size, "no item was delivered twice");
    const aggregates = [...unique.values()].filter((item) => item.kind === "aggregate");
    const first = aggregates.find((item) => item.device === "pump-1" && item.sensor === "temp" && item.start === BASE)!;
    assert.deepEqual(
      {
        count: first.count,
        min: first.min,
        max: first.max,
        mean: first.mean,
        last: first.last,
        seconds: first.seconds,
      },
      { count: 10, min: 1, max: 10, mean: 5.5, last: 10, seconds: 10 },
    );
    assert.ok(collector.batches.every((batch) => batch.source === "outpost-test" && typeof batch.batch === "string"));
    assert.ok(collector.batches.some((batch) => batch.gzip), "large batches are gzipped");
  } finally {
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGKILL while forwarding a backlog loses nothing", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create({ up: false });
  const manifest = await forwardingManifest(dir, collector);
  let outpost = await startOutpost(manifest);
  try {
    await sendSeconds(outpost.url, 5, 0, 200);
    collector.start();
    await eventually(() => collector.items().length, (n) => n > 50, 10_000);
    await outpost.kill();
    await collector.stop();
    outpost = await startOutpost(manifest);
    collector.start();
    // 5 devices x 200 raw + 5 x 2 sensors x 20 windows.
    await eventually(() => collector.unique().size, (n) => n === 1000 + 200, 30_000);
  } finally {
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("with egress disabled the local pipeline runs and forwarding reports paused", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { forwarding: ["aggregateSeconds: 10", "graceSeconds: 0"] }),
  );
  try {
    await sendSeconds(outpost.url, 1, 0, 30);
    const ready = await (await fetch(`${outpost.url}/readyz`)).json();
    assert.equal(ready.status, "ready");
    assert.match(JSON.stringify(ready.checks), /paused: no sink/);
    const status = await (await fetch(`${outpost.url}/v1/status`)).json();
    assert.equal(status.forwarding.state, "paused");
    assert.equal(status.forwarding.outbox.items.aggregate, 0, "nothing is aggregated for no sink");
    assert.match(status.forwarding.reason, /egress disabled/);
    assert.equal(status.egress.enabled, false);
    const audit = await (await fetch(`${outpost.url}/v1/egress/audit`)).json();
    assert.deepEqual(audit.entries, []);
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`batches reach an allowlisted MQTT uplink broker (${BROKER_KIND}) with QoS 1, through the egress`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const subscriber = await connectPublisher(broker.url);
  const received: { batch: string; items: { id: string; kind: string }[] }[] = [];
  subscriber.on(
    "message",
    (_topic: string, payload: Uint8Array) => received.push(JSON.parse(new TextDecoder().decode(payload))),
  );
  await subscriber.subscribe("site/uplink");
  const outpost = await startOutpost(
    await writeManifest(dir, {
      egressAllowed: [`127.0.0.1:${broker.port}`],
      forwarding: ["raw: true", `mqtt: { url: "${broker.url}", topic: site/uplink }`],
      logLevel: "warn",
    }),
  );
  try {
    await sendSeconds(outpost.url, 3, 0, 20);
    const ids = await eventually(
      () => new Set(received.flatMap((batch) => batch.items.map((item) => item.id))),
      (set) => set.size >= 60,
    );
    assert.ok([...ids].some((id) => id.startsWith("reading/pump-2/")));
    const audit = await (await fetch(`${outpost.url}/v1/egress/audit`)).json();
    assert.ok(
      audit.entries.some((entry: { purpose: string; outcome: string }) =>
        entry.purpose === "uplink" && entry.outcome === "ok"
      ),
    );
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_forwarded_items_total\{sink="mqtt",class="reading"\} [1-9]/);
  } finally {
    await outpost.stop();
    await subscriber.close();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readings kept while egress was disabled are aggregated and forwarded once a sink is configured", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const offline = await startOutpost(
    await writeManifest(dir, { forwarding: ["aggregateSeconds: 10", "graceSeconds: 0"] }),
  );
  try {
    await sendSeconds(offline.url, 1, 0, 30);
  } finally {
    assert.equal(await offline.stop(), 0);
  }
  const online = await startOutpost(
    await writeManifest(dir, {
      egressAllowed: [collector.destination],
      forwarding: [
        "aggregateSeconds: 10",
        "graceSeconds: 0",
        "idleCloseSeconds: 2",
        `http: { url: "${collector.url}" }`,
      ],
    }),
  );
  try {
    // 30 s of one device: windows 0-10 and 10-20 close on later readings, 20-30 after idle (2 s).
    await eventually(
      () => collector.items().filter((item) => item.kind === "aggregate").length,
      (n) => n === 2 * 3,
      15_000,
    );
  } finally {
    await online.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
