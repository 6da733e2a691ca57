import { type Config, readSinkToken } from "../config/config.ts";
import { AuditLog } from "../egress/audit.ts";
import { headPath } from "../egress/audit_head.ts";
import type { AuditKey } from "../egress/audit_key.ts";
import { Egress } from "../egress/egress.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Store } from "../store/store.ts";
import { Aggregator } from "./aggregator.ts";
import { Forwarder } from "./forwarder.ts";
import { Outbox, type SinkName } from "../store/outbox.ts";
import { HttpSink, type Sink } from "./sinks.ts";

const CIRCUIT_GAUGE = { closed: 0, half_open: 1, open: 2 } as const;
const IDLE_CLOSE_CHECK_MS = 1_000;
/**
 * Aggregation runs this long after a commit rather than at once: aggregates are not
 * latency-critical and one pass over many commits is cheaper; anomaly flags go first.
 */
const AGGREGATE_DELAY_MS = 200;

export interface Forwarding {
  readonly audit: AuditLog;
  readonly egress: Egress;
  readonly outbox: Outbox;
  /** `paused` (no sink: egress disabled), `ok`, or `retrying` (a sink is backing off). */
  state(): "paused" | "ok" | "retrying";
  status(): Promise<Record<string, unknown>>;
  /** New items were queued (alerts, events): wake the sinks. */
  notify(): void;
  /** Folds what is committed, stops the sinks; call before closing the store. */
  stop(): Promise<void>;
}

/** Store-and-forward: readings → aggregator → outbox → forwarder → sinks, all through the egress. */
export async function startForwarding(
  config: Config,
  deps: { store: Store; log: Logger; metrics: Metrics; auditKey: AuditKey },
): Promise<Forwarding> {
  const { store, log, metrics } = deps;
  const forwarding = config.forwarding;
  // The check at open compares the log with its signed head; the full walk (`audit verify`) runs
  // after start and on a schedule (src/egress/audit_verification.ts), and sets the same gauge.
  const tamperDetected = metrics.auditTamperDetected;
  const audit = await AuditLog.open(store.client, {
    now: () => store.now(),
    key: deps.auditKey,
    headPath: headPath(config.storage.dataDir),
    onTamper: (problem, detail) => {
      tamperDetected.set(1);
      log.error("audit.tamper_detected", { problem, ...detail });
    },
    onHeadError: (error) => log.error("audit.head_write_failed", { error }),
  });
  const egress = new Egress(config.egress, {
    audit,
    log,
    observer: {
      attempt: (destination, outcome) => metrics.egressAttempts.inc({ destination, outcome }),
      circuit: (destination, _from, to) => {
        metrics.circuitState.set({ destination }, CIRCUIT_GAUGE[to]);
        metrics.circuitTransitions.inc({ destination, to });
      },
    },
  });
  const sinkNames: SinkName[] = [];
  if (forwarding.http) sinkNames.push("http");
  if (forwarding.mqtt) sinkNames.push("mqtt");
  const now = () => store.now();
  const outbox = new Outbox(store.client, {
    now,
    sinks: sinkNames,
    ttlMs: forwarding.ttlMs,
    maxBufferBytes: forwarding.maxBufferBytes,
    onDrop: (kind, reason, count) => {
      metrics.outboxDropped.inc({ class: kind, reason }, count);
      log.warn("forward.dropped", { class: kind, reason, count });
    },
  });
  await outbox.reconcileSinks();
  const aggregator = new Aggregator(store.client, forwarding, { outbox, log, now });
  const sinks: Sink[] = [];
  if (forwarding.http) sinks.push(new HttpSink(forwarding, { egress, token: readSinkToken() }));
  if (forwarding.mqtt) {
    const { MqttUplinkSink } = await import("./mqtt_uplink_sink.ts");
    sinks.push(new MqttUplinkSink(forwarding, { egress, log }));
  }
  const stop = new AbortController();
  const forwarder = new Forwarder(store.client, forwarding, {
    now,
    outbox,
    sinks,
    log,
    observer: {
      delivered: (sink, kind, count) => metrics.forwarded.inc({ sink, class: kind }, count),
      expired: (kind, count) => metrics.outboxDropped.inc({ class: kind, reason: "expired" }, count),
    },
  }, stop.signal);

  const fold = async () => {
    try {
      if ((await aggregator.catchUp()) > 0 || forwarding.raw) forwarder.notify();
    } catch (error) {
      log.error("forward.aggregate_failed", { error });
    }
  };
  // With no sink there is nobody to aggregate for: the aggregator's cursor waits, and once a sink
  // is configured it folds the readings still in the store, in reading-time order.
  let scheduled: ReturnType<typeof setTimeout> | undefined;
  let timer: ReturnType<typeof setInterval> | undefined;
  if (sinks.length > 0) {
    store.onCommit(() => {
      scheduled ??= setTimeout(() => {
        scheduled = undefined;
        void fold();
      }, AGGREGATE_DELAY_MS);
    });
    timer = setInterval(() => void fold(), IDLE_CLOSE_CHECK_MS);
    void fold();
  }
  log.info("forward.started", {
    sinks: sinks.map((sink) => `${sink.name}:${sink.destination}`),
    paused: sinks.length === 0,
    raw: forwarding.raw,
  });

  const state = () => {
    if (sinks.length === 0) return "paused" as const;
    return forwarder.status().some((sink) => sink.state === "backoff") ? "retrying" as const : "ok" as const;
  };
  return {
    audit,
    egress,
    outbox,
    state,
    async status() {
      const [depth, bytes] = await Promise.all([outbox.depth(), outbox.bytes()]);
      for (const [kind, count] of Object.entries(depth)) metrics.outboxItems.set({ class: kind }, count);
      metrics.outboxBytes.set(bytes);
      return {
        forwarding: {
          state: state(),
          reason: sinks.length === 0
            ? (egress.enabled ? "no sink configured" : "egress disabled (spec.network.egressAllowed is empty)")
            : null,
          raw: forwarding.raw,
          sinks: forwarder.status(),
          outbox: { items: depth, bytes, maxBytes: forwarding.maxBufferBytes },
        },
        egress: { enabled: egress.enabled, allowed: config.egress.allowed, destinations: egress.status() },
      };
    },
    notify: () => forwarder.notify(),
    async stop() {
      clearInterval(timer);
      clearTimeout(scheduled);
      if (sinks.length > 0) await fold();
      stop.abort();
      await forwarder.finished;
      await audit.settled();
    },
  };
}
