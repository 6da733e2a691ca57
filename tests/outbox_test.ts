import assert from "node:assert/strict";
import type { ForwardingConfig, OutboxClass } from "../src/config/config.ts";
import { AuditLog } from "../src/egress/audit.ts";
import { Egress } from "../src/egress/egress.ts";
import { Forwarder } from "../src/forward/forwarder.ts";
import { Outbox, type OutboxItem } from "../src/store/outbox.ts";
import { HttpSink } from "../src/forward/sinks.ts";
import { createLogger } from "../src/observability/log.ts";
import { type Database, openDatabase } from "../src/store/database.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";

const quiet = createLogger("error", () => {});
const DAY = 86_400_000;

function forwardingConfig(collector: Collector, overrides: Partial<ForwardingConfig> = {}): ForwardingConfig {
  return {
    source: "edge-1",
    aggregateSeconds: 60,
    graceSeconds: 0,
    idleCloseSeconds: 60,
    raw: false,
    batchSize: 10,
    maxBufferBytes: 10_000_000,
    ttlMs: { alert: DAY, event: DAY, aggregate: DAY, reading: DAY },
    backoff: { minMs: 20, maxMs: 100 },
    http: { url: collector.url, gzip: true, timeoutMs: 2_000 },
    mqtt: null,
    ...overrides,
  };
}

function items(kind: OutboxClass, count: number, size = 10): OutboxItem[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `${kind}/${i}`,
    kind,
    fields: { device: "pump-1", seq: i, pad: "x".repeat(size) },
  }));
}

async function withOutbox(
  collector: Collector,
  options: { maxBufferBytes?: number; ttlMs?: ForwardingConfig["ttlMs"] },
  fn: (outbox: Outbox, database: Database, drops: Record<string, number>) => Promise<void>,
) {
  const dir = await Deno.makeTempDir();
  const database = await openDatabase(dir, quiet);
  const drops: Record<string, number> = {};
  const config = forwardingConfig(collector, options);
  const outbox = new Outbox(database.client, {
    sinks: ["http"],
    ttlMs: config.ttlMs,
    maxBufferBytes: config.maxBufferBytes,
    onDrop: (kind, reason, count) => (drops[`${kind}:${reason}`] = (drops[`${kind}:${reason}`] ?? 0) + count),
  });
  try {
    await fn(outbox, database, drops);
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("after an outage the backlog replays alerts first, then events, then aggregates, each id once", async () => {
  const collector = await Collector.create({ up: false });
  await withOutbox(collector, {}, async (outbox, database) => {
    await outbox.enqueue(items("aggregate", 30));
    await outbox.enqueue(items("event", 12));
    await outbox.enqueue(items("alert", 5));
    await outbox.enqueue(items("alert", 5)); // the same ids again: no-op
    const config = forwardingConfig(collector);
    const egress = new Egress(
      {
        allowed: [collector.destination],
        rateLimit: { perSecond: 1000, burst: 1000 },
        circuitBreaker: { failureThreshold: 3, openSeconds: 0.05 },
      },
      { audit: new AuditLog(database.client), log: quiet },
    );
    const stop = new AbortController();
    const forwarder = new Forwarder(database.client, config, {
      outbox,
      sinks: [new HttpSink(config, { egress, token: "secret" })],
      log: quiet,
    }, stop.signal);
    try {
      await eventually(() => forwarder.status()[0].consecutiveFailures, (n) => n >= 3);
      collector.start();
      await eventually(() => collector.unique().size, (n) => n === 47);
      const kinds = collector.items().map((item) => item.kind);
      const firstEvent = kinds.indexOf("event");
      const firstAggregate = kinds.indexOf("aggregate");
      assert.ok(kinds.lastIndexOf("alert") < firstEvent && kinds.lastIndexOf("event") < firstAggregate, kinds.join());
      assert.equal(collector.items().filter((item) => item.kind === "alert").length, 5);
      const seqs = collector.items().filter((item) => item.kind === "aggregate").map((item) => item.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => Number(a) - Number(b)), "oldest first within a class");
      assert.equal(collector.batches[0].authorization, "Bearer secret");
      assert.equal((await outbox.depth()).aggregate, 0);
    } finally {
      stop.abort();
      await forwarder.finished;
      await collector.stop();
    }
  });
});

Deno.test("a full outbox drops the oldest items of the lowest class first and never an alert while others remain", async () => {
  const collector = await Collector.create({ up: false });
  await withOutbox(collector, { maxBufferBytes: 20_000 }, async (outbox, _database, drops) => {
    await outbox.enqueue(items("alert", 20, 200)); // ~5 KB
    await outbox.enqueue(items("event", 20, 200)); // ~5 KB
    await outbox.enqueue(items("aggregate", 60, 200)); // ~15 KB: over the bound
    const depth = await outbox.depth();
    assert.equal(depth.alert, 20);
    assert.equal(depth.event, 20);
    assert.ok(depth.aggregate < 60 && depth.aggregate > 0);
    assert.equal(drops["aggregate:overflow"], 60 - depth.aggregate);
    const left = await outbox.next("http", 1000);
    const aggregateSeqs = left.filter((item) => item.kind === "aggregate").map((item) => JSON.parse(item.body).seq);
    assert.equal(aggregateSeqs[0], 60 - depth.aggregate, "the oldest aggregates went first");
    assert.ok((await outbox.bytes()) <= 20_000);

    await outbox.enqueue(items("alert", 100, 200).map((item) => ({ ...item, id: `late-${item.id}` })));
    const after = await outbox.depth();
    assert.equal(after.aggregate, 0);
    assert.equal(after.event, 0);
    assert.ok(after.alert > 0 && drops["alert:overflow"] > 0, "alerts go only once nothing else is left");
  });
});

Deno.test("items past their class TTL expire and are counted", async () => {
  const collector = await Collector.create({ up: false });
  const ttlMs = { alert: DAY, event: DAY, aggregate: 1, reading: DAY };
  await withOutbox(collector, { ttlMs }, async (outbox, _database, drops) => {
    await outbox.enqueue([...items("aggregate", 3), ...items("alert", 2)]);
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(await outbox.expire(), { aggregate: 3 });
    assert.equal(drops["aggregate:expired"], 3);
    assert.deepEqual(await outbox.depth(), { alert: 2, event: 0, aggregate: 0, reading: 0 });
  });
});
