import type { ForwardingConfig } from "../../src/config/config.ts";

const DAY = 86_400_000;

/** Forwarding settings for tests of the aggregator and the outbox: minute windows, no sink, day-long TTLs. */
export const FORWARDING_CONFIG: ForwardingConfig = {
  source: "edge",
  aggregateSeconds: 60,
  graceSeconds: 5,
  idleCloseSeconds: 120,
  raw: false,
  batchSize: 100,
  maxBufferBytes: 1e9,
  ttlMs: { alert: DAY, event: DAY, aggregate: DAY, reading: DAY },
  backoff: { minMs: 10, maxMs: 10 },
  http: null,
  mqtt: null,
};
