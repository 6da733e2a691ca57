/**
 * The append-only history of each scope's model (`model_assignment_history`, migration 10).
 *
 * Rules it keeps:
 * - A change of a scope's assignment writes its row in the change's own transaction (the
 *   statements here are batched with it by src/store/models_table.ts), so the history never
 *   shows a change that did not commit nor misses one that did. A deactivation is not an
 *   assignment change (it lives beside the registry, src/detect/registry.ts) and an operator's
 *   recalibration does not change the assignment: their rows are written on their own.
 * - Rows are never updated. The model's name, version and hash are copied into the row, so a
 *   row still says which model it was once the calibrated `models` row is pruned.
 * - Bounded: at most `HISTORY_ROWS_PER_SCOPE` rows a scope (the oldest go with each new row),
 *   and retention deletes rows older than `spec.storage.keepHours.modelHistory`, except the
 *   newest row of each scope with a model now, which says how its present assignment came about.
 */
import type { Client, InStatement } from "@libsql/client";

/** Rows kept per scope at most; older rows are deleted as new ones are written. */
export const HISTORY_ROWS_PER_SCOPE = 200;

/**
 * What happened: `uploaded` and `calibrated` made a new model the scope's; `rollback` returned
 * to the previous one; `release_restore` set a release's pinned model, `release_unassigned`
 * dropped one the release did not pin; `unassigned` dropped the scope's model; `deactivated`
 * stopped the model running (with the reason); `recalibration` is an operator's request to
 * calibrate again (the model keeps scoring meanwhile); `recorded` is the assignment found when
 * the history began.
 */
export type HistoryKind =
  | "uploaded"
  | "calibrated"
  | "rollback"
  | "release_restore"
  | "release_unassigned"
  | "unassigned"
  | "deactivated"
  | "recalibration"
  | "recorded";

export interface HistoryEntry {
  id: number;
  scope: string;
  /** Epoch ms on the store's clock. */
  tsMs: number;
  kind: HistoryKind;
  /** The model the row is about (the scope's model after the change; null once it has none). */
  modelId: number | null;
  name: string | null;
  version: string | null;
  sha256: string | null;
  /** The scope's previous model after the change (what a rollback would return to). */
  previousModelId: number | null;
  reason: string | null;
  /** The id of the trusted key whose signature an upload carried, when one was verified. */
  keyId: string | null;
}

const INSERT_COLUMNS =
  "INSERT INTO model_assignment_history (scope, ts_ms, kind, model_id, name, version, sha256, previous_model_id, reason, key_id)";

/**
 * Statements that record `scope`'s assignment as it stands (after the change batched before
 * them) and keep the scope within its row bound. With `onlyIfChanged`, nothing is recorded
 * unless the statement just before changed a row (a rollback with no previous model).
 */
export function recordAssignmentStatements(
  entry: { scope: string; kind: HistoryKind; reason?: string | null; keyId?: string | null },
  nowMs: number,
  options: { onlyIfChanged?: boolean } = {},
): InStatement[] {
  return [
    {
      sql: `${INSERT_COLUMNS}
            SELECT a.scope, ?, ?, a.model_id, m.name, m.version, m.sha256, a.previous_model_id, ?, ?
            FROM model_assignments a LEFT JOIN models m ON m.id = a.model_id
            WHERE a.scope = ?${options.onlyIfChanged ? " AND changes() > 0" : ""}`,
      args: [nowMs, entry.kind, entry.reason ?? null, entry.keyId ?? null, entry.scope],
    },
    capStatement(entry.scope),
  ];
}

/**
 * Statements that record an event about `modelId` in `scope` that does not change the
 * assignment (a deactivation, a recalibration request), or the loss of the scope's model
 * (`modelId` null: the scope's current model is named when it still has one). With
 * `onlyIfAssigned`, nothing is recorded for a scope without an assignment.
 */
export function recordEventStatements(
  entry: { scope: string; kind: HistoryKind; modelId: number | null; reason?: string | null },
  nowMs: number,
  options: { onlyIfAssigned?: boolean } = {},
): InStatement[] {
  return [
    {
      sql: `${INSERT_COLUMNS}
            SELECT ?1, ?2, ?3, m.id, m.name, m.version, m.sha256,
              (SELECT previous_model_id FROM model_assignments WHERE scope = ?1), ?4, NULL
            FROM (SELECT 1) LEFT JOIN models m
              ON m.id = coalesce(?5, (SELECT model_id FROM model_assignments WHERE scope = ?1))${
        options.onlyIfAssigned ? " WHERE EXISTS (SELECT 1 FROM model_assignments WHERE scope = ?1)" : ""
      }`,
      args: [entry.scope, nowMs, entry.kind, entry.reason ?? null, entry.modelId],
    },
    capStatement(entry.scope),
  ];
}

function capStatement(scope: string): InStatement {
  return {
    sql: `DELETE FROM model_assignment_history WHERE scope = ?1 AND id <= (
            SELECT id FROM model_assignment_history WHERE scope = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)`,
    args: [scope, HISTORY_ROWS_PER_SCOPE],
  };
}

/** A page of `scope`'s history, newest first; `beforeId` continues a page. */
export async function historyPage(
  client: Client,
  query: { scope: string; beforeId: number | null; limit: number },
): Promise<{ entries: HistoryEntry[]; more: boolean }> {
  const result = await client.execute({
    sql: `SELECT id, scope, ts_ms, kind, model_id, name, version, sha256, previous_model_id, reason, key_id
          FROM model_assignment_history WHERE scope = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?`,
    args: [query.scope, query.beforeId, query.beforeId, query.limit + 1],
  });
  const text = (value: unknown) => value === null ? null : String(value);
  const id = (value: unknown) => value === null ? null : Number(value);
  return {
    entries: result.rows.slice(0, query.limit).map((row) => ({
      id: Number(row.id),
      scope: String(row.scope),
      tsMs: Number(row.ts_ms),
      kind: String(row.kind) as HistoryKind,
      modelId: id(row.model_id),
      name: text(row.name),
      version: text(row.version),
      sha256: text(row.sha256),
      previousModelId: id(row.previous_model_id),
      reason: text(row.reason),
      keyId: text(row.key_id),
    })),
    more: result.rows.length > query.limit,
  };
}

/**
 * Retention: deletes rows written before `cutoffMs` (store clock), except the newest of each scope
 * that has a model now (how it came about), at most `chunk` at a time: the history of a scope
 * without one, e.g. a device the store forgot, goes entirely. Returns the rows deleted.
 */
export async function pruneHistory(client: Client, cutoffMs: number, chunk: number): Promise<number> {
  let total = 0;
  while (true) {
    const result = await client.execute({
      sql: `DELETE FROM model_assignment_history WHERE id IN (
              SELECT id FROM model_assignment_history WHERE ts_ms < ?
                AND id NOT IN (SELECT max(id) FROM model_assignment_history
                               WHERE scope IN (SELECT scope FROM model_assignments) GROUP BY scope) LIMIT ?)`,
      args: [cutoffMs, chunk],
    });
    total += result.rowsAffected;
    if (result.rowsAffected < chunk) return total;
  }
}
