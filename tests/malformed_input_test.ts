import assert from "node:assert/strict";
import { BROKER_KIND, startBroker } from "./helpers/broker.ts";
import { query } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { hostileBodies } from "./helpers/hostile.ts";
import { malformedBodies } from "./helpers/malformed.ts";
import { connectPublisher } from "./helpers/mqtt_publisher.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

Deno.test(`1,000 malformed HTTP bodies and 3,000 malformed and hostile MQTT payloads (${BROKER_KIND}): 4xx JSON errors, dead letters, nothing stored`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const outpost = await startOutpost(await writeManifest(dir, { mqttUrl: broker.url, logLevel: "warn" }));
  const publisher = await connectPublisher(broker.url);
  try {
    const bodies = malformedBodies(1_000);
    for (const body of bodies) {
      const response = await postJson(`${outpost.url}/v1/readings`, body);
      assert.ok(response.status >= 400 && response.status < 500, `${response.status} for ${body}`);
      const answer = await response.json();
      assert.equal(typeof answer.error, "string", body);
    }
    // On a device topic, readings without a device are valid: keep only bodies invalid there too.
    const payloads = [...malformedBodies(1_000, 7), ...hostileBodies(2_000, 3)].filter((body) =>
      !/^\{"ts":1763805600000,"values":\{"a":1\}\}$/.test(body)
    );
    for (const payload of payloads) await publisher.publish("outpost/fuzz/readings", payload);
    await eventually(
      () => query(outpost.dataDir, "SELECT count(*) AS n FROM dead_letters"),
      (rows) => Number(rows[0].n) === payloads.length,
      60_000,
    );
    assert.equal((await query(outpost.dataDir, "SELECT count(*) AS n FROM readings"))[0].n, 0);
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);
  } finally {
    await publisher.close();
    await outpost.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});
