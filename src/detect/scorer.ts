/**
 * Scores every committed reading. After each commit it reads the new readings behind its
 * cursor, calibrates devices that have just collected enough readings, runs each model once per
 * batch in onnxruntime, debounces, records episodes and alerts, and writes `score`, `anomaly`
 * (and `flags` for readings missing a sensor) with the cursor in one transaction. An inference
 * failure leaves the readings unscored and retries with backoff; ingest never waits for it.
 */
import type { Client, InStatement } from "@libsql/client";
import type { DetectionConfig } from "../config/config.ts";
import type { Outbox } from "../forward/outbox.ts";
import type { Logger } from "../observability/log.ts";
import { cursorStatement, readCursor } from "../store/cursors.ts";
import { commitDerived } from "../store/derived_commit.ts";
import { calibrate } from "./calibration.ts";
import { type AlertMessage, episodeStatements, type OpenEpisode, topSensors } from "./episodes.ts";
import { scoreWindows, type WindowScore } from "./batch_scoring.ts";
import type { Inference, LoadedModel } from "./inference.ts";
import type { ModelRegistry } from "./registry.ts";
import { type DeviceState, DeviceStates } from "./device_states.ts";

const CURSOR = "score";
const READINGS_PER_PASS = 2_000;

export interface ScorerObserver {
  /** `commitToFlagMs`: for each reading commit this pass covered, from its end to the flags' commit. */
  scored(count: number, commitToFlagMs: number[]): void;
  inferenceFailed(error: Error): void;
  episode(change: "start" | "end"): void;
  calibrated(device: string, ms: number): void;
}

interface Pending {
  id: number;
  device: DeviceState;
  ts: number;
  model: LoadedModel;
  window: number[][];
}

interface Result {
  score: number | null;
  anomaly: boolean | null;
  flags: string | null;
}

export class Scorer {
  readonly #client: Client;
  readonly #config: DetectionConfig;
  readonly #registry: ModelRegistry;
  readonly #inference: Inference;
  readonly #outbox: Outbox | null;
  readonly #log: Logger;
  readonly #observer: ScorerObserver | null;
  readonly #devices: DeviceStates;
  #cursor = -1;
  #running: Promise<void> | null = null;
  #again = false;
  #failures = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  /** performance.now() of each reading commit not yet covered by a finished pass. */
  #unflaggedCommits: number[] = [];
  /** Alerts committed but not yet published; the publisher drains it. */
  onAlerts: ((alerts: AlertMessage[]) => void) | null = null;

  constructor(
    client: Client,
    config: DetectionConfig,
    deps: {
      registry: ModelRegistry;
      inference: Inference;
      outbox: Outbox | null;
      log: Logger;
      observer?: ScorerObserver;
    },
  ) {
    this.#client = client;
    this.#config = config;
    this.#registry = deps.registry;
    this.#inference = deps.inference;
    this.#outbox = deps.outbox;
    this.#log = deps.log;
    this.#observer = deps.observer ?? null;
    this.#devices = new DeviceStates(client, config);
  }

  get cursor(): number {
    return this.#cursor;
  }

  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** Scores everything committed so far; concurrent calls share one run. */
  catchUp(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          while (!this.#stopped && await this.#pass() === READINGS_PER_PASS);
        } while (this.#again && !this.#stopped);
        this.#failures = 0;
      } catch (error) {
        this.#failures++;
        this.#observer?.inferenceFailed(error as Error);
        this.#log.error("detect.pass_failed", { error, failures: this.#failures });
        const delay = Math.min(100 * 2 ** this.#failures, 5_000);
        clearTimeout(this.#retryTimer);
        this.#retryTimer = setTimeout(() => void this.catchUp(), delay);
      } finally {
        this.#running = null;
      }
    })();
    return this.#running;
  }

