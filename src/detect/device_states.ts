import type { Client, InStatement } from "@libsql/client";
import type { DetectionConfig } from "../config/config.ts";
import { maxEventId, readEvent } from "../store/events_table.ts";
import { countModelsNamed } from "../store/models_table.ts";
import { Debouncer } from "./debouncer.ts";
import type { OpenEpisode } from "./episodes.ts";
import type { LoadedModel } from "./inference.ts";

export interface DeviceState {
  device: string;
  state: "calibrating" | "active" | "quarantined";
  /** Readings with a higher id count toward calibration. */
  calibrationAfterId: number;
  calibrationCount: number;
  readings: number;
  lastReadingId: number;
  anomaly: boolean;
  episode: OpenEpisode | null;
  debouncer: Debouncer | null;
  window: number[][];
  windowModelId: number | null;
}

const UPSERT =
  `INSERT INTO devices (device, state, calibration_after_id, readings, last_reading_id, anomaly, open_event_id, updated_ms)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (device) DO UPDATE SET state = excluded.state, calibration_after_id = excluded.calibration_after_id,
    readings = excluded.readings, last_reading_id = excluded.last_reading_id, anomaly = excluded.anomaly,
    open_event_id = excluded.open_event_id, updated_ms = excluded.updated_ms`;

const SET_STATE = `INSERT INTO devices (device, state, calibration_after_id, updated_ms) VALUES (?, ?, ?, ?)
  ON CONFLICT (device) DO UPDATE SET state = excluded.state, calibration_after_id = excluded.calibration_after_id,
    updated_ms = excluded.updated_ms`;

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

  /** A copy of the device's committed state (a new device starts calibrating at `readingId`). */
  async draft(device: string, readingId: number): Promise<DeviceState> {
    return copy(this.#committed.get(device) ?? await this.#load(device, readingId));
  }

  /** Keeps drafts whose changes have committed. */
  adopt(drafts: Iterable<DeviceState>): void {
    for (const state of drafts) this.#committed.set(state.device, state);
  }

  /** Upserts that store the drafts. */
  statements(drafts: Iterable<DeviceState>): InStatement[] {
    const now = Date.now();
    return [...drafts].map((state) => ({
      sql: UPSERT,
      args: [
        state.device,
        state.state,
        state.calibrationAfterId,
        state.readings,
        state.lastReadingId,
        state.anomaly ? 1 : 0,
        state.episode?.id ?? null,
        now,
      ],
    }));
  }

  /**
   * The draft's window for this model, rebuilt from its stored readings when the model changed
   * (or after a restart), together with its debouncer.
   */
  async window(state: DeviceState, model: LoadedModel, beforeId: number): Promise<number[][]> {
    if (state.windowModelId === model.id) return state.window;
    const { features, window, threshold } = model.manifest;
    const history = Math.max(window - 1, this.#config.debounce.ofLast + this.#config.debounce.clearAfter);
    const rows = (await this.#client.execute({
      sql: "SELECT values_json, score FROM readings WHERE device = ? AND id < ? ORDER BY id DESC LIMIT ?",
      args: [state.device, beforeId, history],
    })).rows.reverse();
    const complete = rows.map((row) => JSON.parse(String(row.values_json)) as Record<string, number>)
      .filter((values) => features.every((sensor) => typeof values[sensor] === "number"))
      .map((values) => features.map((sensor) => values[sensor]));
    state.window = complete.slice(-(window - 1) || complete.length);
    if (window === 1) state.window = [];
    state.windowModelId = model.id;
    const recent = rows.filter((row) => row.score !== null).map((row) => Number(row.score) > threshold);
    state.debouncer = new Debouncer(this.#config.debounce, { anomaly: state.anomaly, recent });
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

  /** How many models were calibrated for the device so far. */
  calibrations(device: string): Promise<number> {
    return countModelsNamed(this.#client, `pca-t2q/${device}`);
  }

  /** Whether the store knows the device (a `devices` row or a reading). */
  async known(device: string): Promise<boolean> {
    const result = await this.#client.execute({
      sql: `SELECT EXISTS (SELECT 1 FROM devices WHERE device = ?1)
              OR EXISTS (SELECT 1 FROM readings WHERE device = ?1) AS known`,
      args: [device],
    });
    return Number(result.rows[0].known) === 1;
  }

  async quarantined(): Promise<string[]> {
    const result = await this.#client.execute("SELECT device FROM devices WHERE state = 'quarantined'");
    return result.rows.map((row) => String(row.device));
  }

  /** Calibration starts again with the readings after `afterId`. */
  async restartCalibration(device: string, afterId: number): Promise<void> {
    await this.#setState(device, "calibrating", afterId);
  }

  /** Takes the device out of scoring and calibration (until `restartCalibration`). */
  async quarantine(device: string, afterId: number): Promise<void> {
    await this.#setState(device, "quarantined", afterId);
  }

  async #setState(device: string, state: DeviceState["state"], afterId: number): Promise<void> {
    await this.#client.execute({ sql: SET_STATE, args: [device, state, afterId, Date.now()] });
    // Loaded again from the store on next use, with a fresh window and calibration count.
    this.#committed.delete(device);
  }

  async #load(device: string, readingId: number): Promise<DeviceState> {
    const row = (await this.#client.execute({ sql: "SELECT * FROM devices WHERE device = ?", args: [device] })).rows[0];
    const state: DeviceState = {
      device,
      state: row ? (String(row.state) as DeviceState["state"]) : "calibrating",
      calibrationAfterId: row ? Number(row.calibration_after_id) : readingId - 1,
      calibrationCount: 0,
      readings: row ? Number(row.readings) : 0,
      lastReadingId: row ? Number(row.last_reading_id) : 0,
      anomaly: row ? Number(row.anomaly) === 1 : false,
      episode: null,
      debouncer: null,
      window: [],
      windowModelId: null,
    };
    if (!row) return state;
    if (state.state === "calibrating") {
      const counted = await this.#client.execute({
        sql: "SELECT count(*) AS n FROM readings WHERE device = ? AND id > ? AND id < ?",
        args: [device, state.calibrationAfterId, readingId],
      });
      state.calibrationCount = Number(counted.rows[0].n);
    }
    if (row.open_event_id !== null) {
      const event = await readEvent(this.#client, Number(row.open_event_id));
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

function copy(state: DeviceState): DeviceState {
  return {
    ...state,
    episode: state.episode && { ...state.episode, topSensors: [...state.episode.topSensors] },
    debouncer: state.debouncer?.clone() ?? null,
    window: [...state.window],
  };
}
