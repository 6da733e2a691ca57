/**
 * Detection forgets the devices the store forgot (retention removed every reading of theirs), so
 * that its memory, `GET /v1/devices`, the per-device metrics and the calibrated bundles on disk are
 * bounded by the devices the store holds (`spec.limits.devices`), not by every device ever seen:
 * a year of device-id churn costs nothing once retention has passed. For each such device: an
 * episode still open ends as `forgotten` (with its alert, at the device's last reading time), its
 * state row, in-memory state and metric series go, and then its calibrated model is unassigned
 * and its bundles deleted (a model uploaded for it stays). A device that sends again later is new:
 * it calibrates on its next readings, with versions counting on from its model history. A
 * quarantined device is not forgotten: its quarantine holds until an operator recalibrates it.
 *
 * Ingest does not wait for this: a device can send again while it is being forgotten. One
 * transaction therefore deletes the state rows the store still does not know (and only those),
 * ends the open episodes, and takes the ended episodes off the rows of devices that came back
 * (they keep their state, minus that episode). Models are dropped after that commit, for the
 * devices it deleted; a crash in between leaves a calibrated model of a device with neither
 * readings nor state, which the sweep at start drops (`forgetOrphanedModels`).
 */
import type { InStatement } from "@libsql/client";
import { deleteForgottenDevicesStatement, dropEpisodesStatement, forgottenDeviceRows } from "../store/device_rows.ts";
import { commitDerived } from "../store/derived_commit.ts";
import { orphanedCalibratedScopes } from "../store/models_table.ts";
import { type AlertMessage, episodeStatements } from "./episodes.ts";
import type { PassDeps } from "./scoring_pass.ts";

/** Devices handled per transaction (and per query: one bound parameter a device). */
export const FORGET_CHUNK = 200;

/**
 * Forgets the devices of `among` (at most FORGET_CHUNK names), or up to FORGET_CHUNK of every
 * device when null, that have a state row but no reading left and are not quarantined. Returns
 * how many it examined, those it forgot, and the alerts of the episodes it ended.
 */
export async function forgetSome(
  deps: PassDeps,
  among: readonly string[] | null,
): Promise<{ examined: number; forgotten: string[]; alerts: AlertMessage[] }> {
  const { client, registry, outbox, observer, log } = deps;
  const candidates = await forgottenDeviceRows(client, among, FORGET_CHUNK);
  if (candidates.length === 0) return { examined: 0, forgotten: [], alerts: [] };
  const statements: InStatement[] = [deleteForgottenDevicesStatement(candidates)];
  const alerts: AlertMessage[] = [];
  for (const device of candidates) {
    let state;
    try {
      state = await deps.devices.draft(device, 0);
    } catch (error) {
      // A state that cannot be read (say a damaged row) is forgotten all the same.
      log.warn("detect.forget_state_unreadable", { device, error });
      continue;
    }
    if (!state.episode) continue;
    const endTs = state.baseline?.lastTs ?? state.episode.startTs;
    const ended = episodeStatements("end", device, state.episode, endTs, outbox, "forgotten");
    statements.push(...ended.statements);
    alerts.push(ended.alert);
  }
  statements.push(dropEpisodesStatement(candidates));
  const committed = await commitDerived(client, statements);
  const forgotten = committed[0].rows.map((row) => String(row.device));
  // Devices that came back meanwhile reload their state (without the ended episode) from the store.
  for (const device of candidates) deps.devices.forget(device);
  for (const device of forgotten) {
    await registry.forgetCalibrated(device);
    observer?.deviceForgotten?.(device);
  }
  for (const _ of alerts) observer?.episode("end");
  log.info("detect.devices_forgotten", {
    devices: forgotten.length,
    first: forgotten.slice(0, 20),
    cameBack: candidates.length - forgotten.length,
    episodesEnded: alerts.length,
  });
  return { examined: candidates.length, forgotten, alerts };
}

/**
 * Drops up to FORGET_CHUNK calibrated models still assigned to devices with neither readings nor
 * state (a crash after a forget's commit); returns how many scopes it examined.
 */
export async function forgetOrphanedModels(deps: PassDeps): Promise<number> {
  const scopes = await orphanedCalibratedScopes(deps.client, FORGET_CHUNK);
  for (const device of scopes) await deps.registry.forgetCalibrated(device);
  if (scopes.length > 0) deps.log.info("detect.orphaned_models_forgotten", { devices: scopes.length });
  return scopes.length;
}