  /** Notes that readings were committed now: commit-to-flag latency is measured from here. */
  noteCommit(at = performance.now()): void {
    if (this.#unflaggedCommits.length < 10_000) this.#unflaggedCommits.push(at);
  }

  /** Restarts calibration for a device with the readings that arrive from now on. */
  async recalibrate(device: string): Promise<void> {
    await this.#running;
    await this.#registry.unassign(device);
    await this.#devices.restartCalibration(device, await this.#maxReadingId());
    this.#log.info("detect.recalibrating", { device });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    await this.#running;
  }

  async #pass(): Promise<number> {
    if (this.#cursor < 0) this.#cursor = await readCursor(this.#client, CURSOR);
    // Every commit noted before this SELECT is in its rows (unless the pass is only a part).
    const covered = this.#unflaggedCommits.splice(0);
    const result = await this.#client.execute({
      sql: "SELECT id, device, ts, values_json FROM readings WHERE id > ? ORDER BY id LIMIT ?",
      args: [this.#cursor, READINGS_PER_PASS],
    });
    if (result.rows.length === 0) return 0;
    if (result.rows.length === READINGS_PER_PASS) this.#unflaggedCommits.unshift(...covered);
    const results = new Map<number, Result>();
    const pending: Pending[] = [];
    for (const row of result.rows) {
      const id = Number(row.id);
      const state = await this.#devices.get(String(row.device), id);
      const values = JSON.parse(String(row.values_json)) as Record<string, number>;
      state.readings++;
      state.lastReadingId = id;
      state.dirty = true;
      const modelId = this.#config.enabled ? this.#registry.modelIdFor(state.device) : undefined;
      if (modelId === undefined) {
        if (this.#config.enabled) await this.#collectCalibration(state, id);
        continue;
      }
      const model = await this.#registry.load(modelId);
      const missing = model.manifest.features.filter((sensor) => typeof values[sensor] !== "number");
      if (missing.length > 0) {
        results.set(id, { score: null, anomaly: null, flags: `missing: ${missing.join(", ")}` });
        continue;
      }
      const window = await this.#devices.window(state, model, id);
      window.push(model.manifest.features.map((sensor) => values[sensor]));
      if (window.length > model.manifest.window) window.shift();
      pending.push({
        id,
        device: state,
        ts: Number(row.ts),
        model,
        window: [...window],
      });
    }
    const scored = await this.#infer(pending);
    const statements: InStatement[] = [];
    const alerts: AlertMessage[] = [];
    const latencies: number[] = [];
    for (const item of pending) {
      const { score, contributions } = scored.get(item.id)!;
      const state = item.device;
      const step = state.debouncer!.push(score > item.model.manifest.threshold);
      if (step.started) {
        const info = this.#registry.info(item.model.id);
        state.episode = {
          id: await this.#devices.nextEventId(),
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
        const recorded = episodeStatements(change, state.device, episode, item.ts, this.#outbox);
        statements.push(...recorded.statements);
        alerts.push(recorded.alert);
        this.#observer?.episode(change);
        if (step.ended) state.episode = null;
      }
      state.anomaly = step.anomaly;
      results.set(item.id, { score, anomaly: step.anomaly, flags: null });
    }
    const lastId = Number(result.rows[result.rows.length - 1].id);
    statements.unshift(...updateStatements(results));
    statements.push(...this.#devices.flushStatements());
    statements.push(cursorStatement(CURSOR, lastId));
    await commitDerived(this.#client, statements);
    this.#cursor = lastId;
    const flaggedAt = performance.now();
    if (result.rows.length < READINGS_PER_PASS && pending.length > 0) {
      for (const committedAt of covered) latencies.push(flaggedAt - committedAt);
    }
    this.#observer?.scored(pending.length, latencies);
    if (alerts.length > 0) this.onAlerts?.(alerts);
    return result.rows.length;
  }

  async #collectCalibration(state: DeviceState, id: number): Promise<void> {
    state.calibrationCount++;
    if (state.calibrationCount < this.#config.calibration.readings) return;
    const readings = await this.#client.execute({
      sql: "SELECT ts, values_json FROM readings WHERE device = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
      args: [state.device, state.calibrationAfterId, id, this.#config.calibration.readings],
    });
    const started = performance.now();
    try {
      const version = `cal-${await this.#devices.calibrationCount(state.device) + 1}`;
      const bundle = calibrate(
        state.device,
        readings.rows.map((row) => ({ ts: Number(row.ts), values: JSON.parse(String(row.values_json)) })),
        this.#config.calibration,
        version,
      );
      await this.#registry.activate(bundle, state.device, "calibrated");
      state.state = "active";
      state.dirty = true;
      const ms = performance.now() - started;
      this.#observer?.calibrated(state.device, ms);
      this.#log.info("detect.calibrated", { device: state.device, readings: readings.rows.length, ms: Math.round(ms) });
    } catch (error) {
      // Start over with the next readings rather than stall the device.
      this.#log.error("detect.calibration_failed", { device: state.device, error });
      state.calibrationAfterId = id;
      state.calibrationCount = 0;
      state.dirty = true;
    }
  }

  /** Every model runs concurrently: waiting for them one by one would queue devices behind the event loop. */
  async #infer(pending: Pending[]): Promise<Map<number, WindowScore>> {
    const byModel = new Map<LoadedModel, Pending[]>();
    for (const item of pending) (byModel.get(item.model) ?? byModel.set(item.model, []).get(item.model)!).push(item);
    const scored = new Map<number, WindowScore>();
    await Promise.all([...byModel].map(async ([model, items]) => {
      const results = await scoreWindows(
        this.#inference,
        model,
        items.map((item) => item.window),
        this.#config.batchSize,
      );
      items.forEach((item, i) => scored.set(item.id, results[i]));
    }));
    return scored;
  }

  async #maxReadingId(): Promise<number> {
    const result = await this.#client.execute("SELECT coalesce(max(id), 0) AS id FROM readings");
    return Number(result.rows[0].id);
  }
}

const ROWS_PER_UPDATE = 300;

/** One `UPDATE ... FROM (VALUES ...)` per 300 readings. */
function updateStatements(results: Map<number, Result>): InStatement[] {
  const entries = [...results];
  const statements: InStatement[] = [];
  for (let start = 0; start < entries.length; start += ROWS_PER_UPDATE) {
    const chunk = entries.slice(start, start + ROWS_PER_UPDATE);
    const args: (number | string | null)[] = [];
    for (const [id, result] of chunk) {
      args.push(id, result.score, result.anomaly === null ? null : result.anomaly ? 1 : 0, result.flags);
    }
    statements.push({
      sql: `UPDATE readings SET score = v.column2, anomaly = v.column3, flags = v.column4
            FROM (VALUES ${"(?,?,?,?),".repeat(chunk.length).slice(0, -1)}) AS v WHERE readings.id = v.column1`,
      args,
    });
  }
  return statements;
}
