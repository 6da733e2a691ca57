/**
 * One scoring pass over readings behind the score cursor, as a plan: it works on drafts of the
 * device states and returns the statements to commit (scores, flags, episodes, alerts, outbox
 * items, device states, a calibrated model, the cursor) with an `adopt` that keeps the in-memory
 * changes once they have committed. A pass that fails anywhere before that changes nothing.
 *
 * Per reading: a quarantined device's reading is flagged; a device without a model collects
 * calibration readings (the pass ends at a calibration, so the next pass scores with the new
 * model); a deactivated or unloadable model leaves its devices' readings flagged while every other
 * device is scored; a model that fails at run time is deactivated for its scope only. Calibrated
 * devices are scored in rounds against their baselines (see `nextRound`); a recalibrating device
 * keeps being scored by its current model.
 */
import type { Client, InStatement, ResultSet } from "@libsql/client";
import type { DetectionConfig } from "../config/config.ts";
import { nextTurn } from "../event_loop_turn.ts";
import { limitKey } from "../limit_exceeded_error.ts";
import type { Logger } from "../observability/log.ts";
import { cursorStatement } from "../store/cursors.ts";
import { type EventEndReason, eventProgressStatement } from "../store/events_table.ts";
import type { Outbox } from "../store/outbox.ts";
import { deviceReadingsBetween } from "../store/readings.ts";
import { type ReadingScore, scoreStatements } from "../store/scores.ts";
import { missingSensors } from "./baseline_scoring.ts";
import { advanceBaseline, followAccepted, heldWhereMissing, refreshBlock, scoringCentres } from "./baseline_tracker.ts";
import { countsAsAnomalous } from "./episode_evidence.ts";
import {
  calibrate,
  calibrationReadings,
  MAX_CALIBRATION_READINGS,
  MIN_CALIBRATION_READINGS,
  selectSensors,
} from "./calibration.ts";
import { coveredSeconds, newCalibrationClock, tickCalibrationClock } from "./calibration_clock.ts";
import { type DeviceState, type DeviceStates, scoredBefore } from "./device_states.ts";
import { type AlertMessage, episodeStatements, type OpenEpisode, topSensors } from "./episodes.ts";
import type { Inference, LoadedModel } from "./inference.ts";
import { inferPending, type PendingReading, type ReadingResult } from "./pass_inference.ts";
import { CALIBRATED_SOURCE, type ModelRegistry, ModelUnavailableError, type StagedActivation } from "./registry.ts";
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
  /** The name of the model the pass calibrated, if it did (its older bundles can go once it has committed). */
  calibrated: string | null;
  /** Keeps the pass's changes in memory and reports them; call once `statements` have committed. */
  adopt(results: ResultSet[]): void;
}

interface Pending extends PendingReading {
  device: DeviceState;
  ts: number;
  /** The device's reading count at this reading (which refresh block it is in). */
  count: number;
  /** The sensors it is scored without (missing from its window), as the reading's flags. */
  flags: string | null;
}

