/**
 * What the store keeps of a scope's models, for `GET /v1/models` (src/api/detect_routes.ts):
 * the scope's assignment (its model, the previous one a rollback returns to, and when it last
 * changed) and the `models` rows that belong to it, newest first. The registry
 * (src/detect/registry.ts) owns what these rows mean; this file only reads them.
 *
 * The `models` rows are what can still run: calibrated rows beyond a device's current, previous
 * and newest are pruned with their bundles, and a row does not say which scope it served. What
 * happened to a scope over time (each activation, rollback, deactivation with its reason,
 * recalibration request, release restore, an upload's signing key) is its append-only history,
 * src/store/assignment_history.ts.
 */
import type { Client } from "@libsql/client";

/** A `models` row as the history lists it. */
export interface HistoryModel {
  id: number;
  name: string;
  version: string;
  source: string;
  sha256: string;
  /** Epoch ms the row was stored (activated, for a model made the scope's on upload or calibration). */
  createdMs: number;
}

export interface ScopeAssignment {
  modelId: number;
  previousModelId: number | null;
  /** Epoch ms of the assignment's last change. */
  updatedMs: number;
}

/** The scope's assignment, or null when it has none. */
export async function scopeAssignment(client: Client, scope: string): Promise<ScopeAssignment | null> {
  const result = await client.execute({
    sql: "SELECT model_id, previous_model_id, updated_ms FROM model_assignments WHERE scope = ?",
    args: [scope],
  });
  const row = result.rows[0];
  if (!row) return null;
  return {
    modelId: Number(row.model_id),
    previousModelId: row.previous_model_id === null ? null : Number(row.previous_model_id),
    updatedMs: Number(row.updated_ms),
  };
}

/** One stored model by id (null when pruned). */
export async function historyModel(client: Client, id: number): Promise<HistoryModel | null> {
  const result = await client.execute({
    sql: "SELECT id, name, version, source, sha256, created_ms FROM models WHERE id = ?",
    args: [id],
  });
  return result.rows[0] ? toHistoryModel(result.rows[0]) : null;
}

/**
 * A page of the scope's models, newest first: those named `name` (a device's calibrated models;
 * null for none) and the scope's current and previous one. `beforeId` continues a page.
 */
export async function scopeModelsPage(
  client: Client,
  query: { scope: string; name: string | null; beforeId: number | null; limit: number },
): Promise<{ models: HistoryModel[]; more: boolean }> {
  const result = await client.execute({
    sql: `SELECT id, name, version, source, sha256, created_ms FROM models
          WHERE (name = ? OR id IN (
                  SELECT model_id FROM model_assignments WHERE scope = ?
                  UNION SELECT previous_model_id FROM model_assignments WHERE scope = ?))
            AND (? IS NULL OR id < ?)
          ORDER BY id DESC LIMIT ?`,
    args: [query.name, query.scope, query.scope, query.beforeId, query.beforeId, query.limit + 1],
  });
  return {
    models: result.rows.slice(0, query.limit).map(toHistoryModel),
    more: result.rows.length > query.limit,
  };
}

function toHistoryModel(row: Record<string, unknown>): HistoryModel {
  return {
    id: Number(row.id),
    name: String(row.name),
    version: String(row.version),
    source: String(row.source),
    sha256: String(row.sha256),
    createdMs: Number(row.created_ms),
  };
}
