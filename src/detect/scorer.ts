/**
 * Scores every committed reading. After each commit it takes the new readings behind its
 * cursor (as the writer handed them over, fresh_readings.ts, or from the store when it is behind)
 * and runs a pass (scoring_pass.ts): calibrate devices that have just collected enough
 * readings, run each model once per batch in onnxruntime, debounce, record episodes and alerts,
 * then write `score`, `anomaly` and `flags` with the cursor in one transaction, and only then
 * keep the new device states in memory. A pass that fails as a whole changes nothing and is
 * retried with backoff; ingest never waits for it.
 *
 * Passes, recalibrations and startup recovery run one at a time. Each pass and each unit of risky
 * work inside it leaves a crash marker while it runs (work_markers.ts); at startup, markers of a
 * process that died are turned into a quarantined device, a deactivated model or skipped readings
 * (scorer_recovery.ts) before scoring resumes.
 */
import type { Client } from "@libsql/client";
import { join } from "node:path";
import type { DetectionConfig } from "../config/config.ts";
import { nextTurn } from "../event_loop_turn.ts";
import type { Logger } from "../observability/log.ts";
import { readCursor } from "../store/cursors.ts";
import { commitDerived } from "../store/derived_commit.ts";
import type { Outbox } from "../store/outbox.ts";
import { type CommittedReadings, maxReadingId, readingsAfterWithin } from "../store/readings.ts";
import { FORGET_CHUNK, forgetOrphanedModels, forgetSome } from "./device_forgetting.ts";
import { DeviceStates } from "./device_states.ts";
import { FreshReadings } from "./fresh_readings.ts";
import type { AlertMessage } from "./episodes.ts";
import type { Inference } from "./inference.ts";
import { acceptOperatingPoint, markFalseAlarm, type OperatorOutcome } from "./operator_actions.ts";
import { Quarantine, type QuarantineEntry } from "./quarantine.ts";
import type { ModelRegistry } from "./registry.ts";
import { recoverInterruptedWork } from "./scorer_recovery.ts";
import type { ScorerObserver } from "./scorer_observer.ts";
import { type PassDeps, planPass, SCORE_CURSOR } from "./scoring_pass.ts";
import { WorkMarkers } from "./work_markers.ts";

export type { OperatorOutcome, ScorerObserver };
export { UnknownEventError } from "./operator_actions.ts";

const READINGS_PER_PASS = 2_000;
/** Reading commits whose commit-to-flag latency is waiting to be measured, at most (a sample in a backlog). */
const MAX_UNFLAGGED_COMMITS = 10_000;
const DEFAULT_MAX_SENSORS = 64;
/** Values (JSON characters) of just-committed readings kept for the next pass at most. */
const FRESH_READINGS_BYTES = 1024 * 1024;
/**
 * Values a pass reads from the store at most: 2,000 readings of 64 sensors with 128-character
 * names are 19 MB of JSON, several times that once parsed, against the V8 heap's 64 MiB.
 */
const PASS_READ_BYTES = 4 * 1024 * 1024;

/** The device has neither readings nor a detection state. */
export class UnknownDeviceError extends Error {
  readonly device: string;
  constructor(device: string) {
    super(`Unknown device: ${device}`);
    this.name = "UnknownDeviceError";
    this.device = device;
  }
}

