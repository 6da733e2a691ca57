/**
 * Detection forgets the devices the store forgot (retention removed every reading of theirs), so
 * that its memory, `GET /v1/devices`, the per-device metrics and the calibrated bundles on disk are
 * bounded by the devices the store holds (`spec.limits.devices`), not by every device ever seen:
 * a year of device-id churn costs nothing once retention has passed. For each such device: an
 * episode still open ends as `forgotten` (with its alert), its calibrated model is unassigned and
 * every bundle of it deleted (a model uploaded for it stays), its state row, in-memory state,
 * quarantine entry and metric series go. A device that sends again later is new: it calibrates on
 * its next readings, with versions counting on from its model history.
 *
 * Safe to repeat after a crash at any point: the state row goes last, and the sweep at startup
 * (`among` null) finds every state row the store no longer knows.
 */
import { deleteForgottenDevicesStatement, forgottenDeviceRows } from "../store/device_rows.ts";
import { commitDerived } from "../store/derived_commit.ts";
import { type AlertMessage, episodeStatements } from "./episodes.ts";
import type { Quarantine } from "./quarantine.ts";
import type { PassDeps } from "./scoring_pass.ts";

/** Devices handled per transaction (and per query: one bound parameter a device). */
const CHUNK = 200;

/**
 * Forgets the devices of `among` (or, when null, every device) that have a state row but no
 * reading left; returns how many it forgot and the alerts of the episodes it ended.
 */
export async function forgetDevices(
  deps: PassDeps,
  quarantine: Quarantine,
  among: readonly string[] | null,
): Promise<{ forgotten: number; alerts: AlertMessage[] }> {
  const alerts: AlertMessage[] = [];
  let forgotten = 0;
  // Every device at once is read a chunk at a time until a chunk is not full.
  const chunks = among === null ? null : chunked(among);
  for (let i = 0; chunks === null || i < chunks.length; i++) {
    const devices = await forgottenDeviceRows(deps.client, chunks?.[i] ?? null, CHUNK);
    if (devices.length > 0) {
      alerts.push(...await forgetChunk(deps, quarantine, devices));
      forgotten += devices.length;
    }
    if (chunks === null && devices.length < CHUNK) break;
  }
  return { forgotten, alerts };
}

async function forgetChunk(deps: PassDeps, quarantine: Quarantine, devices: string[]): Promise<AlertMessage[]> {
  const { client, registry, outbox, observer, log } = deps;
  const statements = [];
  const alerts: AlertMessage[] = [];
  const nowMs = Date.now();
  for (const device of devices) {
    const state = await deps.devices.draft(device, 0);
    if (state.episode) {
      const ended = episodeStatements("end", device, state.episode, nowMs, outbox, "forgotten");
      statements.push(...ended.statements);
      alerts.push(ended.alert);
    }
    await registry.forgetCalibrated(device);
  }
  statements.push(deleteForgottenDevicesStatement(devices));
  await commitDerived(client, statements);
  for (const device of devices) {
    deps.devices.forget(device);
    quarantine.remove(device);
    observer?.deviceForgotten?.(device);
  }
  for (const _ of alerts) observer?.episode("end");
  log.info("detect.devices_forgotten", {
    devices: devices.length,
    first: devices.slice(0, 20),
    episodesEnded: alerts.length,
  });
  return alerts;
}

function chunked(devices: readonly string[]): string[][] {
  const chunks: string[][] = [];
  for (let i = 0; i < devices.length; i += CHUNK) chunks.push(devices.slice(i, i + CHUNK));
  return chunks;
}
