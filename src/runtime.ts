import { IngestTokens } from "./api/ingest_tokens.ts";
import { createApi } from "./api/app.ts";
import { type HttpServer, serveHttp } from "./api/http_server.ts";
import { metricsRoutes, type ReadinessCheck } from "./api/health.ts";
import { type Config, underSystemd } from "./config/config.ts";
import { startDetection } from "./detect/detection.ts";
import { startForwarding } from "./forward/pipeline.ts";
import { checkpointMac } from "./egress/audit.ts";
import { AuditKey } from "./egress/audit_key.ts";
import { headPath } from "./egress/audit_head.ts";
import { startAuditVerification } from "./egress/audit_verification.ts";
import { checkBrokerFiles } from "./ingest/broker_access.ts";
import type { MqttSource } from "./ingest/mqtt_source.ts";
import type { Logger } from "./observability/log.ts";
import { Metrics } from "./observability/metrics.ts";
import { startRollups } from "./store/rollup_pass.ts";
import { Store } from "./store/store.ts";
import { startConfirmation } from "./release/confirmation.ts";
import { releaseIdentity } from "./version.ts";

/** How long requests in flight at shutdown may take before their sockets are closed. */
const HTTP_DRAIN_MS = 3_000;

export interface Runtime {
  /** Settles after an orderly shutdown once `signal` aborts. */
  readonly finished: Promise<void>;
}

/**
 * The one place where components are wired together: store → metrics → API (and ingest over
 * HTTP) → MQTT ingest. Shutdown runs in reverse: stop intake, finish in-flight commits, close
 * the store last.
 */
export async function startRuntime(config: Config, log: Logger, signal: AbortSignal): Promise<Runtime> {
  // A broker login or TLS file that cannot be used fails the start here, naming its manifest key.
  if (config.mqtt) checkBrokerFiles(config.mqtt);
  const auditKey = await AuditKey.load(config.storage.auditKey, { create: true });
  if (config.storage.auditKey.source === "default") log.info("audit.key", { path: config.storage.auditKey.path });
  const store = await Store.open({
    ...config.storage,
    limits: config.limits,
    signAuditCheckpoint: (checkpoint) => checkpointMac(auditKey, checkpoint),
  }, log);
  const metrics = new Metrics(() => store.stats());
  let forwarding;
  let detection;
  try {
    forwarding = await startForwarding(config, { store, log, metrics, auditKey });
    const queued = forwarding;
    detection = await startDetection(config, {
      store,
      outbox: forwarding.outbox,
      log,
      metrics,
      egress: forwarding.egress,
      onQueued: () => queued.notify(),
    });
  } catch (error) {
    await forwarding?.stop();
    await store.close();
    throw error;
  }
  metrics.addCollector(() => forwarding.status());
  const service = { underSystemd: underSystemd(), pid: Deno.pid };
  const intake = new AbortController();
  // mqtt-packet is loaded only when the manifest has a broker (about 4 MB resident otherwise spent).
  const mqtt: MqttSource | null = config.mqtt
    ? new (await import("./ingest/mqtt_source.ts")).MqttSource(
      config.mqtt,
      { store, metrics, log, limits: config.limits, egress: forwarding.egress },
      intake.signal,
    )
    : null;
  let serving = false;

  const readiness = async (): Promise<ReadinessCheck[]> => {
    const storeProblems = await store.probe();
    const checks: ReadinessCheck[] = [
      { name: "store", ok: storeProblems.length === 0, detail: storeProblems.join("; ") || "open and migrated" },
      { name: "http_intake", ok: serving, detail: serving ? "listening" : "not listening" },
    ];
    checks.push(detection.readiness());
    if (mqtt) {
      const connected = mqtt.state === "connected";
      checks.push({
        name: "mqtt_broker",
        ok: true,
        degraded: !connected,
        detail: connected ? "connected" : `${mqtt.state}${mqtt.lastError ? `: ${mqtt.lastError}` : ""}`,
      });
    } else {
      checks.push({ name: "mqtt_broker", ok: true, detail: "disabled (spec.ingest.mqtt.url not set)" });
    }
    const forwardingState = forwarding.state();
    checks.push({
      name: "forwarding",
      ok: true,
      degraded: forwardingState === "retrying",
      detail: forwardingState === "paused" ? "paused: no sink (egress disabled)" : forwardingState,
    });
    return checks;
  };

  metrics.addCollector(async () => metrics.observeReadiness(await readiness()));
  // `audit verify` after start and on a schedule; its last result is in /v1/status and the gauge.
  const auditVerification = startAuditVerification({
    client: store.client,
    key: auditKey,
    headPath: headPath(config.storage.dataDir),
    log,
    metrics,
  }, { signal });

  const identity = await releaseIdentity(config.manifestPath, config.release.trustedKeys);
  const separateMetrics = config.metrics.enabled && config.metrics.port !== config.api.listen.port;
  const api = createApi({
    identity: { name: config.name, ...identity },
    service,
    store,
    metrics,
    forwarding,
    detection,
    log,
    readiness,
    bodyLimitBytes: config.api.bodyLimitBytes,
    limits: config.limits,
    trustedKeys: config.release.trustedKeys,
    adminTokenFile: config.adminTokenFile,
    ingestTokens: new IngestTokens(config.storage.dataDir, config.limits),
    ingestAuth: config.api.ingestAuth === "token",
    serveMetrics: config.metrics.enabled && !separateMetrics,
    auditVerification,
  });
  const servers: HttpServer[] = [];
  const serverOptions = { host: config.api.listen.host, limits: config.limits, log, metrics, tls: config.api.tls };
  try {
    servers.push(
      await serveHttp(api.fetch, {
        ...serverOptions,
        name: "api",
        port: config.api.listen.port,
        addressKey: "spec.api.listen",
      }),
    );
    if (separateMetrics) {
      const app = metricsRoutes(metrics);
      servers.push(
        await serveHttp(app.fetch, {
          ...serverOptions,
          name: "metrics",
          port: config.metrics.port,
          addressKey: "spec.observability.metricsPort",
        }),
      );
    }
  } catch (error) {
    for (const server of servers) await server.close(0);
    intake.abort();
    await mqtt?.finished;
    await detection.stop();
    await forwarding.stop();
    await store.close();
    throw error;
  }
  serving = true;
  // Per-minute rollups for charts, kept behind the writer (nothing waits for them; see the file).
  const rollups = startRollups({ store, log }, { maxSensors: config.limits.sensorsPerDevice, signal });
  // The release confirms itself once its readiness has held for the settle period (upgrade gate).
  const confirmation = startConfirmation({
    dataDir: config.storage.dataDir,
    identity,
    readiness,
    onWriteFailed: (error) =>
      log.warn("release.confirmation_failed", { error, retry: "after readiness settles again" }),
  }, { signal });

  const finished = (async () => {
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    log.info("runtime.stopping", {});
    serving = false;
    intake.abort();
    await Promise.all([
      ...servers.map((server) => server.close(HTTP_DRAIN_MS)),
      mqtt?.finished,
      confirmation.finished,
    ]);
    await detection.stop();
    await forwarding.stop();
    await auditVerification.finished;
    await rollups.finished;
    await store.close();
    log.info("runtime.stopped", {});
  })();
  return { finished };
}
