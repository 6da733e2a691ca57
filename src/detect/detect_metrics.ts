import { Counter, Gauge, type Registry } from "../observability/prometheus.ts";
import { limitKey } from "../limit_exceeded_error.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { ScorerObserver } from "./scorer_observer.ts";

/**
 * The scorer's observer: the shared metrics plus detection's own counters, registered on the same
 * registry (unscored readings by reason, model deactivations by cause, device quarantines), and
 * per-device series for at most `maxDevices` devices (`spec.limits.devices`).
 */
export function detectionObserver(
  metrics: Metrics,
  quarantined: () => number,
  options: { maxDevices: number },
): ScorerObserver {
  const registers = [metrics.registry];
  const devices = deviceSeries(metrics.registry, options.maxDevices, () => {
    metrics.limitRefusals.inc({ limit: limitKey("devices") });
  });
  const unscored = new Counter({
    name: "outpost_unscored_readings_total",
    help: "Readings left unscored (flagged), by reason: sensors_missing, device_quarantined, model_deactivated, " +
      "model_unavailable, model_failed, pass_interrupted",
    labelNames: ["reason"] as const,
    registers,
  });
  const deactivations = new Counter({
    name: "outpost_model_deactivations_total",
    help: "Models deactivated for their scope after a run-time failure, by cause " +
      "(failed, timeout, wrong_output, not_finite, process_died)",
    labelNames: ["cause"] as const,
    registers,
  });
  const quarantines = new Counter({
    name: "outpost_device_quarantines_total",
    help: "Devices quarantined because the process died during their work, by the work",
    labelNames: ["work"] as const,
    registers,
  });
  new Gauge({
    name: "outpost_devices_quarantined",
    help: "Devices quarantined now (not scored or calibrated until recalibrated)",
    registers,
    collect() {
      this.set(quarantined());
    },
  });
  return {
    scored: (count, latencies) => {
      metrics.scored.inc(count);
      for (const ms of latencies) metrics.commitToFlag.observe(ms / 1000);
    },
    inferenceFailed: () => metrics.inferenceErrors.inc(),
    episode: (change) => metrics.episodes.inc({ change }),
    calibrated: (_device, ms) => metrics.calibrationSeconds.observe(ms / 1000),
    unscored: (reason, count) => unscored.inc({ reason }, count),
    modelDeactivated: (cause) => deactivations.inc({ cause }),
    quarantined: (work) => quarantines.inc({ work }),
    limitReached: (key) => metrics.limitRefusals.inc({ limit: key }),
    deviceScored: (device, score, anomaly, readingTs) => devices.set(device, score, anomaly, readingTs),
    deviceForgotten: (device) => devices.forget(device),
  };
}

/**
 * `outpost_device_anomaly`, `outpost_device_score` and `outpost_device_last_reading_timestamp_seconds`,
 * labelled by device. Cardinality bound: series exist for at most `maxDevices` devices at once
 * (the store refuses devices beyond `spec.limits.devices` anyway); an update for a further device
 * is dropped and reported through `refused` until a device is forgotten.
 */
function deviceSeries(registry: Registry, maxDevices: number, refused: () => void) {
  const registers = [registry];
  const labelNames = ["device"] as const;
  const anomaly = new Gauge({
    name: "outpost_device_anomaly",
    help: "1 while the device is in an anomaly episode, else 0 (at most spec.limits.devices devices)",
    labelNames,
    registers,
  });
  const score = new Gauge({
    name: "outpost_device_score",
    help: "Score of the device's latest scored reading",
    labelNames,
    registers,
  });
  const lastReading = new Gauge({
    name: "outpost_device_last_reading_timestamp_seconds",
    help: "Reading time of the device's latest scored reading, in seconds since the epoch",
    labelNames,
    registers,
  });
  const tracked = new Set<string>();
  return {
    set(device: string, value: number, isAnomaly: boolean, readingTs: number): void {
      if (!tracked.has(device)) {
        if (tracked.size >= maxDevices) return refused();
        tracked.add(device);
      }
      const labels = { device };
      anomaly.set(labels, isAnomaly ? 1 : 0);
      score.set(labels, value);
      lastReading.set(labels, readingTs / 1000);
    },
    forget(device: string): void {
      if (!tracked.delete(device)) return;
      for (const gauge of [anomaly, score, lastReading]) gauge.remove({ device });
    },
  };
}
