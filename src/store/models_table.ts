/**
 * Storage of the model registry (`models`, `model_assignments`); which model serves which device,
 * and the bundles on disk, are src/detect/registry.ts's. An activation returns its statements so
 * that a calibration commits its model with the scoring pass that fitted it.
 */
import type { Client, InStatement, ResultSet } from "@libsql/client";
import { type HistoryKind, recordAssignmentStatements, recordEventStatements } from "./assignment_history.ts";

/** A `models` row: a bundle stored at `path`. */
export interface StoredModel {
  id: number;
  name: string;
  version: string;
  source: string;
  path: string;
}

export async function allModels(client: Client): Promise<StoredModel[]> {
  const result = await client.execute("SELECT id, name, version, source, path FROM models");
  return result.rows.map(toStoredModel);
}

/** Every scope's current model. */
export async function allAssignments(client: Client): Promise<{ scope: string; modelId: number }[]> {
  const result = await client.execute("SELECT scope, model_id FROM model_assignments");
  return result.rows.map((row) => ({ scope: String(row.scope), modelId: Number(row.model_id) }));
}

/**
 * Adjacent statements that store a model, make it the model of `scope` (keeping the scope's
 * current one as its previous) and record that in the scope's history (`kind`, with the upload's
 * verified signing key when there was one); read the new id from the first one's result with
 * `activatedModelId`.
 */
export function activationStatements(
  model: Omit<StoredModel, "id"> & { sha256: string },
  scope: string,
  nowMs: number,
  history: { kind: HistoryKind; keyId?: string | null; reason?: string | null },
): InStatement[] {
  return [
    {
      sql:
        "INSERT INTO models (name, version, source, path, sha256, created_ms) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
      args: [model.name, model.version, model.source, model.path, model.sha256, nowMs],
    },
    {
      sql: `INSERT INTO model_assignments (scope, model_id, previous_model_id, updated_ms)
            VALUES (?, last_insert_rowid(), NULL, ?)
            ON CONFLICT (scope) DO UPDATE SET previous_model_id = model_id, model_id = excluded.model_id,
              updated_ms = excluded.updated_ms`,
      args: [scope, nowMs],
    },
    ...recordAssignmentStatements({ scope, ...history }, nowMs),
  ];
}

/** The id of the model stored by the first of `activationStatements`, from its result. */
export function activatedModelId(firstResult: ResultSet): number {
  return Number(firstResult.rows[0].id);
}

/**
 * Swaps `scope`'s model with its previous one, recorded in its history in the same transaction;
 * null (and nothing changed) when the scope has no previous model.
 */
export async function swapToPreviousModel(
  client: Client,
  scope: string,
  nowMs: number,
): Promise<{ modelId: number; previousModelId: number } | null> {
  const [result] = await client.batch([
    {
      sql: `UPDATE model_assignments SET model_id = previous_model_id, previous_model_id = model_id, updated_ms = ?
            WHERE scope = ? AND previous_model_id IS NOT NULL RETURNING model_id, previous_model_id`,
      args: [nowMs, scope],
    },
    ...recordAssignmentStatements({ scope, kind: "rollback" }, nowMs, { onlyIfChanged: true }),
  ], "write");
  const row = result.rows[0];
  return row ? { modelId: Number(row.model_id), previousModelId: Number(row.previous_model_id) } : null;
}

/** Drops `scope`'s assignment (and with it its previous model), recorded in its history. */
export async function deleteAssignment(client: Client, scope: string, nowMs: number): Promise<void> {
  await client.batch(unassignStatements(scope, "unassigned", null, nowMs), "write");
}

/** Records a model event that changes no assignment (a deactivation, a recalibration request). */
export async function recordModelEvent(
  client: Client,
  entry: { scope: string; kind: HistoryKind; modelId: number | null; reason?: string | null },
  nowMs: number,
): Promise<void> {
  await client.batch(recordEventStatements(entry, nowMs), "write");
}

function unassignStatements(scope: string, kind: HistoryKind, reason: string | null, nowMs: number): InStatement[] {
  return [
    ...recordEventStatements({ scope, kind, modelId: null, reason }, nowMs, { onlyIfAssigned: true }),
    { sql: "DELETE FROM model_assignments WHERE scope = ?", args: [scope] },
  ];
}

/**
 * The versions named `name` that the store has held: its stored models', and those `scope`'s model
 * history recorded (the models may have been deleted since, e.g. of a device the store forgot).
 */
export async function versionsNamed(client: Client, name: string, scope: string): Promise<string[]> {
  const result = await client.execute({
    sql: `SELECT version FROM models WHERE name = ?
          UNION SELECT version FROM model_assignment_history WHERE scope = ? AND name = ? AND version IS NOT NULL`,
    args: [name, scope, name],
  });
  return result.rows.map((row) => String(row.version));
}

/** A stored model, and whether a scope uses it as its model or its previous one (for a rollback). */
export interface ModelUse extends StoredModel {
  used: boolean;
}

