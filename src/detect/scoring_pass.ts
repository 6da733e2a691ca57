/**
 * One scoring pass over readings behind the score cursor, as a plan: it works on drafts of the
 * device states and returns the statements to commit (scores, flags, episodes, alerts, outbox
 * items, device states, a calibrated model, the cursor) with an `adopt` that keeps the in-memory
 * changes once they have committed. A pass that fails anywhere before that changes nothing.
 *
 * Per reading: a quarantined device's reading is flagged; a device without a model collects
 * calibration readings (the pass ends at a calibration, so the next pass scores with the new
 * model); a deactivated or unloadable model leaves its devices' readings flagged while every other
 * device is scored; a model that fails at run time is deactivated for its scope only.
 */
import type { Client, InStatement, ResultSet } from "@libsql/client";
import type { DetectionConfig } from "../config/config.ts";
import { limitKey } from "../limit_exceeded_error.ts";
import type { Logger } from "../observability/log.ts";
import { cursorStatement } from "../store/cursors.ts";
import type { Outbox } from "../store/outbox.ts";
import { deviceReadingsBetween } from "../store/readings.ts";
import { type ReadingScore, scoreStatements } from "../store/scores.ts";
import { scoreWindows, type WindowScore } from "./batch_scoring.ts";
import { calibrate, calibrationReadings, selectSensors } from "./calibration.ts";
import type { DeviceState, DeviceStates } from "./device_states.ts";
import { type AlertMessage, episodeStatements, type OpenEpisode, topSensors } from "./episodes.ts";
import { type Inference, type LoadedModel, ModelRunError } from "./inference.ts";
import { type ModelRegistry, ModelUnavailableError, type StagedActivation } from "./registry.ts";
import type { ScorerObserver, UnscoredReason } from "./scorer_observer.ts";
import type { WorkMarkers } from "./work_markers.ts";

export const SCORE_CURSOR = "score";

export interface PassDeps {
  client: Client;
  config: DetectionConfig;
  registry: ModelRegistry;
  inference: Inference;
  outbox: Outbox | null;
  log: Logger;
  observer: ScorerObserver | null;
  devices: DeviceStates;
  markers: WorkMarkers;
  /** `spec.limits.sensorsPerDevice`. */
  maxSensors: number;
}

export interface PassRow {
  id: number;
  device: string;
  ts: number;
  valuesJson: string;
}

export interface PlannedPass {
  /** The last reading the pass covers (it may stop before the last row, at a calibration). */
  lastId: number;
  statements: InStatement[];
  scored: number;
  alerts: AlertMessage[];
  /** Keeps the pass's changes in memory and reports them; call once `statements` have committed. */
  adopt(results: ResultSet[]): void;
}

interface Pending {
  id: number;
  device: DeviceState;
  ts: number;
  model: LoadedModel;
  window: number[][];
}

