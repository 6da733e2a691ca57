import assert from "node:assert/strict";
import { BROKER_KIND, startBroker } from "./helpers/broker.ts";
import { readingKey, storedReadings } from "./helpers/db.ts";
import { eventually } from "./helpers/eventually.ts";
import { connectPublisher } from "./helpers/mqtt_publisher.ts";
import {
  type OutpostProcess,
  postJson,
  startOutpost,
  waitForMqttIngest,
  writeManifest,
} from "./helpers/outpost_process.ts";

const ROUNDS = 4;
const BASE_TS = 1_763_805_600_000;

Deno.test(`SIGKILL during HTTP and MQTT ingest (${BROKER_KIND}) loses no acknowledged reading`, async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBroker();
  const manifest = await writeManifest(dir, { mqttUrl: broker.url, logLevel: "warn" });
  const publisher = await connectPublisher(broker.url);
  const acknowledged = new Set<string>();
  const published = new Set<string>();
  let sequence = 0;
  let outpost: OutpostProcess | null = null;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      outpost = await startOutpost(manifest);
      // Its persistent session must exist before the first message, or that message is not kept for it.
      if (round === 0) await waitForMqttIngest(outpost.url);
      const target = outpost;
      let running = true;
      const httpWorker = async (worker: number) => {
        while (running) {
          const readings = Array.from({ length: 50 }, () => ({
            device: `http-${worker}`,
            ts: BASE_TS + sequence++,
            values: { a: round, b: worker },
          }));
          try {
            const response = await postJson(`${target.url}/v1/readings`, { readings });
            await response.body?.cancel();
            if (response.status === 202) { for (const r of readings) acknowledged.add(readingKey(r.device, r.ts)); }
          } catch {
            return; // the process is gone: this request was never acknowledged
          }
        }
      };
      const mqttWorker = async () => {
        while (running) {
          const ts = BASE_TS + sequence++;
          await publisher.publish("outpost/mqtt-dev/readings", JSON.stringify({ ts, values: { a: round } }));
          published.add(readingKey("mqtt-dev", ts));
        }
      };
      const workers = [httpWorker(0), httpWorker(1), httpWorker(2), mqttWorker()];
      await new Promise((resolve) => setTimeout(resolve, 300 + round * 150));
      await target.kill();
      running = false;
      await Promise.all(workers);
    }
    outpost = await startOutpost(manifest);
    const expected = new Set([...acknowledged, ...published]);
    const stored = await eventually(
      async () => new Set((await storedReadings(outpost!.dataDir)).map((r) => readingKey(r.device, r.ts))),
      (keys) => [...expected].every((key) => keys.has(key)),
      20_000,
    );
    assert.ok(acknowledged.size > 500, `only ${acknowledged.size} HTTP readings were acknowledged`);
    assert.ok(published.size > 50, `only ${published.size} MQTT messages were published`);
    const missing = [...expected].filter((key) => !stored.has(key));
    assert.deepEqual(missing, []);
  } finally {
    await publisher.close();
    await outpost?.stop();
    await broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});
