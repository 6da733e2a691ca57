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
import { acceptCurrent } from "./baseline_tracker.ts";
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
  return await acceptPresentState(deps, event.device, "false_alarm", [
    eventVerdictStatement(eventId, "false_alarm", Date.now()),
  ]);
}

export function acceptOperatingPoint(deps: PassDeps, device: string): Promise<OperatorOutcome> {
  return acceptPresentState(deps, device, "accepted", []);
}

async function acceptPresentState(
  deps: PassDeps,
  device: string,
  reason: EventEndReason,
  statements: InStatement[],
): Promise<OperatorOutcome> {
  const { devices, registry } = deps;
  const state = await devices.draft(device, await maxReadingId(deps.client) + 1);
  const baselineAccepted = await acceptBaseline(deps, state);
  const alerts: AlertMessage[] = [];
  const episode = state.episode;
  if (episode) {
    const ended = episodeStatements("end", device, episode, Math.max(Date.now(), episode.startTs), deps.outbox, reason);
    statements.push(...ended.statements);
    alerts.push(ended.alert);
    state.episode = null;
  }
  state.debouncer?.settle();
  state.anomaly = false;
  statements.push(...devices.statements([state]));
  await commitDerived(deps.client, statements);
  devices.adopt([state]);
  if (episode) deps.observer?.episode("end");
  deps.log.info(reason === "false_alarm" ? "detect.false_alarm" : "detect.operating_point_accepted", {
    device,
    event: episode?.id ?? null,
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
  acceptCurrent(state.baseline, windowFeatures(window, params.floor));
  return true;
}