export async function planPass(deps: PassDeps, rows: readonly PassRow[]): Promise<PlannedPass> {
  const { registry, devices } = deps;
  const drafts = new Map<string, DeviceState>();
  const results = new Map<number, ReadingScore>();
  const unscored = new Map<UnscoredReason, number>();
  const leaveUnscored = (id: number, reason: UnscoredReason, flags: string) => {
    results.set(id, { score: null, anomaly: null, flags: flags.slice(0, 240) });
    unscored.set(reason, (unscored.get(reason) ?? 0) + 1);
  };
  const pending: Pending[] = [];
  let calibration: StagedActivation | null = null;
  let lastId = rows[0].id;
  for (const row of rows) {
    lastId = row.id;
    let state = drafts.get(row.device);
    if (!state) drafts.set(row.device, state = await devices.draft(row.device, row.id));
    state.readings++;
    state.lastReadingId = row.id;
    if (state.state === "quarantined") {
      leaveUnscored(row.id, "device_quarantined", "device quarantined");
      continue;
    }
    const modelId = registry.modelIdFor(state.device);
    if (modelId === undefined) {
      calibration = await collectCalibration(deps, state, row.id);
      if (calibration) break;
      continue;
    }
    const deactivation = registry.deactivationFor(state.device);
    if (deactivation) {
      leaveUnscored(row.id, "model_deactivated", `model deactivated: ${deactivation.reason}`);
      continue;
    }
    let model: LoadedModel;
    try {
      model = await registry.load(modelId);
    } catch (error) {
      if (!(error instanceof ModelUnavailableError)) throw error;
      leaveUnscored(row.id, "model_unavailable", error.message);
      continue;
    }
    const values = JSON.parse(row.valuesJson) as Record<string, number>;
    const missing = model.manifest.features.filter((sensor) => typeof values[sensor] !== "number");
    if (missing.length > 0) {
      results.set(row.id, { score: null, anomaly: null, flags: `missing: ${missing.join(", ")}` });
      continue;
    }
    const window = await devices.window(state, model, row.id);
    window.push(model.manifest.features.map((sensor) => values[sensor]));
    if (window.length > model.manifest.window) window.shift();
    pending.push({ id: row.id, device: state, ts: row.ts, model, window: [...window] });
  }

  const { scored, failed } = await infer(deps, pending);
  const statements: InStatement[] = [];
  const alerts: AlertMessage[] = [];
  const episodes: ("start" | "end")[] = [];
  let eventId: number | null = null;
  let scoredCount = 0;
  for (const item of pending) {
    const reason = failed.get(item.model);
    if (reason) {
      leaveUnscored(item.id, "model_failed", `model deactivated: ${reason}`);
      continue;
    }
    const { score, contributions } = scored.get(item.id)!;
    const state = item.device;
    const step = state.debouncer!.push(score > item.model.manifest.threshold);
    if (step.started) {
      eventId ??= await devices.lastEventId();
      const info = registry.info(item.model.id);
      state.episode = {
        id: ++eventId,
        startTs: item.ts,
        peakScore: score,
        topSensors: topSensors(item.model.manifest.features, contributions),
        readings: 0,
        model: info ? `${info.name}@${info.version}` : String(item.model.id),
      };
    }
    const episode: OpenEpisode | null = state.episode;
    if (episode && (step.anomaly || step.ended)) {
      if (step.anomaly) episode.readings++;
      if (score > episode.peakScore) {
        episode.peakScore = score;
        const top = topSensors(item.model.manifest.features, contributions);
        if (top.length > 0) episode.topSensors = top;
      }
    }
    if (episode && (step.started || step.ended)) {
      const change = step.started ? "start" : "end";
      const recorded = episodeStatements(change, state.device, episode, item.ts, deps.outbox);
      statements.push(...recorded.statements);
      alerts.push(recorded.alert);
      episodes.push(change);
      if (step.ended) state.episode = null;
    }
    state.anomaly = step.anomaly;
    results.set(item.id, { score, anomaly: step.anomaly, flags: null });
    scoredCount++;
  }

  statements.unshift(...scoreStatements(results));
  const calibrationAt = statements.length;
  if (calibration) statements.push(...calibration.statements);
  statements.push(...devices.statements(drafts.values()));
  statements.push(cursorStatement(SCORE_CURSOR, lastId));
  return {
    lastId,
    statements,
    scored: scoredCount,
    alerts,
    adopt(committed) {
      devices.adopt(drafts.values());
      if (eventId !== null) devices.adoptLastEventId(eventId);
      calibration?.adopt(committed[calibrationAt]);
      for (const change of episodes) deps.observer?.episode(change);
      for (const [reason, count] of unscored) deps.observer?.unscored?.(reason, count);
    },
  };
}

/**
 * Runs every model of the pass concurrently (waiting for them one by one would queue devices
 * behind the event loop), each behind a crash marker. A model that fails is deactivated for its
 * scope; the others' scores are kept.
 */
