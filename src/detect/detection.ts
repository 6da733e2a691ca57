import type { Client } from "@libsql/client";
import { join } from "node:path";
import type { ReadinessCheck } from "../api/health.ts";
import type { Config, LimitsConfig } from "../config/config.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Outbox } from "../store/outbox.ts";
import { latestReadingValues } from "../store/readings.ts";
import type { Store } from "../store/store.ts";
import type { Egress } from "../egress/egress.ts";
import type { AlertPublisher } from "./alert_publisher.ts";
import { detectionObserver } from "./detect_metrics.ts";
import { Inference } from "./inference.ts";
import { GLOBAL_SCOPE, ModelRegistry } from "./registry.ts";
import { Scorer } from "./scorer.ts";
import { BundleSealer } from "./bundle_seal.ts";

export interface DetectionHealth {
  enabled: boolean;
  /** Scoring passes that failed in a row (retried with backoff). */
  failures: number;
  quarantinedDevices: number;
  deactivatedModels: number;
  unavailableModels: number;
}

export interface Detection {
  readonly scorer: Scorer;
  readonly registry: ModelRegistry;
  readonly calibrationReadings: number;
  /** The bounds the detection routes enforce. */
  readonly limits: Pick<LimitsConfig, "modelUploadBytes" | "nameLength" | "modelNodes" | "modelTensorBytes"> & {
    batchSize: number;
  };
  /** Rows (one value per feature) of the scope's latest readings that carry every feature: load-test input. */
  samples(scope: string, features: readonly string[]): Promise<number[][]>;
  health(): DetectionHealth;
  /** The `detection` check of /readyz: never fails readiness, degraded while anything is not scored. */
  readiness(): ReadinessCheck;
  stop(): Promise<void>;
}

const SAMPLE_READINGS = 256;

/** On-device detection: registry → scorer (after every commit) → episodes, alerts, outbox. */
export async function startDetection(
  config: Config,
  deps: { store: Store; outbox: Outbox; log: Logger; metrics: Metrics; egress: Egress; onQueued: () => void },
): Promise<Detection> {
  const { store, log, metrics } = deps;
  const inference = new Inference(config.detection.threads);
  const registry = new ModelRegistry(store.client, inference, {
    modelsDir: join(config.storage.dataDir, "models"),
    log,
    sealer: await BundleSealer.forStore(config.storage.encryptionKey),
    now: () => store.now(),
  });
  await registry.init();
  let quarantined = () => 0;
  const scorer = new Scorer(store.client, config.detection, {
    registry,
    inference,
    outbox: deps.outbox,
    log,
    observer: detectionObserver(metrics, () => quarantined(), { maxDevices: config.limits.devices }),
    stateDir: join(config.storage.dataDir, "detect"),
    maxSensors: config.limits.sensorsPerDevice,
  });
  quarantined = () => scorer.quarantinedDevices;
  // mqtt.js is loaded only when the manifest has a broker (about 7 MB resident otherwise spent).
  const alerts: AlertPublisher | null = config.mqtt
    ? new (await import("./alert_publisher.ts")).AlertPublisher(store.client, config.mqtt, {
      topic: config.detection.alertTopic,
      log,
      egress: deps.egress,
      onPublished: () => metrics.alertsPublished.inc(),
    })
    : null;
  scorer.onAlerts = () => {
    void alerts?.drain();
    deps.onQueued();
  };
  store.onDevicesForgotten((devices) => {
    scorer.forgetDevices(devices).catch((error) => log.warn("detect.forget_devices_failed", { error }));
  });
  if (config.detection.enabled) {
    // The first pass deals with work a previous process died during (scorer_recovery.ts).
    store.onCommit((_inserted, committed) => {
      scorer.noteCommit(committed);
      void scorer.catchUp();
    });
    void scorer.catchUp();
  }
  log.info("detect.started", {
    enabled: config.detection.enabled,
    alertTopic: alerts ? config.detection.alertTopic : null,
  });
  const health = (): DetectionHealth => {
    const models = registry.problems();
    return {
      enabled: config.detection.enabled,
      failures: scorer.consecutiveFailures,
      quarantinedDevices: scorer.quarantinedDevices,
      deactivatedModels: models.deactivated,
      unavailableModels: models.unavailable,
    };
  };
  return {
    scorer,
    registry,
    calibrationReadings: config.detection.calibration.readings,
    limits: {
      modelUploadBytes: config.limits.modelUploadBytes,
      nameLength: config.limits.nameLength,
      modelNodes: config.limits.modelNodes,
      modelTensorBytes: config.limits.modelTensorBytes,
      batchSize: config.detection.batchSize,
    },
    samples: (scope, features) => recentRows(store.client, scope, features),
    health,
    readiness: () => detectionReadiness(health()),
    async stop() {
      // Score what was committed just before the stop, but for a bounded time: a backlog (say
      // after an ingest flood) is scored after the restart, behind the cursor, instead of
      // holding the shutdown past its grace.
      if (config.detection.enabled) await settledWithin(scorer.catchUp(), STOP_CATCH_UP_MS);
      await scorer.stop();
      // A deactivation's history row is written just after it; the store closes after this.
      await registry.historyWritten();
      await alerts?.close();
      await inference.release();
    },
  };
}

/** How long a stop may spend scoring what is already committed. */
const STOP_CATCH_UP_MS = 2_000;

async function settledWithin(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([work.catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

function detectionReadiness(health: DetectionHealth): ReadinessCheck {
  if (!health.enabled) return { name: "detection", ok: true, detail: "disabled" };
  const problems = [
    health.failures > 0 ? `scoring failing (${health.failures} in a row), retrying` : "",
    health.quarantinedDevices > 0 ? `${health.quarantinedDevices} device(s) quarantined: see /v1/devices` : "",
    health.deactivatedModels > 0 ? `${health.deactivatedModels} model(s) deactivated after run-time failures` : "",
    health.unavailableModels > 0 ? `${health.unavailableModels} model(s) failed to load, retrying` : "",
  ].filter(Boolean);
  return { name: "detection", ok: true, degraded: problems.length > 0, detail: problems.join("; ") || "scoring" };
}

async function recentRows(client: Client, scope: string, features: readonly string[]): Promise<number[][]> {
  const latest = await latestReadingValues(client, scope === GLOBAL_SCOPE ? null : scope, SAMPLE_READINGS);
  const rows: number[][] = [];
  for (const valuesJson of latest) {
    const values = JSON.parse(valuesJson) as Record<string, unknown>;
    if (features.every((feature) => typeof values[feature] === "number")) {
      rows.push(features.map((feature) => values[feature] as number));
    }
  }
  return rows;
}
