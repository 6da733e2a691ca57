import type { Client, InStatement } from "@libsql/client";
import type { DetectionConfig } from "../config/config.ts";
import {
  deviceKnown,
  type DeviceStateName,
  quarantinedDevices,
  readDevice,
  setDeviceState,
  upsertDeviceStatements,
} from "../store/device_rows.ts";
import { maxEventId, readEvent } from "../store/events_table.ts";
import { versionsNamed } from "../store/models_table.ts";
import { countDeviceReadings, deviceReadingTimes } from "../store/readings.ts";
import { scoresBefore } from "../store/scores.ts";
import { ADAPTIVE_TERMS } from "./baseline_features.ts";
import { type BaselineState, copyBaseline, initialBaseline } from "./baseline_tracker.ts";
import { CALIBRATED_PREFIX, MAX_CALIBRATION_READINGS } from "./calibration.ts";
import {
  type CalibrationClock,
  copyCalibrationClock,
  newCalibrationClock,
  tickCalibrationClock,
} from "./calibration_clock.ts";
import { Debouncer, type DebounceSnapshot } from "./debouncer.ts";
import type { OpenEpisode } from "./episodes.ts";
import type { LoadedModel } from "./inference.ts";

/** Sensors of its model that a device's latest reading lacked (/v1/devices shows it degraded). */
export interface MissingSensors {
  /** Each with the reading time of the first reading without it. */
  sensors: { sensor: string; sinceTs: number }[];
  /** Whether its readings are still scored, on the other sensors (a calibrated model). */
  scoredOnTheRest: boolean;
}

export interface DeviceState {
  device: string;
  state: DeviceStateName;
  /** Readings with a higher id count toward calibration. */
  calibrationAfterId: number;
  calibrationCount: number;
  /** Reading time the calibration has covered (with `calibration.seconds` only). */
  calibrationClock: CalibrationClock | null;
  readings: number;
  lastReadingId: number;
  anomaly: boolean;
  episode: OpenEpisode | null;
  debouncer: Debouncer | null;
  /**
   * What the debouncer was fed and for which model, as stored (`baseline_json`), until the
   * debouncer is rebuilt after a restart: a calibrated model's debouncer does not count
   * `score > threshold` (episode_evidence.ts), and a model that changed ends the episode.
   */
  storedDebounce: StoredDebounce | null;
  window: number[][];
  windowModelId: number | null;
  /** The model's sensors the latest reading lacked, and since when; null when it had them all. */
  missing: MissingSensors | null;
  /** The adaptive baseline of a calibrated model (`baselineModelId`); null for other models. */
  baseline: BaselineState | null;
  baselineModelId: number | null;
}

/**
 * What `devices.baseline_json` holds: the adaptive baseline with the id of its model (calibrated
 * models only), and the sensors the device's latest reading lacked (`missing`, which
 * `GET /v1/devices` reads with json_extract). Older versions read the baseline and ignore the rest.
 */
type StoredDetectorState = Partial<BaselineState> & {
  modelId?: number;
  missing?: MissingSensors;
  debounce?: StoredDebounce;
};

/** A debouncer's inputs with the model whose scores fed it. */
export type StoredDebounce = DebounceSnapshot & { modelId: number };

function storedDetectorState(state: DeviceState): string | null {
  // A device not scored since a restart keeps what was stored.
  const debounce = state.debouncer && state.windowModelId !== null
    ? { ...state.debouncer.snapshot(), modelId: state.windowModelId }
    : state.storedDebounce;
  const stored: StoredDetectorState = {
    ...(state.baseline ? { modelId: state.baselineModelId!, ...state.baseline } : {}),
    ...(debounce ? { debounce } : {}),
    ...(state.missing ? { missing: state.missing } : {}),
  };
  return Object.keys(stored).length > 0 ? JSON.stringify(stored) : null;
}

/**
 * Per-device scoring state, persisted in `devices` and rebuilt from the store after a restart.
 * What is kept in memory is always the committed state: a scoring pass changes drafts (copies)
 * and adopts them only after its transaction has committed, so a failed pass changes nothing.
 */
export class DeviceStates {
  readonly #client: Client;
  readonly #config: DetectionConfig;
  readonly #committed = new Map<string, DeviceState>();
  #lastEventId: number | null = null;

  constructor(client: Client, config: DetectionConfig) {
    this.#client = client;
    this.#config = config;
  }