/** What to log once the pass has committed. */
type LogLine = { event: string; fields: Record<string, unknown>; warn?: boolean };

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
  const statements: InStatement[] = [];
  const alerts: AlertMessage[] = [];
  const episodes: ("start" | "end")[] = [];
  const logLines: LogLine[] = [];
  const latest = new Map<string, { score: number; anomaly: boolean; ts: number }>();
  const progressed = new Set<DeviceState>();
  let eventId: number | null = null;
  let scoredCount = 0;
  const record = (
    change: "start" | "end",
    state: DeviceState,
    episode: OpenEpisode,
    ts: number,
    reason?: EventEndReason,
  ) => {
    const recorded = episodeStatements(change, state.device, episode, ts, deps.outbox, reason);
    statements.push(...recorded.statements);
    alerts.push(recorded.alert);
    episodes.push(change);
    logLines.push(episodeLogLine(change, state.device, episode, reason));
  };
  let calibration: StagedActivation | null = null;
  let lastId = rows[0].id;
  for (const row of rows) {
    let state = drafts.get(row.device);
    lastId = row.id;
    const modelId = registry.modelIdFor(row.device);
    if (!state) {
      state = await devices.draft(row.device, row.id, modelId === undefined ? "calibrating" : "active");
      drafts.set(row.device, state);
    }
    state.readings++;
    state.lastReadingId = row.id;
    if (state.state === "quarantined") {
      leaveUnscored(row.id, "device_quarantined", "device quarantined");
      continue;
    }
    if (modelId === undefined && state.state === "active") {
      // Its model was unassigned (a release restore): it calibrates again, from this reading.
      restartCalibration(state, row.id - 1);
    }
    // A calibrating device collects its calibration readings; until its own model is active the
    // model it has (its current one while it recalibrates, or the global one) keeps scoring it.
    if (state.state === "calibrating") calibration = await collectCalibration(deps, state, row);
    if (modelId === undefined) {
      if (calibration) break;
      continue;
    }
    const deactivation = registry.deactivationFor(state.device);
    if (deactivation) {
      leaveUnscored(row.id, "model_deactivated", `model deactivated: ${deactivation.reason}`);
      if (calibration) break;
      continue;
    }
    let model: LoadedModel;
    try {
      model = await registry.load(modelId);
    } catch (error) {
      if (!(error instanceof ModelUnavailableError)) throw error;
      leaveUnscored(row.id, "model_unavailable", error.message);
      if (calibration) break;
      continue;
    }
    const values = JSON.parse(row.valuesJson) as Record<string, number>;
    const { features, baseline } = model.manifest;
    const absent = features.filter((sensor) => typeof values[sensor] !== "number");
    noteMissingSensors(
      state,
      { absent, values, ts: row.ts },
      baseline !== undefined && absent.length < features.length,
      logLines,
    );
    // A calibrated model scores on the sensors present (below); an uploaded one needs them all.
    if (absent.length === features.length || (absent.length > 0 && !baseline)) {
      leaveUnscored(row.id, "sensors_missing", `missing: ${absent.join(", ")}`);
      if (calibration) break;
      continue;
    }
    const previous = scoredBefore(state);
    if (state.episode && previous !== null && previous !== model.id && baseline) {
      // A recalibration took effect: the episode belonged to the old model's view of normal.
      record("end", state, state.episode, row.ts, "recalibrated");
      state.episode = null;
      state.anomaly = false;
    }
    const window = await devices.window(state, model, row.id);
    // A missing sensor is NaN: the reading is scored without it until it has filled the window again.
    window.push(features.map((sensor) => typeof values[sensor] === "number" ? values[sensor] : NaN));
    if (window.length > model.manifest.window) window.shift();
    const without = baseline ? missingSensors(window).map((j) => features[j]) : [];
    if (without.length === features.length) {
      leaveUnscored(row.id, "sensors_missing", `missing: ${without.join(", ")}`);
      if (calibration) break;
      continue;
    }
    const count = state.readings;
    const flags = without.length > 0 ? `scored without: ${without.join(", ")}` : null;
    pending.push({ id: row.id, device: state, ts: row.ts, model, window: [...window], center: null, count, flags });
    if (calibration) break;
  }

  // Scored in rounds: each round takes every device's readings up to its next refresh of scoring
  // centres (baseline_tracker.ts), or up to a reading that moved its baseline at once, so that a
  // score depends only on the readings before it, never on how they were split into passes.
  const failed = new Map<LoadedModel, string>();
  let waiting = pending;
  while (waiting.length > 0) {
    const { round, later } = nextRound(waiting);
    const inferred = await inferPending(deps, round.filter((item) => !failed.has(item.model)));
    for (const [model, reason] of inferred.failed) failed.set(model, reason);
    const deferred: Pending[] = [];
    const moved = new Set<DeviceState>();
    for (const item of round) {
      if (moved.has(item.device)) {
        deferred.push(item);
        continue;
      }
      const reason = failed.get(item.model);
      if (reason) leaveUnscored(item.id, "model_failed", `model deactivated: ${reason}`);
      else if (await applyScore(item, inferred.scored.get(item.id)!)) moved.add(item.device);
    }
    waiting = deferred.length === 0 ? later : [...deferred, ...later].sort((a, b) => a.id - b.id);
  }

  /** Debounces a scored reading, records episodes, moves the baseline; true when it moved at once. */
  async function applyScore(item: Pending, result: ReadingResult): Promise<boolean> {
    const { score, contributions } = result;
    const state = item.device;
    const { threshold } = item.model.manifest;
    const exceeds = state.baseline && result.features && item.center
      ? countsAsAnomalous(state.baseline, item.model.manifest.baseline!, {
        features: result.features,
        score,
        centres: item.center,
        threshold,
        window: item.window,
        ts: item.ts,
        inEpisode: state.debouncer!.anomaly,
      }, deps.config.baseline)
      : score > threshold;
    const step = state.debouncer!.push(exceeds);
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
      progressed.add(state);
    }
    if (episode && step.started) record("start", state, episode, item.ts);
    let anomaly = step.anomaly;
    if (episode && step.ended) {
      record("end", state, episode, item.ts, "cleared");
      state.episode = null;
    }
    let moved = false;
    if (state.baseline && result.features) {
      // The centres of a sensor missing from the window stay where they are.
      const features = heldWhereMissing(state.baseline, result.features);
      // Just after an operator's accept the centres follow the accepted operating point at once...
      const followed = followAccepted(state.baseline, {
        features,
        readingCount: item.count,
        ts: item.ts,
        inEpisode: anomaly,
      });
      // ...else they adapt, or move to where the plant settled during an episode.
      moved = followed || advanceBaseline(state.baseline, item.model.manifest.baseline!, {
            features,
            score,
            inEpisode: anomaly,
            peakScore: state.episode?.peakScore ?? score,
            ts: item.ts,
          }, deps.config.baseline) !== null;
      if (moved && state.episode) {
        record("end", state, state.episode, item.ts, "rebaselined");
        state.episode = null;
        state.debouncer!.settle();
        state.baseline.settledAfterId = item.id;
        anomaly = false;
      }
    }
    state.anomaly = anomaly;
    results.set(item.id, { score, anomaly, flags: item.flags?.slice(0, 240) ?? null });
    latest.set(state.device, { score, anomaly, ts: item.ts });
    scoredCount++;
    return moved;
  }
  for (const state of progressed) if (state.episode) statements.push(eventProgressStatement(state.episode));

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
    calibrated: calibration?.name ?? null,
    adopt(committed) {
      devices.adopt(drafts.values());
      if (eventId !== null) devices.adoptLastEventId(eventId);
      calibration?.adopt(committed[calibrationAt]);
      for (const change of episodes) deps.observer?.episode(change);
      for (const [reason, count] of unscored) deps.observer?.unscored?.(reason, count);
      for (const [device, last] of latest) deps.observer?.deviceScored?.(device, last.score, last.anomaly, last.ts);
      for (const line of logLines) deps.log[line.warn ? "warn" : "info"](line.event, line.fields);
    },
  };
}

