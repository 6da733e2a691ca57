/**
 * Which model scores which device. Bundles live under `<dataDir>/models/`; `models` rows point
 * at them and `model_assignments` maps a scope (a device name, or `*` for every device without
 * its own) to a model, keeping the previous one for an offline rollback. Activation and rollback
 * are single transactions: a device sees the old model or the new one, never a mix.
 */
import type { Client } from "@libsql/client";
import { join } from "node:path";
import type { Logger } from "../observability/log.ts";
import type { Inference, LoadedModel } from "./inference.ts";
import { type ModelBundle, readBundle, writeBundle } from "./model_bundle.ts";

export const GLOBAL_SCOPE = "*";

export interface ModelInfo {
  id: number;
  name: string;
  version: string;
  source: string;
}

export class ModelRegistry {
  readonly #client: Client;
  readonly #inference: Inference;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #assignments = new Map<string, number>();
  readonly #info = new Map<number, ModelInfo & { path: string }>();

  constructor(client: Client, inference: Inference, deps: { modelsDir: string; log: Logger }) {
    this.#client = client;
    this.#inference = inference;
    this.#dir = deps.modelsDir;
    this.#log = deps.log;
  }

  async init(): Promise<void> {
    const models = await this.#client.execute("SELECT id, name, version, source, path FROM models");
    for (const row of models.rows) {
      const id = Number(row.id);
      this.#info.set(id, {
        id,
        name: String(row.name),
        version: String(row.version),
        source: String(row.source),
        path: String(row.path),
      });
    }
    const assignments = await this.#client.execute("SELECT scope, model_id FROM model_assignments");
    for (const row of assignments.rows) this.#assignments.set(String(row.scope), Number(row.model_id));
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

  /** The loaded session for a model id (reading and verifying its bundle on first use). */
  async load(id: number): Promise<LoadedModel> {
    const loaded = this.#inference.get(id);
    if (loaded) return loaded;
    const info = this.#info.get(id);
    if (!info) throw new Error(`Unknown model id ${id}`);
    return await this.#inference.load(id, await readBundle(info.path));
  }

  /** Stores a bundle, load-tests it, and makes it the model of `scope` atomically. */
  async activate(bundle: ModelBundle, scope: string, source: string): Promise<ModelInfo> {
    await this.#inference.test(bundle);
    const { name, version, sha256 } = bundle.manifest;
    const path = join(this.#dir, source, `${safe(name)}-${safe(version)}-${sha256.slice(0, 12)}`);
    try {
      await Deno.stat(path);
    } catch {
      await Deno.mkdir(join(this.#dir, source), { recursive: true });
      await writeBundle(path, bundle);
    }
    const now = Date.now();
    const results = await this.#client.batch([
      {
        sql:
          "INSERT INTO models (name, version, source, path, sha256, created_ms) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        args: [name, version, source, path, sha256, now],
      },
      {
        sql: `INSERT INTO model_assignments (scope, model_id, previous_model_id, updated_ms)
              VALUES (?, last_insert_rowid(), NULL, ?)
              ON CONFLICT (scope) DO UPDATE SET previous_model_id = model_id, model_id = excluded.model_id,
                updated_ms = excluded.updated_ms`,
        args: [scope, now],
      },
    ], "write");
    const id = Number(results[0].rows[0].id);
    this.#info.set(id, { id, name, version, source, path });
    this.#assignments.set(scope, id);
    this.#log.info("detect.model_activated", { scope, id, name, version, source });
    return { id, name, version, source };
  }

  /** Returns `scope` to its previous model; throws RangeError when there is none. */
  async rollback(scope: string): Promise<{ from: ModelInfo; to: ModelInfo }> {
    const result = await this.#client.execute({
      sql: `UPDATE model_assignments SET model_id = previous_model_id, previous_model_id = model_id, updated_ms = ?
            WHERE scope = ? AND previous_model_id IS NOT NULL RETURNING model_id, previous_model_id`,
      args: [Date.now(), scope],
    });
    if (result.rows.length === 0) throw new RangeError(`No previous model to roll back to for scope ${scope}`);
    const to = Number(result.rows[0].model_id);
    const from = Number(result.rows[0].previous_model_id);
    this.#assignments.set(scope, to);
    this.#log.info("detect.model_rolled_back", { scope, from, to });
    return { from: this.info(from)!, to: this.info(to)! };
  }

  /** Drops a device's own model (recalibration); the global model, if any, applies meanwhile. */
  async unassign(device: string): Promise<void> {
    await this.#client.execute({ sql: "DELETE FROM model_assignments WHERE scope = ?", args: [device] });
    this.#assignments.delete(device);
  }
}

function safe(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 64);
}