  /**
   * A copy of the device's committed state. A device the store has no state for starts at
   * `readingId` in `initial`: calibrating (its calibration counts from there), or active when a
   * model already scores it (a global one).
   */
  async draft(device: string, readingId: number, initial: DeviceStateName = "calibrating"): Promise<DeviceState> {
    return copy(this.#committed.get(device) ?? await this.#load(device, readingId, initial));
  }

  /** Keeps drafts whose changes have committed. */
  adopt(drafts: Iterable<DeviceState>): void {
    for (const state of drafts) this.#committed.set(state.device, state);
  }

  /** Upserts that store the drafts. */
  statements(drafts: Iterable<DeviceState>): InStatement[] {
    const rows = [...drafts].map((state) => ({
      device: state.device,
      state: state.state,
      calibrationAfterId: state.calibrationAfterId,
      readings: state.readings,
      lastReadingId: state.lastReadingId,
      anomaly: state.anomaly,
      openEventId: state.episode?.id ?? null,
      baselineJson: storedDetectorState(state),
    }));
    return upsertDeviceStatements(rows, Date.now());
  }

  /**
   * The draft's window for this model, rebuilt from its stored readings when the model changed
   * (or after a restart), together with its debouncer.
   */
  async window(state: DeviceState, model: LoadedModel, beforeId: number): Promise<number[][]> {
    if (state.windowModelId === model.id) return state.window;
    const { features, window, threshold } = model.manifest;
    const history = Math.max(window - 1, this.#config.debounce.ofLast + this.#config.debounce.clearAfter);
    const rows = await scoresBefore(this.#client, state.device, beforeId, history);
    // As scoring keeps it: a calibrated model's window takes readings with a sensor missing (NaN),
    // an uploaded model's only complete readings.
    const present = (values: Record<string, unknown>) => (sensor: string) => typeof values[sensor] === "number";
    const kept = rows.map((row) => JSON.parse(row.valuesJson) as Record<string, number>)
      .filter((values) => model.manifest.baseline ? features.some(present(values)) : features.every(present(values)))
      .map((values) => features.map((sensor) => present(values)(sensor) ? values[sensor] : NaN));
    state.window = kept.slice(-(window - 1) || kept.length);
    if (window === 1) state.window = [];
    // The debouncer resumes from the readings this model scored since the baseline last moved at
    // once (a rebaseline or an operator's word settled it then); a new model starts afresh.
    const previous = scoredBefore(state);
    const modelChanged = previous !== null && previous !== model.id;
    state.windowModelId = model.id;
    const settledAfter = state.baselineModelId === model.id ? state.baseline?.settledAfterId ?? 0 : 0;
    const params = model.manifest.baseline;
    // The debouncer resumes from what it was fed, when that was stored for this model.
    const stored = !modelChanged && state.storedDebounce?.modelId === model.id ? state.storedDebounce : null;
    const recent = modelChanged
      ? []
      : rows.flatMap((row) => row.score === null || row.id <= settledAfter ? [] : [row.score > threshold]);
    state.debouncer = new Debouncer(this.#config.debounce, { anomaly: state.anomaly, ...(stored ?? { recent }) });
    state.storedDebounce = null;
    if (!params) state.baseline = null;
    else if (state.baselineModelId !== model.id || state.baseline?.center.length !== ADAPTIVE_TERMS * features.length) {
      state.baseline = initialBaseline(params, features.length);
    }
    state.baselineModelId = params ? model.id : null;
    return state.window;
  }

  /** The highest event id committed so far (a pass numbers its new events after it). */
  async lastEventId(): Promise<number> {
    this.#lastEventId ??= await maxEventId(this.#client);
    return this.#lastEventId;
  }

  adoptLastEventId(id: number): void {
    this.#lastEventId = id;
  }

  /**
   * The version of the device's next calibrated model: `cal-<n>`, one past the highest stored or in
   * its model history (old bundles are deleted, so counting them would repeat a version).
   */
  async nextCalibrationVersion(device: string): Promise<string> {
    let highest = 0;
    for (const version of await versionsNamed(this.#client, `${CALIBRATED_PREFIX}${device}`, device)) {
      const n = /^cal-(\d+)$/.exec(version);
      if (n) highest = Math.max(highest, Number(n[1]));
    }
    return `cal-${highest + 1}`;
  }

  /** Whether the store knows the device (a `devices` row or a reading). */
  known(device: string): Promise<boolean> {
    return deviceKnown(this.#client, device);
  }

  quarantined(): Promise<string[]> {
    return quarantinedDevices(this.#client);
  }

  /** Calibration starts again with the readings after `afterId`. */
  async restartCalibration(device: string, afterId: number): Promise<void> {
    await this.#setState(device, "calibrating", afterId);
  }

  /** The device's state row is gone (the store forgot it): its in-memory copy goes too. */
  forget(device: string): void {
    this.#committed.delete(device);
  }

  /** Takes the device out of scoring and calibration (until `restartCalibration`). */
  async quarantine(device: string, afterId: number): Promise<void> {
    await this.#setState(device, "quarantined", afterId);
  }

  async #setState(device: string, state: DeviceStateName, afterId: number): Promise<void> {
    await setDeviceState(this.#client, device, state, { calibrationAfterId: afterId, nowMs: Date.now() });
    // Loaded again from the store on next use, with a fresh window and calibration count.
    this.#committed.delete(device);
  }

  async #load(device: string, readingId: number, initial: DeviceStateName): Promise<DeviceState> {
    const row = await readDevice(this.#client, device);
    const state: DeviceState = {
      device,
      state: row ? row.state : initial,
      calibrationAfterId: row ? row.calibrationAfterId : readingId - 1,
      calibrationCount: 0,
      calibrationClock: null,
      readings: row ? row.readings : 0,
      lastReadingId: row ? row.lastReadingId : 0,
      anomaly: row ? row.anomaly : false,
      episode: null,
      debouncer: null,
      storedDebounce: null,
      window: [],
      missing: null,
      windowModelId: null,
      baseline: null,
      baselineModelId: null,
    };
    if (!row) return state;
    if (row.baselineJson) {
      const { modelId, missing, debounce, ...baseline } = parseStoredState(row.baselineJson);
      const wellFormed = Array.isArray(debounce?.recent) && Number.isInteger(debounce?.quietRun) &&
        Number.isInteger(debounce?.modelId);
      state.storedDebounce = wellFormed ? debounce! : null;
      // A fault's terms that do not have their shape (a damaged row) are dropped, not read.
      for (const key of ["carry", "lastFault"] as const) {
        if (baseline[key] && !faultShaped(baseline[key])) baseline[key] = null;
      }
      if (baseline.previousFrom && !numbers(baseline.previousFrom)) baseline.previousFrom = null;
      for (const key of ["steady", "faded", "gone"] as const) {
        if (baseline[key] && !periodShaped(baseline[key])) baseline[key] = null;
      }
      if (modelId !== undefined && Array.isArray(baseline.center) && Array.isArray(baseline.scoring)) {
        state.baseline = baseline as BaselineState;
        state.baselineModelId = modelId;
      }
      state.missing = Array.isArray(missing?.sensors) ? missing! : null;
    }
    if (state.state === "calibrating") {
      const ids = { afterId: state.calibrationAfterId, beforeId: readingId };
      if (this.#config.calibration.seconds === undefined) {
        state.calibrationCount = (await countDeviceReadings(this.#client, device, ids)).count;
      } else {
        const times = await deviceReadingTimes(this.#client, device, ids, MAX_CALIBRATION_READINGS);
        state.calibrationCount = times.length;
        if (times.length > 0) state.calibrationClock = newCalibrationClock();
        for (const ts of times) tickCalibrationClock(state.calibrationClock!, ts);
      }
    }
    if (row.openEventId !== null) {
      const event = await readEvent(this.#client, row.openEventId);
      if (event) {
        state.episode = {
          id: event.id,
          startTs: event.startTs,
          peakScore: event.peakScore,
          topSensors: event.topSensors,
          readings: event.readings,
          model: event.model,
        };
      }
    }
    // Only states that match the store are kept; a new device is kept once its first pass commits.
    this.#committed.set(device, state);
    return state;
  }
}

/**
 * What a device row's `baseline_json` holds; nothing when it is not a JSON object (a damaged row:
 * the device then starts from its model's calibration instead of failing every pass that loads it).
 */
function parseStoredState(json: string): StoredDetectorState {
  try {
    const parsed = JSON.parse(json);
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

/**
 * Whether a stored fault (`carry`, `lastFault`) has its shape. A string where a number belongs
 * would be concatenated to by the next step of an episode, a negative reading time would hold an
 * episode for good.
 */
function faultShaped(fault: unknown): boolean {
  if (typeof fault !== "object" || fault === null) return false;
  const { peaks, carriers, seconds, from } = fault as Record<string, unknown>;
  return numbers(peaks) && numbers(carriers) &&
    (seconds === undefined || (typeof seconds === "number" && Number.isFinite(seconds) && seconds >= 0)) &&
    (from === undefined || numbers(from));
}

/** Whether a stored period of an episode (`steady`, `faded`, `gone`) has its shape. */
function periodShaped(period: unknown): boolean {
  if (typeof period !== "object" || period === null) return false;
  const { ref, sinceTs, sum, count } = period as Record<string, unknown>;
  return numbers(ref) && numbers(sum) && Number.isFinite(sinceTs) && Number.isFinite(count);
}

function numbers(value: unknown): boolean {
  return Array.isArray(value) && value.every((item) => typeof item === "number");
}

/** The model that scored the device last, in this process or (after a restart) as stored; null if none. */
export function scoredBefore(state: DeviceState): number | null {
  return state.windowModelId ?? state.storedDebounce?.modelId ?? null;
}

function copy(state: DeviceState): DeviceState {
  return {
    ...state,
    episode: state.episode && { ...state.episode, topSensors: [...state.episode.topSensors] },
    debouncer: state.debouncer?.clone() ?? null,
    storedDebounce: state.storedDebounce && { ...state.storedDebounce, recent: [...state.storedDebounce.recent] },
    calibrationClock: state.calibrationClock && copyCalibrationClock(state.calibrationClock),
    window: [...state.window],
    missing: state.missing && { ...state.missing, sensors: [...state.missing.sensors] },
    baseline: state.baseline && copyBaseline(state.baseline),
  };
}