async function infer(
  deps: PassDeps,
  pending: Pending[],
): Promise<{ scored: Map<number, WindowScore>; failed: Map<LoadedModel, string> }> {
  const byModel = new Map<LoadedModel, Pending[]>();
  for (const item of pending) (byModel.get(item.model) ?? byModel.set(item.model, []).get(item.model)!).push(item);
  const scored = new Map<number, WindowScore>();
  const failed = new Map<LoadedModel, string>();
  await Promise.all([...byModel].map(async ([model, items]) => {
    const done = deps.markers.begin({
      kind: "inference",
      modelId: model.id,
      rows: items.length,
      startedAt: new Date().toISOString(),
    });
    try {
      const windows = items.map((item) => item.window);
      const results = await scoreWindows(deps.inference, model, windows, deps.config.batchSize);
      items.forEach((item, i) => scored.set(item.id, results[i]));
    } catch (error) {
      if (!(error instanceof ModelRunError)) throw error;
      failed.set(model, error.message);
      deps.registry.deactivate(model.id, error.message);
      deps.observer?.modelDeactivated?.(error.failure);
    } finally {
      done();
    }
  }));
  return { scored, failed };
}

/**
 * Counts a calibration reading; at the last one, fits the device's model on its most frequent
 * sensors (at most `maxSensors`), load-tests it on the calibration readings and stages it. A
 * calibration that fails starts over with the next readings.
 */
async function collectCalibration(deps: PassDeps, state: DeviceState, id: number): Promise<StagedActivation | null> {
  const { config, log } = deps;
  state.calibrationCount++;
  if (state.calibrationCount < config.calibration.readings) return null;
  const rows = await deviceReadingsBetween(
    deps.client,
    state.device,
    { afterId: state.calibrationAfterId, toId: id },
    config.calibration.readings,
  );
  const done = deps.markers.begin({
    kind: "calibration",
    device: state.device,
    afterId: state.calibrationAfterId,
    readingId: id,
    readings: rows.length,
    startedAt: new Date().toISOString(),
  });
  const started = performance.now();
  try {
    const selection = selectSensors(rows.map((row) => row.valuesJson), deps.maxSensors);
    if (selection.overLimit.length > 0 || selection.incomplete.length > 0) {
      log.warn("detect.calibration_sensors_left_out", {
        device: state.device,
        kept: selection.sensors.length,
        overLimit: { count: selection.overLimit.length, first: selection.overLimit.slice(0, 20) },
        notInEveryReading: { count: selection.incomplete.length, first: selection.incomplete.slice(0, 20) },
        limit: limitKey("sensorsPerDevice"),
      });
    }
    if (selection.overLimit.length > 0) deps.observer?.limitReached?.(limitKey("sensorsPerDevice"));
    // Each step below holds the event loop for up to a few hundred ms at the bound: let requests in between.
    await nextTurn();
    const readings = calibrationReadings(rows, selection.sensors);
    const version = `cal-${await deps.devices.calibrations(state.device) + 1}`;
    await nextTurn();
    const bundle = calibrate(state.device, readings, config.calibration, version);
    await nextTurn();
    const samples = readings.map((reading) => selection.sensors.map((sensor) => reading.values[sensor]));
    const staged = await deps.registry.stage(bundle, state.device, "calibrated", { samples });
    state.state = "active";
    const ms = performance.now() - started;
    return {
      statements: staged.statements,
      adopt(firstResult) {
        const model = staged.adopt(firstResult);
        deps.observer?.calibrated(state.device, ms);
        log.info("detect.calibrated", {
          device: state.device,
          readings: rows.length,
          sensors: selection.sensors.length,
          ms: Math.round(ms),
        });
        return model;
      },
    };
  } catch (error) {
    // Start over with the next readings rather than stall the device.
    log.error("detect.calibration_failed", { device: state.device, error });
    state.calibrationAfterId = id;
    state.calibrationCount = 0;
    return null;
  } finally {
    done();
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
