import type { Client, InStatement } from "@libsql/client";
import type { DetectionConfig } from "../config/config.ts";
import { Debouncer } from "./debouncer.ts";
import type { OpenEpisode } from "./episodes.ts";
import type { LoadedModel } from "./inference.ts";

export interface DeviceState {
  device: string;
  state: "calibrating" | "active";
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
  dirty: boolean;
}

/** Per-device scoring state: kept in memory, persisted in `devices`, rebuilt from the store after a restart. */
export class DeviceStates {
  readonly #client: Client;
  readonly #config: DetectionConfig;
  readonly #states = new Map<string, DeviceState>();
  #nextEventId = 0;

  constructor(client: Client, config: DetectionConfig) {
    this.#client = client;
    this.#config = config;
  }

  async get(device: string, readingId: number): Promise<DeviceState> {
    const known = this.#states.get(device);
    if (known) return known;
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
      dirty: !row,
    };
    if (row && state.state === "calibrating") {
      const counted = await this.#client.execute({
        sql: "SELECT count(*) AS n FROM readings WHERE device = ? AND id > ? AND id < ?",
        args: [device, state.calibrationAfterId, readingId],
      });
      state.calibrationCount = Number(counted.rows[0].n);
    }
    if (row && row.open_event_id !== null) {
      const event =
        (await this.#client.execute({ sql: "SELECT * FROM events WHERE id = ?", args: [row.open_event_id] }))
          .rows[0];
      if (event) {
        state.episode = {
          id: Number(event.id),
          startTs: Number(event.start_ts),
          peakScore: Number(event.peak_score),
          topSensors: JSON.parse(String(event.top_sensors)),
          readings: Number(event.readings),
          model: String(event.model),
        };
      }
    }
    this.#states.set(device, state);
    return state;
  }

  /**
   * The device's window for this model, rebuilt from its stored readings when the model changed
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

  async nextEventId(): Promise<number> {
    if (this.#nextEventId === 0) {
      const result = await this.#client.execute("SELECT coalesce(max(id), 0) AS id FROM events");
      this.#nextEventId = Number(result.rows[0].id);
    }
    return ++this.#nextEventId;
  }

  async calibrationCount(device: string): Promise<number> {
    const result = await this.#client.execute({
      sql: "SELECT count(*) AS n FROM models WHERE name = ?",
      args: [`pca-t2q/${device}`],
    });
    return Number(result.rows[0].n);
  }

  async restartCalibration(device: string, afterId: number): Promise<void> {
    const state = await this.get(device, afterId + 1);
    state.state = "calibrating";
    state.calibrationAfterId = afterId;
    state.calibrationCount = 0;
    state.windowModelId = null;
    state.window = [];
    state.dirty = true;
    await this.#client.batch(this.flushStatements(), "write");
  }

  /** Upserts for the states changed since the last flush. */
  flushStatements(): InStatement[] {
    const statements: InStatement[] = [];
    const now = Date.now();
    for (const state of this.#states.values()) {
      if (!state.dirty) continue;
      state.dirty = false;
      statements.push({
        sql:
          `INSERT INTO devices (device, state, calibration_after_id, readings, last_reading_id, anomaly, open_event_id, updated_ms)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?)
              ON CONFLICT (device) DO UPDATE SET state = excluded.state, calibration_after_id = excluded.calibration_after_id,
                readings = excluded.readings, last_reading_id = excluded.last_reading_id, anomaly = excluded.anomaly,
                open_event_id = excluded.open_event_id, updated_ms = excluded.updated_ms`,
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
      });
    }
    return statements;
  }
}