/** The models of `source` (named `name`, or all of them), oldest first, with their use. */
export async function modelsOfSource(client: Client, source: string, name: string | null): Promise<ModelUse[]> {
  const result = await client.execute({
    sql: `SELECT id, name, version, source, path,
            EXISTS (SELECT 1 FROM model_assignments a WHERE a.model_id = m.id OR a.previous_model_id = m.id) AS used
          FROM models m WHERE source = ? AND (? IS NULL OR name = ?) ORDER BY id`,
    args: [source, name, name],
  });
  return result.rows.map((row) => ({ ...toStoredModel(row), used: Number(row.used) === 1 }));
}

/** Deletes `models` rows that no scope uses (a row a scope uses is kept whatever `ids` says). */
export async function deleteUnusedModels(client: Client, ids: readonly number[]): Promise<number> {
  if (ids.length === 0) return 0;
  const result = await client.execute({
    sql: `DELETE FROM models WHERE id IN (${ids.map(() => "?").join(",")})
            AND id NOT IN (SELECT model_id FROM model_assignments)
            AND id NOT IN (SELECT previous_model_id FROM model_assignments WHERE previous_model_id IS NOT NULL)`,
    args: [...ids],
  });
  return result.rowsAffected;
}

/** A scope's model with what identifies its bundle: what a release pins. */
export interface AssignedModel {
  scope: string;
  modelId: number;
  sha256: string;
  name: string;
  version: string;
  source: string;
  path: string;
}

/** Every scope's current model, with its bundle's hash, in scope order. */
export async function snapshotAssignments(client: Client): Promise<AssignedModel[]> {
  const result = await client.execute(
    `SELECT a.scope, m.id, m.sha256, m.name, m.version, m.source, m.path
       FROM model_assignments a JOIN models m ON m.id = a.model_id ORDER BY a.scope`,
  );
  return result.rows.map((row) => ({
    scope: String(row.scope),
    modelId: Number(row.id),
    sha256: String(row.sha256),
    name: String(row.name),
    version: String(row.version),
    source: String(row.source),
    path: String(row.path),
  }));
}

/** Stored models whose bundle has `sha256`, newest first. */
export async function modelsWithSha256(client: Client, sha256: string): Promise<StoredModel[]> {
  const result = await client.execute({
    sql: "SELECT id, name, version, source, path FROM models WHERE sha256 = ? ORDER BY id DESC",
    args: [sha256],
  });
  return result.rows.map(toStoredModel);
}

/**
 * Sets every scope in `assign` to its model (the scope's model until then becomes its previous,
 * so that a model rollback can return to it) and drops the assignments of `unassign`, each
 * recorded in its scope's history with `reason`, in one transaction.
 */
export async function restoreAssignments(
  client: Client,
  change: { assign: { scope: string; modelId: number }[]; unassign: string[]; reason: string },
  nowMs: number,
): Promise<void> {
  // A store no program of this version has opened yet has no history table: its migration will
  // record the assignments as they stand then.
  const history = (await client.execute(
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'model_assignment_history'",
  )).rows.length > 0;
  const statements: InStatement[] = [
    ...change.assign.flatMap(({ scope, modelId }) => [
      {
        sql: `INSERT INTO model_assignments (scope, model_id, previous_model_id, updated_ms) VALUES (?, ?, NULL, ?)
              ON CONFLICT (scope) DO UPDATE SET
                previous_model_id = CASE WHEN model_id = excluded.model_id THEN previous_model_id ELSE model_id END,
                model_id = excluded.model_id, updated_ms = excluded.updated_ms`,
        args: [scope, modelId, nowMs],
      },
      ...(history ? recordAssignmentStatements({ scope, kind: "release_restore", reason: change.reason }, nowMs) : []),
    ]),
    ...change.unassign.flatMap((scope) =>
      history
        ? unassignStatements(scope, "release_unassigned", change.reason, nowMs)
        : [{ sql: "DELETE FROM model_assignments WHERE scope = ?", args: [scope] }]
    ),
  ];
  if (statements.length > 0) await client.batch(statements, "write");
}

function toStoredModel(row: Record<string, unknown>): StoredModel {
  return {
    id: Number(row.id),
    name: String(row.name),
    version: String(row.version),
    source: String(row.source),
    path: String(row.path),
  };
}

/**
 * Devices (at most `limit`) with a calibrated model assigned but neither a reading (`known_devices`)
 * nor a detection state row: left by a crash while the store's forgetting of them was under way.
 */
export async function orphanedCalibratedScopes(client: Client, limit: number): Promise<string[]> {
  const result = await client.execute({
    sql: `SELECT a.scope FROM model_assignments a JOIN models m ON m.id = a.model_id
          WHERE m.source = 'calibrated'
            AND NOT EXISTS (SELECT 1 FROM known_devices k WHERE k.device = a.scope)
            AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.device = a.scope)
          ORDER BY a.scope LIMIT ?`,
    args: [limit],
  });
  return result.rows.map((row) => String(row.scope));
}
