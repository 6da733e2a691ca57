/**
 * What an operator can tell the detector (admin token, README "Detection"): that an event was a
 * false alarm (recorded on the event; the baseline accepts the device's present state and an
 * open episode ends as `false_alarm`), or that the device's present operating point is normal
 * (the baseline accepts it; an open episode ends as `accepted`). Each is one transaction with the
 * device's state, run between scoring passes (Scorer serialises them).
 */
import type { InStatement } from "@libsql/client";
import { commitDerived } from "../store/derived_commit.ts";
import { type EventEndReason, eventVerdictStatement, readEvent } from "../store/events_table.ts";
import { maxReadingId } from "../store/readings.ts";
import { windowFeatures } from "./baseline_features.ts";
import { takeAsNormal } from "./baseline_tracker.ts";
import type { DeviceState } from "./device_states.ts";
import { type AlertMessage, episodeStatements } from "./episodes.ts";
import type { PassDeps } from "./scoring_pass.ts";

/** No event has this id. */
export class UnknownEventError extends Error {
  readonly id: number;
  constructor(id: number) {
    super(`Unknown event: ${id}`);
    this.name = "UnknownEventError";
    this.id = id;
  }
}

export interface OperatorOutcome {
  device: string;
  /** The open episode this ended, if any. */
  endedEvent: number | null;
  /** Whether the device's baseline moved to its present state (calibrated models only). */
  baselineAccepted: boolean;
  alerts: AlertMessage[];
}

export async function markFalseAlarm(deps: PassDeps, eventId: number): Promise<OperatorOutcome> {
  const event = await readEvent(deps.client, eventId);
  if (!event) throw new UnknownEventError(eventId);
  return await acceptPresentState(deps, event.device, "false_alarm", eventId, [
    eventVerdictStatement(eventId, "false_alarm", Date.now()),
  ]);
}

export function acceptOperatingPoint(deps: PassDeps, device: string): Promise<OperatorOutcome> {
  return acceptPresentState(deps, device, "accepted", null, []);
}

/**
 * Moves an active device's baseline to its present state and ends its open episode. With an
 * `eventId` that is not the open episode, or for a device no model scores yet (calibrating for
 * the first time) or quarantined, only the verdict is recorded.
 */
async function acceptPresentState(
  deps: PassDeps,
  device: string,
  reason: EventEndReason,
  eventId: number | null,
  statements: InStatement[],
): Promise<OperatorOutcome> {
  const { devices, registry } = deps;
  const state = await devices.draft(device, await maxReadingId(deps.client) + 1);
  // A verdict on an event that is not the device's open episode (an old one, closed) records the
  // verdict only: the present state is not what the verdict was about (another episode may be open,
  // or the plant may have moved on), so neither the baseline, the debouncer nor an episode changes.
  const onOldEvent = eventId !== null && state.episode?.id !== eventId;
  // A model scores the device (its own, also while it recalibrates, or the global one).
  const scored = state.state !== "quarantined" && state.readings > 0 && registry.modelIdFor(device) !== undefined;
  if (!scored || onOldEvent) {
    await commitDerived(deps.client, statements);
    if (onOldEvent) deps.log.info("detect.false_alarm", { device, eventId, endedEvent: null, baselineAccepted: false });
    return { device, endedEvent: null, baselineAccepted: false, alerts: [] };
  }
  const episode = state.episode;
  const baselineAccepted = await acceptBaseline(deps, state);
  const alerts: AlertMessage[] = [];
  if (episode) {
    // Events are in reading time: the episode ends at the device's latest scored reading.
    const endTs = state.baseline?.lastTs ?? Date.now();
    const ended = episodeStatements("end", device, episode, endTs, deps.outbox, reason);
    statements.push(...ended.statements);
    alerts.push(ended.alert);
    state.episode = null;
  }
  // The next onset needs `onCount` new exceeding readings, after a restart too (settledAfterId).
  state.debouncer?.settle();
  if (state.baseline) state.baseline.settledAfterId = state.lastReadingId;
  state.anomaly = false;
  statements.push(...devices.statements([state]));
  await commitDerived(deps.client, statements);
  devices.adopt([state]);
  if (episode) deps.observer?.episode("end");
  deps.log.info(reason === "false_alarm" ? "detect.false_alarm" : "detect.operating_point_accepted", {
    device,
    eventId,
    endedEvent: episode?.id ?? null,
    baselineAccepted,
    model: registry.modelIdFor(device) ?? null,
  });
  return { device, endedEvent: episode?.id ?? null, baselineAccepted, alerts };
}

/** Moves a calibrated device's baseline to the features of its latest readings. */
async function acceptBaseline(deps: PassDeps, state: DeviceState): Promise<boolean> {
  const modelId = deps.registry.modelIdFor(state.device);
  if (modelId === undefined || state.lastReadingId === 0) return false;
  const model = await deps.registry.load(modelId);
  const params = model.manifest.baseline;
  if (!params) return false;
  const window = await deps.devices.window(state, model, state.lastReadingId + 1);
  if (!state.baseline || window.length === 0) return false;
  takeAsNormal(state.baseline, windowFeatures(window, params.floor), state.readings);
  return true;
}