/**
 * The next round of a pass's readings (in id order): every reading of a model without a baseline,
 * and each calibrated device's readings up to its next refresh, with the centres to score them
 * against; `later` are the rest.
 */
function nextRound(waiting: readonly Pending[]): { round: Pending[]; later: Pending[] } {
  const round: Pending[] = [];
  const later: Pending[] = [];
  const blocks = new Map<DeviceState, number>();
  for (const item of waiting) {
    const baseline = item.model.manifest.baseline && item.device.baseline;
    if (!baseline) {
      round.push(item);
      continue;
    }
    const block = refreshBlock(item.count);
    const taken = blocks.get(item.device);
    if (taken === undefined) {
      blocks.set(item.device, block);
      item.center = scoringCentres(baseline, item.count);
    } else if (taken !== block) {
      later.push(item);
      continue;
    }
    item.center = baseline.scoring;
    round.push(item);
  }
  return { round, later };
}

/**
 * Keeps which of the model's sensors the device's latest reading lacks, and since when (reading
 * time), for /v1/devices; logs a sensor that goes missing (a warning) and one that returns.
 */
function noteMissingSensors(
  state: DeviceState,
  reading: { absent: readonly string[]; values: Readonly<Record<string, unknown>>; ts: number },
  scoredOnTheRest: boolean,
  logLines: LogLine[],
): void {
  const { absent, ts } = reading;
  const before = state.missing?.sensors ?? [];
  if (absent.length === 0 && before.length === 0) return;
  const since = new Map(before.map((missing) => [missing.sensor, missing.sinceTs]));
  const gone = absent.filter((sensor) => !since.has(sensor));
  // Back in the reading (not merely left out of a new model).
  const back = before.map((missing) => missing.sensor)
    .filter((sensor) => !absent.includes(sensor) && typeof reading.values[sensor] === "number");
  state.missing = absent.length === 0
    ? null
    : { sensors: absent.map((sensor) => ({ sensor, sinceTs: since.get(sensor) ?? ts })), scoredOnTheRest };
  const device = state.device;
  if (gone.length > 0) {
    const scoring = scoredOnTheRest ? "other_sensors" : "none";
    logLines.push({ event: "detect.sensors_missing", fields: { device, sensors: gone, scoring }, warn: true });
  }
  if (back.length > 0) logLines.push({ event: "detect.sensors_returned", fields: { device, sensors: back } });
}