export class Scorer {
  readonly #deps: PassDeps;
  readonly #quarantine: Quarantine;
  #cursor = -1;
  #recovered = false;
  #running: Promise<void> | null = null;
  #again = false;
  #failures = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #lock: Promise<unknown> = Promise.resolve();
  #sweeping: Promise<void> | null = null;
  /** performance.now() of each reading commit not yet covered by a finished pass. */
  #unflaggedCommits: number[] = [];
  /** What the writer has just committed, so that a pass need not read it back. */
  readonly #fresh = new FreshReadings({ maxRows: READINGS_PER_PASS, maxBytes: FRESH_READINGS_BYTES });
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
      /** Folder for crash markers and quarantine reasons; without one they are kept in memory only. */
      stateDir?: string;
      /** `spec.limits.sensorsPerDevice`. */
      maxSensors?: number;
    },
  ) {
    const stateDir = deps.stateDir ?? null;
    this.#deps = {
      client,
      config,
      registry: deps.registry,
      inference: deps.inference,
      outbox: deps.outbox,
      log: deps.log,
      observer: deps.observer ?? null,
      devices: new DeviceStates(client, config),
      markers: new WorkMarkers(stateDir && join(stateDir, "work")),
      maxSensors: deps.maxSensors ?? DEFAULT_MAX_SENSORS,
    };
    this.#quarantine = new Quarantine(stateDir && join(stateDir, "quarantine.json"));
  }

  get cursor(): number {
    return this.#cursor;
  }

  get consecutiveFailures(): number {
    return this.#failures;
  }

  get quarantinedDevices(): number {
    return this.#quarantine.size;
  }

  quarantineOf(device: string): QuarantineEntry | undefined {
    return this.#quarantine.get(device);
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
          while (!this.#stopped && await this.#exclusive(() => this.#pass()));
        } while (this.#again && !this.#stopped);
        this.#failures = 0;
      } catch (error) {
        this.#failures++;
        this.#deps.observer?.inferenceFailed(error as Error);
        this.#deps.log.error("detect.pass_failed", { error, failures: this.#failures });
        const delay = Math.min(100 * 2 ** this.#failures, 5_000);
        clearTimeout(this.#retryTimer);
        this.#retryTimer = setTimeout(() => void this.catchUp(), delay);
      } finally {
        this.#running = null;
      }
    })();
    return this.#running;
  }

  /**
   * Notes that readings were committed now (commit-to-flag latency is measured from here), with
   * the readings when the writer knows them.
   */
  noteCommit(committed: CommittedReadings | null = null, at = performance.now()): void {
    if (this.#unflaggedCommits.length < MAX_UNFLAGGED_COMMITS) this.#unflaggedCommits.push(at);
    this.#fresh.committed(committed);
  }

  /**
   * Restarts calibration for a device with the readings that arrive from now on (and lifts its
   * quarantine); its current model keeps scoring until the new one is active. Throws
   * UnknownDeviceError for a device the store has never seen.
   */
  recalibrate(device: string): Promise<void> {
    return this.#exclusive(async () => {
      const { client, devices, log } = this.#deps;
      if (!await devices.known(device)) throw new UnknownDeviceError(device);
      await devices.restartCalibration(device, await maxReadingId(client));
      this.#quarantine.remove(device);
      log.info("detect.recalibrating", { device });
    });
  }

  /**
   * Records that an event was a false alarm: its device's baseline accepts the present state and
   * its open episode, if any, ends. Throws UnknownEventError.
   */
  markFalseAlarm(eventId: number): Promise<OperatorOutcome> {
    return this.#exclusive(() => this.#published(markFalseAlarm(this.#deps, eventId)));
  }

  /** Takes a device's present operating point as normal. Throws UnknownDeviceError. */
  acceptOperatingPoint(device: string): Promise<OperatorOutcome> {
    return this.#exclusive(async () => {
      if (!await this.#deps.devices.known(device)) throw new UnknownDeviceError(device);
      return await this.#published(acceptOperatingPoint(this.#deps, device));
    });
  }

  /**
   * The store forgot these devices (retention removed their readings): their detection state goes
   * too (device_forgetting.ts), a chunk at a time between passes. Returns how many were forgotten.
   */
  async forgetDevices(devices: readonly string[]): Promise<number> {
    let forgotten = 0;
    for (let i = 0; i < devices.length && !this.#stopped; i += FORGET_CHUNK) {
      const chunk = devices.slice(i, i + FORGET_CHUNK);
      forgotten += (await this.#exclusive(() => this.#forgetSome(chunk))).forgotten.length;
    }
    return forgotten;
  }

  async #forgetSome(among: readonly string[] | null) {
    const outcome = await forgetSome(this.#deps, among);
    if (outcome.alerts.length > 0) this.onAlerts?.(outcome.alerts);
    return outcome;
  }

  /**
   * At start, the state of devices the store forgot while no scorer listened (a retention at start,
   * an older release) and models a crash left: a chunk at a time between passes, yielding between
   * chunks, so neither scoring nor requests wait for it. What fails is tried again at the next start.
   */
  async #sweepForgotten(): Promise<void> {
    try {
      const steps: (() => Promise<number>)[] = [
        async () => (await this.#forgetSome(null)).examined,
        () => forgetOrphanedModels(this.#deps),
      ];
      for (const step of steps) {
        while (!this.#stopped && await this.#exclusive(step) === FORGET_CHUNK) {
          await nextTurn();
        }
      }
    } catch (error) {
      this.#deps.log.warn("detect.forget_devices_failed", { error });
    }
  }

  async #published(action: Promise<OperatorOutcome>): Promise<OperatorOutcome> {
    const outcome = await action;
    if (outcome.alerts.length > 0) this.onAlerts?.(outcome.alerts);
    return outcome;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    await this.#running;
    await this.#sweeping;
    await this.#lock;
  }

  /**
   * Deals with work a previous process died during, before the first pass (and again before the
   * next one if it failed, e.g. on a full disk: scoring does not start without it).
   */
  async #recover(): Promise<void> {
    const { client, registry, devices, markers, log, observer } = this.#deps;
    const quarantine = this.#quarantine;
    const cursor = await readCursor(client, SCORE_CURSOR);
    await recoverInterruptedWork({ client, registry, devices, markers, log, observer, quarantine }, { cursor });
    this.#cursor = await readCursor(client, SCORE_CURSOR);
    this.#recovered = true;
    this.#sweeping ??= this.#sweepForgotten();
  }

  /** Runs `work` after every earlier pass, recalibration or recovery has finished. */
  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#lock.then(work);
    this.#lock = result.catch(() => {});
    return result;
  }

  /** Commits a pass did not cover after all go back before those noted since, within the bound. */
  #notFlagged(covered: number[]): void {
    const kept = covered.concat(this.#unflaggedCommits);
    this.#unflaggedCommits = kept.length > MAX_UNFLAGGED_COMMITS ? kept.slice(0, MAX_UNFLAGGED_COMMITS) : kept;
  }

  /** One pass; true when more readings are waiting. */
  async #pass(): Promise<boolean> {
    const { client, markers } = this.#deps;
    if (!this.#recovered) await this.#recover();
    if (this.#cursor < 0) this.#cursor = await readCursor(client, SCORE_CURSOR);
    // Every commit noted before this read is in its rows (unless the pass is only a part).
    const covered = this.#unflaggedCommits.splice(0);
    const held = this.#fresh.after(this.#cursor, READINGS_PER_PASS);
    const { readings: rows, cut } = held !== null
      ? { readings: held, cut: false }
      : await readingsAfterWithin(client, this.#cursor, READINGS_PER_PASS, PASS_READ_BYTES);
    if (rows.length === 0) return false;
    const lastRow = rows[rows.length - 1].id;
    const done = markers.begin({
      kind: "pass",
      fromId: rows[0].id,
      toId: lastRow,
      startedAt: new Date().toISOString(),
    });
    let plan;
    try {
      plan = await planPass(this.#deps, rows);
      plan.adopt(await commitDerived(client, plan.statements));
      this.#cursor = plan.lastId;
    } catch (error) {
      this.#notFlagged(covered);
      throw error;
    } finally {
      done();
    }
    const complete = plan.lastId === lastRow && rows.length < READINGS_PER_PASS && !cut;
    const latencies: number[] = [];
    if (!complete) this.#notFlagged(covered);
    else if (plan.scored > 0) {
      const flaggedAt = performance.now();
      for (const committedAt of covered) latencies.push(flaggedAt - committedAt);
    }
    this.#deps.observer?.scored(plan.scored, latencies);
    if (plan.alerts.length > 0) this.onAlerts?.(plan.alerts);
    // The new model has committed: the device's bundles older than its previous one can go.
    if (plan.calibrated !== null) await this.#deps.registry.pruneCalibrated(plan.calibrated);
    return !complete;
  }
}
