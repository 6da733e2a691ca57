import { Counter, Gauge } from "prom-client";
import type { Metrics } from "../observability/metrics.ts";
import type { ScorerObserver } from "./scorer_observer.ts";

/**
 * The scorer's observer: the shared metrics plus detection's own counters, registered on the same
 * registry (unscored readings by reason, model deactivations by cause, device quarantines).
 */
export function detectionObserver(metrics: Metrics, quarantined: () => number): ScorerObserver {
  const registers = [metrics.registry];
  const unscored = new Counter({
    name: "outpost_unscored_readings_total",
    help: "Readings left unscored (flagged), by reason: device_quarantined, model_deactivated, " +
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
  };
}
