/**
 * Which model scores which device. Bundles live under `<dataDir>/models/`; `models` rows point
 * at them and `model_assignments` maps a scope (a device name, or `*` for every device without
 * its own) to a model, keeping the previous one for an offline rollback. Activation and rollback
 * are single transactions: a device sees the old model or the new one, never a mix.
 *
 * A model that fails at run time is deactivated for its scope only (kept in
 * `<dataDir>/models/deactivated.json`): its devices stay unscored, with the reason, until the
 * scope gets another model (upload, rollback, recalibration). A model whose bundle cannot be
 * loaded is retried with a growing delay, its devices unscored meanwhile.
 */
import type { Client, InStatement, ResultSet } from "@libsql/client";
import { join, relative, sep } from "node:path";
import type { Logger } from "../observability/log.ts";
import { commitDerived } from "../store/derived_commit.ts";
import {
  activatedModelId,
  activationStatements,
  allAssignments,
  allModels,
  deleteAssignment,
  deleteUnusedModels,
  modelsOfSource,
  recordModelEvent,
  swapToPreviousModel,
} from "../store/models_table.ts";
import type { Inference, LoadedModel } from "./inference.ts";
import { readJsonState, writeJsonState } from "./json_state_file.ts";
import { BundleSealer } from "./bundle_seal.ts";
import { CALIBRATED_PREFIX } from "./calibration.ts";
import { type ModelBundle, readBundle, writeBundle } from "./model_bundle.ts";

export const GLOBAL_SCOPE = "*";
/** The source (and folder under the models dir) of the models calibration makes. */
export const CALIBRATED_SOURCE = "calibrated";
const LOAD_RETRY_MIN_MS = 1_000;
const LOAD_RETRY_MAX_MS = 300_000;

export interface ModelInfo {
  id: number;
  name: string;
  version: string;
  source: string;
}

export interface Deactivation {
  modelId: number;
  reason: string;
  /** RFC 3339. */
  since: string;
}

/** An activation whose statements commit with other work; `adopt` once they have committed. */
export interface StagedActivation {
  /** The model's name. */
  name: string;
  /** Adjacent statements; the first returns the new model's id. */
  statements: InStatement[];
  adopt(firstResult: ResultSet): ModelInfo;
}

/** No previous model to roll back to. */
export class NoPreviousModelError extends Error {
  readonly scope: string;
  constructor(scope: string) {
    super(`No previous model to roll back to for scope ${scope === GLOBAL_SCOPE ? "global" : scope}`);
    this.name = "NoPreviousModelError";
    this.scope = scope;
  }
}

/** A model whose bundle failed to load recently; it is retried after a growing delay. */
export class ModelUnavailableError extends Error {
  constructor(id: number, reason: string) {
    super(`model ${id} unavailable: ${reason}`);
    this.name = "ModelUnavailableError";
  }
}

export class ModelRegistry {
  readonly #client: Client;
  readonly #inference: Inference;
  readonly #dir: string;
  readonly #log: Logger;
  /** Seals the bundles written here when the store is encrypted at rest (bundle_seal.ts). */
  readonly #sealer: BundleSealer | null;
  readonly #assignments = new Map<string, number>();
  readonly #info = new Map<number, ModelInfo & { path: string }>();
  readonly #deactivated: Map<string, Deactivation>;
  readonly #unavailable = new Map<number, { reason: string; failures: number; retryAt: number }>();
  /** The store's clock (src/store/store_clock.ts): the times of assignments and their history. */
  readonly #now: () => number;
  /** History rows written outside an assignment's transaction (deactivations), in order. */
  #historyWrites: Promise<void> = Promise.resolve();

  constructor(
    client: Client,
    inference: Inference,
    deps: { modelsDir: string; log: Logger; sealer?: BundleSealer | null; now?: () => number },
  ) {
    this.#client = client;
    this.#inference = inference;
    this.#dir = deps.modelsDir;
    this.#log = deps.log;
    this.#sealer = deps.sealer ?? null;
    this.#now = deps.now ?? Date.now;
    this.#deactivated = new Map(Object.entries(readJsonState<Record<string, Deactivation>>(this.#deactivatedPath, {})));
  }

