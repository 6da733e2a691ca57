/**
 * What the scorer does at startup with crash markers left by a process that died (see
 * work_markers.ts), so that the same work cannot kill the process twice:
 *
 * - a calibration marker quarantines the device (not scored or calibrated again until an admin
 *   recalibrates it);
 * - a model-run marker deactivates that model for its scope;
 * - a pass marker alone (the process died elsewhere in the pass) skips the pass's readings: they
 *   are flagged, counted in their devices, and the cursor moves past them.
 *
 * Then the markers are removed and scoring resumes for everything else.
 */
import type { Client } from "@libsql/client";
import type { Logger } from "../observability/log.ts";
import { cursorStatement } from "../store/cursors.ts";
import { commitDerived } from "../store/derived_commit.ts";
import { countSkippedReadingsStatement } from "../store/device_rows.ts";
import { flagUnscoredStatement } from "../store/scores.ts";
import type { DeviceStates } from "./device_states.ts";
import type { Quarantine } from "./quarantine.ts";
import type { ModelRegistry } from "./registry.ts";
import type { ScorerObserver } from "./scorer_observer.ts";
import { SCORE_CURSOR } from "./scoring_pass.ts";
import type { WorkMarker, WorkMarkers } from "./work_markers.ts";

export interface RecoveryDeps {
  client: Client;
  registry: ModelRegistry;
  devices: DeviceStates;
  quarantine: Quarantine;
  markers: WorkMarkers;
  log: Logger;
  observer: ScorerObserver | null;
}

export async function recoverInterruptedWork(deps: RecoveryDeps, options: { cursor: number }): Promise<void> {
  deps.quarantine.reconcile(await deps.devices.quarantined());
  const leftovers = deps.markers.leftovers();
  let explained = false;
  for (const marker of leftovers) {
    if (marker.kind === "calibration") {
      await quarantineDevice(deps, marker);
      explained = true;
    } else if (marker.kind === "inference") {
      const reason = `the process died while this model ran on ${marker.rows} rows (started ${marker.startedAt})`;
      deps.registry.deactivate(marker.modelId, reason);
      deps.observer?.modelDeactivated?.("process_died");
      explained = true;
    }
  }
  const pass = leftovers.find((marker) => marker.kind === "pass");
  if (pass?.kind === "pass" && !explained) await skipPass(deps, pass, options.cursor);
  deps.markers.clear();
}

async function quarantineDevice(deps: RecoveryDeps, marker: Extract<WorkMarker, { kind: "calibration" }>) {
  const reason = `The process died while calibrating on ${marker.readings} readings (ids ${
    marker.afterId + 1
  } to ${marker.readingId}, started ${marker.startedAt}); recalibrate to try again`;
  deps.quarantine.add(marker.device, reason);
  await deps.devices.quarantine(marker.device, marker.readingId);
  deps.log.error("detect.device_quarantined", { device: marker.device, work: "calibration", reason });
  deps.observer?.quarantined?.("calibration");
}

async function skipPass(deps: RecoveryDeps, pass: Extract<WorkMarker, { kind: "pass" }>, cursor: number) {
  const from = Math.max(cursor, pass.fromId - 1);
  if (pass.toId <= from) return;
  const flags = `not scored: the process died during the scoring pass over readings ${pass.fromId} to ${pass.toId}`;
  const [skipped] = await commitDerived(deps.client, [
    flagUnscoredStatement(flags, from, pass.toId),
    // Devices count the skipped readings; a device first seen here calibrates on what follows.
    countSkippedReadingsStatement(from, pass.toId, Date.now()),
    cursorStatement(SCORE_CURSOR, pass.toId),
  ]);
  deps.log.error("detect.pass_skipped", { fromId: from + 1, toId: pass.toId, readings: skipped.rowsAffected, flags });
  deps.observer?.unscored?.("pass_interrupted", skipped.rowsAffected);
}
