import { Counter, Gauge, Histogram, Registry, Summary } from "./prometheus.ts";
import type { StoreStats } from "../store/store.ts";

/**
 * Outpost's Prometheus metrics, exposed by `./prometheus.ts`. There are no default process
 * metrics (they would read /proc, which Deno's permissions deny): the process gauges below come
 * from `Deno.memoryUsage()`.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly readings = new Counter({
    name: "outpost_readings_total",
    help: "Readings received, by source (http, mqtt) and result (stored, duplicate, invalid, rejected)",
    labelNames: ["source", "result"] as const,
    registers: [this.registry],
  });
  readonly deadLetters = new Counter({
    name: "outpost_dead_letters_total",
    help: "Invalid MQTT payloads kept in the dead-letter table",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly limitRefusals = new Counter({
    name: "outpost_limit_refusals_total",
    help: "Requests, messages and work refused at a bound, by the manifest key of the limit",
    labelNames: ["limit"] as const,
    registers: [this.registry],
  });
  readonly ingestAuthRefusals = new Counter({
    name: "outpost_ingest_auth_refusals_total",
    help:
      "Ingest requests refused for their token, by reason (missing, malformed, unknown, expired, device_not_allowed, ...)",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly tlsHandshakeFailures = new Counter({
    name: "outpost_tls_handshake_failures_total",
    help: "TLS handshakes with API clients that failed (clients speaking clear HTTP, untrusted certificates)",
    labelNames: ["server"] as const,
    registers: [this.registry],
  });
  readonly tlsReloads = new Counter({
    name: "outpost_tls_reloads_total",
    help: "Reloads of spec.api.tls files after they changed, by result (loaded, failed: the old pair stays)",
    labelNames: ["server", "result"] as const,
    registers: [this.registry],
  });
  readonly httpListenerEvents = new Counter({
    name: "outpost_http_listener_events_total",
    help: "What the HTTP listener's watchdog saw and did, by event: descriptors_exhausted (no descriptor " +
      "free, listener closed so connections are refused), accept_stalled (a connection was not accepted), " +
      "reopened, reopen_failed",
    labelNames: ["server", "event"] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: "outpost_http_request_duration_seconds",
    help: "Local API request latency by route, method and status",
    labelNames: ["route", "method", "status"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly mqttConnected = new Gauge({
    name: "outpost_mqtt_connected",
    help: "1 while the MQTT ingest session is connected to the broker",
    registers: [this.registry],
  });

  readonly egressAttempts = new Counter({
    name: "outpost_egress_attempts_total",
    help: "Outbound attempts by destination and outcome (ok, http_error, network_error, refused_by_policy, ...)",
    labelNames: ["destination", "outcome"] as const,
    registers: [this.registry],
  });
  readonly circuitState = new Gauge({
    name: "outpost_egress_circuit_state",
    help: "Circuit breaker state per destination: 0 closed, 1 half-open, 2 open",
    labelNames: ["destination"] as const,
    registers: [this.registry],
  });
  readonly circuitTransitions = new Counter({
    name: "outpost_egress_circuit_transitions_total",
    help: "Circuit breaker transitions per destination, by the state entered",
    labelNames: ["destination", "to"] as const,
    registers: [this.registry],
  });
  readonly forwarded = new Counter({
    name: "outpost_forwarded_items_total",
    help: "Items confirmed by a sink, by sink and class",
    labelNames: ["sink", "class"] as const,
    registers: [this.registry],
  });
  readonly outboxDropped = new Counter({
    name: "outpost_outbox_dropped_total",
    help: "Items dropped before delivery, by class and reason (overflow, expired)",
    labelNames: ["class", "reason"] as const,
    registers: [this.registry],
  });
  readonly outboxItems = new Gauge({
    name: "outpost_outbox_items",
    help: "Items waiting in the outbox, by class",
    labelNames: ["class"] as const,
    registers: [this.registry],
  });
  readonly outboxBytes = new Gauge({
    name: "outpost_outbox_bytes",
    help: "Bytes of items waiting in the outbox",
    registers: [this.registry],
  });

  readonly auditTamperDetected = new Gauge({
    name: "outpost_audit_tamper_detected",
    help: "1 when the egress audit log was found not intact: by the latest audit verify the running program " +
      "made (at start, then every 10 minutes or more, or on POST /v1/egress/audit/verify), or, until the first " +
      "one completes, by the check against its signed head at start; else 0",
    registers: [this.registry],
  });
  readonly auditVerified = new Gauge({
    name: "outpost_audit_verify_last_completed_timestamp_seconds",
    help: "Unix time at which the running program last completed an audit verify (whatever it found); 0 before",
    registers: [this.registry],
  });
  readonly auditVerifyDuration = new Gauge({
    name: "outpost_audit_verify_duration_seconds",
    help: "How long the last completed audit verify took (one HMAC per audit row)",
    registers: [this.registry],
  });
  readonly ready = new Gauge({
    name: "outpost_ready",
    help: "1 when /readyz would answer 200 (every check passes, degraded ones included), else 0; " +
      "computed at each scrape",
    registers: [this.registry],
  });
  readonly readinessChecks = new Gauge({
    name: "outpost_readiness_check",
    help: "Each /readyz check at the scrape: 2 passes, 1 passes degraded (broker, uplink, scoring), 0 fails",
    labelNames: ["check"] as const,
    registers: [this.registry],
  });

  readonly scored = new Counter({
    name: "outpost_scored_readings_total",
    help: "Readings scored by a model",
    registers: [this.registry],
  });
  readonly commitToFlag = new Summary({
    name: "outpost_commit_to_flag_seconds",
    help: "Time from a reading's commit to its score and anomaly flag being committed (last 5 minutes)",
    percentiles: [0.5, 0.9, 0.99],
    maxAgeSeconds: 300,
    ageBuckets: 5,
    registers: [this.registry],
  });
  readonly inferenceErrors = new Counter({
    name: "outpost_inference_errors_total",
    help: "Scoring passes that failed (the readings stay unscored and are retried)",
    registers: [this.registry],
  });
  readonly episodes = new Counter({
    name: "outpost_anomaly_episodes_total",
    help: "Anomaly episodes started and ended",
    labelNames: ["change"] as const,
    registers: [this.registry],
  });
  readonly calibrationSeconds = new Histogram({
    name: "outpost_calibration_duration_seconds",
    help: "Time to fit and emit a device's model",
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly alertsPublished = new Counter({
    name: "outpost_alerts_published_total",
    help: "Alerts published to the local broker (after its PUBACK)",
    registers: [this.registry],
  });

  constructor(stats: () => StoreStats) {
    const storeSize = new Gauge({
      name: "outpost_store_size_bytes",
      help: "Bytes in use by the libSQL store",
      registers: [this.registry],
    });
    const storeLimit = new Gauge({
      name: "outpost_store_limit_bytes",
      help: "Hard size limit of the libSQL store (spec.storage.maxSizeMB)",
      registers: [this.registry],
    });
    const storeRows = new Gauge({
      name: "outpost_store_readings",
      help: "Readings held in the store",
      registers: [this.registry],
    });
    const storeDevices = new Gauge({
      name: "outpost_store_devices",
      help: "Devices the store holds readings of (bounded by spec.limits.devices)",
      registers: [this.registry],
    });
    const commitFailures = new Counter({
      name: "outpost_store_commit_failures_total",
      help: "Commits of readings (and readiness probes) that failed: disk full, database locked, read-only",
      registers: [this.registry],
    });
    let commitFailuresSeen = 0;
    const checkpointFailures = new Counter({
      name: "outpost_store_checkpoint_failures_total",
      help: "WAL checkpoints that failed (disk full): the WAL grows until one succeeds",
      registers: [this.registry],
    });
    let checkpointFailuresSeen = 0;
    const retentionDeleted = new Counter({
      name: "outpost_retention_deleted_total",
      help: "Rows deleted by retention, by table (readings, deadLetters, events, alerts, audit)",
      labelNames: ["table"] as const,
      registers: [this.registry],
    });
    const retentionSeen: Record<string, number> = {};
    const rss = new Gauge({
      name: "outpost_process_resident_memory_bytes",
      help: "Resident set size of the Outpost process",
      registers: [this.registry],
    });
    const heap = new Gauge({
      name: "outpost_process_heap_used_bytes",
      help: "V8 heap in use",
      registers: [this.registry],
    });
    const heapTotal = new Gauge({
      name: "outpost_process_heap_total_bytes",
      help: "V8 heap reserved (in use and free)",
      registers: [this.registry],
    });
    const external = new Gauge({
      name: "outpost_process_external_bytes",
      help: "Memory outside the V8 heap held by JavaScript objects (buffers, typed arrays)",
      registers: [this.registry],
    });
    // Set once: an unplanned restart (the unit's MemoryMax= kill, a crash) shows as a change of it.
    new Gauge({
      name: "outpost_process_start_time_seconds",
      help: "When this Outpost process started, seconds since the epoch",
      registers: [this.registry],
    }).set(Math.round(Date.now() - performance.now()) / 1000);
    this.#collect = () => {
      const current = stats();
      storeSize.set(current.usedBytes);
      storeLimit.set(current.maxSizeBytes);
      storeRows.set(current.rows);
      storeDevices.set(current.devices);
      commitFailures.inc(current.commitFailures - commitFailuresSeen);
      commitFailuresSeen = current.commitFailures;
      checkpointFailures.inc(current.checkpointFailures - checkpointFailuresSeen);
      checkpointFailuresSeen = current.checkpointFailures;
      for (const [table, count] of Object.entries(current.retentionDeleted)) {
        retentionDeleted.inc({ table }, count - (retentionSeen[table] ?? 0));
        retentionSeen[table] = count;
      }
      const memory = Deno.memoryUsage();
      rss.set(memory.rss);
      heap.set(memory.heapUsed);
      heapTotal.set(memory.heapTotal);
      external.set(memory.external);
    };
  }

  readonly #collect: () => void;

  readonly #collectors: (() => Promise<unknown>)[] = [];

  /** Runs `collector` before every render (to refresh gauges kept elsewhere). */
  addCollector(collector: () => Promise<unknown>): void {
    this.#collectors.push(collector);
  }

  /** Sets `outpost_ready` and `outpost_readiness_check` from a readiness probe's checks. */
  observeReadiness(checks: readonly { name: string; ok: boolean; degraded?: boolean }[]): void {
    this.ready.set(checks.every((check) => check.ok) ? 1 : 0);
    for (const check of checks) {
      this.readinessChecks.set({ check: check.name }, check.ok ? (check.degraded ? 1 : 2) : 0);
    }
  }

  /** The exposition text, refreshed from the store and the process. */
  async render(): Promise<string> {
    this.#collect();
    await Promise.all(this.#collectors.map((collector) => collector()));
    return await this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