  /** Loads the models and assignments; deletes calibrated bundles that no scope can use any more. */
  async init(): Promise<void> {
    for (const model of await allModels(this.#client)) this.#info.set(model.id, model);
    for (const { scope, modelId } of await allAssignments(this.#client)) this.#assignments.set(scope, modelId);
    await this.pruneCalibrated(null);
  }

  /**
   * Deletes calibrated bundles (and their rows) that neither their device nor a rollback can use:
   * every one but each device's current model, its previous one and its newest (the next
   * calibration's version counts on from it; it is normally one of the other two). Of one model
   * name (`baseline/<device>`), or of every device when null. Uploaded bundles are never deleted:
   * a release may pin them by hash. Folders go first and rows after, so a crash in between leaves
   * only rows that the next prune deletes. Failures are logged, never thrown: scoring goes on.
   */
  async pruneCalibrated(name: string | null, options: { keepNewest: boolean } = { keepNewest: true }): Promise<void> {
    const source = CALIBRATED_SOURCE;
    try {
      const rows = await modelsOfSource(this.#client, source, name);
      const newest = new Map(rows.map((row) => [row.name, row.id]));
      const keep = (row: (typeof rows)[number]) => row.used || (options.keepNewest && newest.get(row.name) === row.id);
      const keptPaths = new Set(rows.filter(keep).map((row) => row.path));
      const removed: typeof rows = [];
      for (const row of rows) {
        if (keep(row) || keptPaths.has(row.path)) continue;
        const inside = relative(join(this.#dir, source), row.path);
        if (inside === "" || inside.startsWith("..") || inside.includes(sep)) {
          this.#log.warn("detect.model_prune_skipped", {
            id: row.id,
            path: row.path,
            reason: "not a calibrated bundle",
          });
          continue;
        }
        try {
          await Deno.remove(row.path, { recursive: true });
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound)) throw error;
        }
        removed.push(row);
      }
      await deleteUnusedModels(this.#client, removed.map((row) => row.id));
      for (const row of removed) {
        this.#info.delete(row.id);
        this.#unavailable.delete(row.id);
        this.#inference.forget(row.id);
      }
      if (removed.length > 0) {
        this.#log.info("detect.models_pruned", { models: removed.map((row) => `${row.name}@${row.version}`) });
      }
    } catch (error) {
      this.#log.error("detect.model_prune_failed", { name, error });
    }
  }

  /**
   * The store forgot the device (retention removed its readings): its calibrated model is
   * unassigned and every bundle of it deleted, from disk and memory. A model uploaded for the
   * device stays assigned. Its next calibration's version counts on from the model history.
   */
  async forgetCalibrated(device: string): Promise<void> {
    const id = this.#assignments.get(device);
    if (id !== undefined && this.#info.get(id)?.source === CALIBRATED_SOURCE) await this.unassign(device);
    await this.pruneCalibrated(`${CALIBRATED_PREFIX}${device}`, { keepNewest: false });
  }

  /** The model for a device: its own assignment, else the global one. */
  modelIdFor(device: string): number | undefined {
    return this.#assignments.get(device) ?? this.#assignments.get(GLOBAL_SCOPE);
  }

  hasOwnModel(device: string): boolean {
    return this.#assignments.has(device);
  }

  info(id: number): ModelInfo | undefined {
    const info = this.#info.get(id);
    return info && { id: info.id, name: info.name, version: info.version, source: info.source };
  }

  /** Why the device's model may not run, if it may not. */
  deactivationFor(device: string): Deactivation | undefined {
    const scope = this.#assignments.has(device) ? device : GLOBAL_SCOPE;
    const deactivation = this.#deactivated.get(scope);
    return deactivation?.modelId === this.#assignments.get(scope) ? deactivation : undefined;
  }

  /** Deactivates a model in every scope it currently serves; returns those scopes. */
  deactivate(id: number, reason: string): string[] {
    const scopes = [...this.#assignments].filter(([, modelId]) => modelId === id).map(([scope]) => scope);
    const since = new Date().toISOString();
    for (const scope of scopes) this.#deactivated.set(scope, { modelId: id, reason, since });
    if (scopes.length > 0) {
      this.#saveDeactivated();
      this.#log.error("detect.model_deactivated", { id, scopes, reason });
      // The deactivation itself lives in deactivated.json; its history rows follow it (a failed
      // write is logged: the deactivation stands either way).
      const nowMs = this.#now();
      this.#historyWrites = this.#historyWrites.then(async () => {
        for (const scope of scopes) {
          await recordModelEvent(this.#client, { scope, kind: "deactivated", modelId: id, reason }, nowMs);
        }
      }).catch((error) => this.#log.error("detect.model_history_failed", { id, scopes, error }));
    }
    return scopes;
  }

  /** Resolves once the history rows of earlier deactivations are written (or failed, logged). */
  historyWritten(): Promise<void> {
    return this.#historyWrites;
  }

  /** Records an operator's request to recalibrate `device` in its history (the model keeps scoring). */
  /**
   * Records a recalibration already committed. A row that cannot be written is logged, not thrown:
   * the route would answer 500 for a recalibration that happened, and invite a second one.
   */
  async recordRecalibration(device: string): Promise<void> {
    const reason = "an operator asked to recalibrate; the device's model scores it until the new one is made";
    try {
      await recordModelEvent(
        this.#client,
        { scope: device, kind: "recalibration", modelId: null, reason },
        this.#now(),
      );
    } catch (error) {
      this.#log.error("detect.model_history_failed", { scopes: [device], kind: "recalibration", error });
    }
  }

  /** Scopes whose model is deactivated, and models that failed to load and wait for a retry. */
  problems(): { deactivated: number; unavailable: number } {
    const deactivated = [...this.#deactivated].filter(([scope, d]) => this.#assignments.get(scope) === d.modelId);
    return { deactivated: deactivated.length, unavailable: this.#unavailable.size };
  }

  /**
   * The loaded session for a model id (reading and verifying its bundle on first use). A bundle
   * that fails to load is retried after a growing delay; until then ModelUnavailableError.
   */
  async load(id: number): Promise<LoadedModel> {
    const loaded = this.#inference.get(id);
    if (loaded) return loaded;
    const failed = this.#unavailable.get(id);
    if (failed && performance.now() < failed.retryAt) throw new ModelUnavailableError(id, failed.reason);
    try {
      const info = this.#info.get(id);
      if (!info) throw new Error(`Unknown model id ${id}`);
      const model = await this.#inference.load(id, await readBundle(info.path, this.#sealer));
      this.#unavailable.delete(id);
      return model;
    } catch (error) {
      const failures = (failed?.failures ?? 0) + 1;
      const reason = (error as Error).message;
      const delay = Math.min(LOAD_RETRY_MIN_MS * 2 ** (failures - 1), LOAD_RETRY_MAX_MS);
      this.#unavailable.set(id, { reason, failures, retryAt: performance.now() + delay });
      this.#log.error("detect.model_load_failed", { id, failures, retryInMs: delay, error });
      throw new ModelUnavailableError(id, reason);
    }
  }

  /**
   * Load-tests a bundle (on `samples`, rows of the scope's readings, when there are any), stores
   * it, and returns the statements that make it the model of `scope`.
   */
  async stage(
    bundle: ModelBundle,
    scope: string,
    source: string,
    options: { samples?: readonly (readonly number[])[]; keyId?: string | null; reason?: string | null } = {},
  ): Promise<StagedActivation> {
    await this.#inference.test(bundle, options.samples);
    const { name, version, sha256 } = bundle.manifest;
    const folder = `${safe(name)}-${safe(version)}-${sha256.slice(0, 12)}`;
    // Sealed, the folder's name must not carry the model's (a calibrated one names its device).
    const path = join(this.#dir, source, this.#sealer ? await BundleSealer.opaqueName(folder) : folder);
    try {
      await Deno.stat(path);
    } catch {
      await Deno.mkdir(join(this.#dir, source), { recursive: true });
      await writeBundle(path, bundle, this.#sealer);
    }
    return {
      name,
      statements: activationStatements({ name, version, source, path, sha256 }, scope, this.#now(), {
        kind: source === CALIBRATED_SOURCE ? "calibrated" : "uploaded",
        keyId: options.keyId,
        reason: options.reason,
      }),
      adopt: (firstResult) => {
        const id = activatedModelId(firstResult);
        this.#info.set(id, { id, name, version, source, path });
        this.#assign(scope, id);
        this.#log.info("detect.model_activated", { scope, id, name, version, source });
        return { id, name, version, source };
      },
    };
  }

  /** Stores a bundle, load-tests it, and makes it the model of `scope` atomically. */
  async activate(
    bundle: ModelBundle,
    scope: string,
    source: string,
    options: { samples?: readonly (readonly number[])[]; keyId?: string | null; reason?: string | null } = {},
  ): Promise<ModelInfo> {
    const staged = await this.stage(bundle, scope, source, options);
    const results = await commitDerived(this.#client, staged.statements);
    return staged.adopt(results[0]);
  }

  /** Returns `scope` to its previous model; throws NoPreviousModelError when there is none. */
  async rollback(scope: string): Promise<{ from: ModelInfo; to: ModelInfo }> {
    const swapped = await swapToPreviousModel(this.#client, scope, this.#now());
    if (swapped === null) throw new NoPreviousModelError(scope);
    const to = swapped.modelId;
    const from = swapped.previousModelId;
    this.#assign(scope, to);
    this.#log.info("detect.model_rolled_back", { scope, from, to });
    return { from: this.info(from)!, to: this.info(to)! };
  }

  /** Drops a device's own model (recalibration); the global model, if any, applies meanwhile. */
  async unassign(device: string): Promise<void> {
    await deleteAssignment(this.#client, device, this.#now());
    this.#assign(device, undefined);
  }

  /** A scope's model changed: whatever was deactivated there no longer applies. */
  #assign(scope: string, id: number | undefined): void {
    if (id === undefined) this.#assignments.delete(scope);
    else this.#assignments.set(scope, id);
    if (this.#deactivated.delete(scope)) this.#saveDeactivated();
  }

  get #deactivatedPath(): string {
    return join(this.#dir, "deactivated.json");
  }

  #saveDeactivated(): void {
    writeJsonState(this.#deactivatedPath, Object.fromEntries(this.#deactivated));
  }
}

function safe(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 64);
}
