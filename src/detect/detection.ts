import { join } from "node:path";
import type { Config } from "../config/config.ts";
import type { Outbox } from "../forward/outbox.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Store } from "../store/store.ts";
import { AlertPublisher } from "./alert_publisher.ts";
import { Inference } from "./inference.ts";
import { ModelRegistry } from "./registry.ts";
import { Scorer } from "./scorer.ts";

export interface Detection {
  readonly scorer: Scorer;
  readonly registry: ModelRegistry;
  readonly calibrationReadings: number;
  stop(): Promise<void>;
}

/** On-device detection: registry → scorer (after every commit) → episodes, alerts, outbox. */
export async function startDetection(
  config: Config,
  deps: { store: Store; outbox: Outbox; log: Logger; metrics: Metrics; onQueued: () => void },
): Promise<Detection> {
  const { store, log, metrics } = deps;
  const inference = new Inference(config.detection.threads);
  const registry = new ModelRegistry(store.client, inference, {
    modelsDir: join(config.storage.dataDir, "models"),
    log,
  });
  await registry.init();
  const scorer = new Scorer(store.client, config.detection, {
    registry,
    inference,
    outbox: deps.outbox,
    log,
    observer: {
      scored: (count, latencies) => {
        metrics.scored.inc(count);
        for (const ms of latencies) metrics.commitToFlag.observe(ms / 1000);
      },
      inferenceFailed: () => metrics.inferenceErrors.inc(),
      episode: (change) => metrics.episodes.inc({ change }),
      calibrated: (_device, ms) => metrics.calibrationSeconds.observe(ms / 1000),
    },
  });
  const alerts = config.mqtt
    ? new AlertPublisher(store.client, config.mqtt, {
      topic: config.detection.alertTopic,
      log,
      onPublished: () => metrics.alertsPublished.inc(),
    })
    : null;
  scorer.onAlerts = () => {
    void alerts?.drain();
    deps.onQueued();
  };
  if (config.detection.enabled) {
    store.onCommit(() => {
      scorer.noteCommit();
      void scorer.catchUp();
    });
    void scorer.catchUp();
  }
  log.info("detect.started", {
    enabled: config.detection.enabled,
    alertTopic: alerts ? config.detection.alertTopic : null,
  });
  return {
    scorer,
    registry,
    calibrationReadings: config.detection.calibration.readings,
    async stop() {
      await scorer.catchUp();
      await scorer.stop();
      await alerts?.close();
      await inference.release();
    },
  };
}