function episodeLogLine(
  change: "start" | "end",
  device: string,
  episode: OpenEpisode,
  reason: EventEndReason | undefined,
): LogLine {
  const fields = {
    device,
    eventId: episode.id,
    score: round(episode.peakScore),
    sensors: episode.topSensors,
    model: episode.model,
  };
  if (change === "start") return { event: "detect.episode_started", fields, warn: true };
  if (reason === "rebaselined") {
    return { event: "detect.rebaselined", fields: { ...fields, readings: episode.readings } };
  }
  return { event: "detect.episode_ended", fields: { ...fields, reason, readings: episode.readings } };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/**
 * Counts a calibration reading; at the last one, fits the device's model on its most frequent
 * sensors (at most `maxSensors`), load-tests it on the calibration readings and stages it. A
 * calibration that fails starts over with the next readings.
 */
async function collectCalibration(
  deps: PassDeps,
  state: DeviceState,
  reading: PassRow,
): Promise<StagedActivation | null> {
  const { config, log } = deps;
  const id = reading.id;
  state.calibrationCount++;
  const { seconds } = config.calibration;
  if (seconds !== undefined) tickCalibrationClock(state.calibrationClock ??= newCalibrationClock(), reading.ts);
  const bound = seconds === undefined ? config.calibration.readings : MAX_CALIBRATION_READINGS;
  const enoughTime = seconds !== undefined && state.calibrationCount >= MIN_CALIBRATION_READINGS &&
    coveredSeconds(state.calibrationClock!) >= seconds;
  if (state.calibrationCount < bound && !enoughTime) return null;
  const rows = await deviceReadingsBetween(
    deps.client,
    state.device,
    { afterId: state.calibrationAfterId, toId: id },
    bound,
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
    const version = await deps.devices.nextCalibrationVersion(state.device);
    await nextTurn();
    const bundle = calibrate(state.device, readings, config, version);
    await nextTurn();
    const samples = readings.map((reading) => selection.sensors.map((sensor) => reading.values[sensor]));
    const staged = await deps.registry.stage(bundle, state.device, CALIBRATED_SOURCE, { samples });
    state.state = "active";
    state.calibrationClock = null;
    const ms = performance.now() - started;
    return {
      name: staged.name,
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
    restartCalibration(state, id);
    return null;
  } finally {
    done();
  }
}

/** The device calibrates on the readings after `afterId`. */
function restartCalibration(state: DeviceState, afterId: number): void {
  state.state = "calibrating";
  state.calibrationAfterId = afterId;
  state.calibrationCount = 0;
  state.calibrationClock = null;
}
