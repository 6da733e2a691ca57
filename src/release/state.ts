/**
 * The upgrade as a state machine persisted in `<root>/upgrade-state.json`, not as a process:
 *
 * ```
 * pending(candidate, previous, attempts, maxAttempts, deadline) ──confirmation──▶ confirmed(version)
 *        │ attempts used up or deadline passed
 *        ▼
 * rolled_back(from, to)
 * ```
 *
 * Rules it always keeps:
 * - The state is written (atomically) before `current` moves, and `current` is then made to agree
 *   with it: pending → candidate, confirmed → version, rolled_back → to. Whoever finds them
 *   disagreeing (a crash between the two writes) finishes the move.
 * - Every start of the service goes through `resumeAtStart` first (systemd's ExecStartPre, `outpost
 *   service start`, the upgrade's own restart), which counts the attempt, or rolls back before
 *   anything else runs when the candidate is out of attempts or past its deadline.
 * - A release is confirmed only by its own confirmation (`confirmation.ts`) from a run that answered
 *   as itself; only confirmed releases are rollback targets or kept by pruning.
 * - A release's model assignments are pinned when it confirms and when a switch leaves it; before
 *   the first start after a switch, the assignments of the release about to run are restored
 *   (`pin.ts`). `pinStep` and `restored` make each step happen once, whatever crashes between.
 */
import type { StoreLocation } from "../store/database.ts";
import { readConfirmation } from "./confirmation.ts";
import { readJson, type ReleaseLayout, writeJsonAtomic } from "./layout.ts";
import { restorePin, writePin } from "./pin.ts";

export type UpgradeState =
  | {
    state: "pending";
    candidate: string;
    previous: string | null;
    attempts: number;
    maxAttempts: number;
    /** Epoch ms: not confirmed by then means rolled back. */
    deadline: number;
    since: string;
    /** `saved`: the previous release's assignments are pinned; `restored`: the candidate's are in place. */
    pinStep?: "saved" | "restored";
  }
  | { state: "confirmed"; version: string; instanceId: string; at: string }
  | {
    state: "rolled_back";
    from: string;
    to: string | null;
    reason: string;
    at: string;
    /** The assignments of `to` are in place again. */
    restored?: boolean;
  };

export const MAX_ATTEMPTS = 3;

export async function readState(layout: ReleaseLayout): Promise<UpgradeState | null> {
  return await readJson<UpgradeState>(layout.stateFile);
}

/** Writes `pending` and only then points `current` at the candidate. */
export async function beginPending(
  layout: ReleaseLayout,
  candidate: string,
  options: { previous: string | null; deadlineMs: number; maxAttempts?: number },
): Promise<void> {
  const state: UpgradeState = {
    state: "pending",
    candidate,
    previous: options.previous,
    attempts: 0,
    maxAttempts: options.maxAttempts ?? MAX_ATTEMPTS,
    deadline: Date.now() + options.deadlineMs,
    since: new Date().toISOString(),
  };
  await writeJsonAtomic(layout.stateFile, state);
  await layout.record("pending", { ...state, deadline: new Date(state.deadline).toISOString() });
  await layout.switchTo(candidate);
  await layout.record("switched", { from: options.previous, to: candidate });
}

/**
 * Confirms a pending candidate if its confirmation is in the data dir (written by the candidate
 * after `pending` began). Returns the state after.
 */
export async function resolveConfirmation(layout: ReleaseLayout, store: StoreLocation): Promise<UpgradeState | null> {
  const state = await readState(layout);
  if (state?.state !== "pending") return state;
  const confirmation = await readConfirmation(store.dataDir);
  if (
    confirmation === null || confirmation.version !== state.candidate ||
    Date.parse(confirmation.confirmedAt) < Date.parse(state.since)
  ) return state;
  return await confirm(layout, state.candidate, { instanceId: confirmation.instanceId, store });
}

/** Confirms `version` and pins what it runs with (`pin.ts`). */
export async function confirm(
  layout: ReleaseLayout,
  version: string,
  options: { instanceId: string; store: StoreLocation },
): Promise<UpgradeState> {
  const { instanceId } = options;
  await writePin(layout, version, { store: options.store, when: "confirmed" }).catch((error) =>
    layout.record("pin_failed", { version, reason: (error as Error).message })
  );
  const state: UpgradeState = { state: "confirmed", version, instanceId, at: new Date().toISOString() };
  await layout.addConfirmed(version);
  await layout.markLastGood(version);
  await writeJsonAtomic(layout.stateFile, state);
  await layout.record("confirmed", { version, instanceId });
  return state;
}

/** Switches back to `previous` (a confirmed release), state first. */
export async function rollBack(
  layout: ReleaseLayout,
  pending: Extract<UpgradeState, { state: "pending" }>,
  reason: string,
): Promise<UpgradeState> {
  const state: UpgradeState = {
    state: "rolled_back",
    from: pending.candidate,
    to: pending.previous,
    reason,
    at: new Date().toISOString(),
    // A candidate that never ran left the previous release's assignments as they were.
    restored: pending.pinStep === undefined,
  };
  await writeJsonAtomic(layout.stateFile, state);
  if (pending.previous !== null) await layout.switchTo(pending.previous);
  await layout.record("rolled_back", { from: pending.candidate, to: pending.previous, reason });
  return state;
}

/**
 * Run before every start of the service: confirms a candidate that confirmed itself, rolls back one
 * that is out of attempts or time, otherwise counts this start as one more attempt. Finishes a move
 * of `current` that a crash interrupted. Returns the version that is to start.
 */
export async function resumeAtStart(layout: ReleaseLayout, store: StoreLocation): Promise<string | null> {
  let state = await resolveConfirmation(layout, store);
  if (state?.state === "pending") {
    const outOfAttempts = state.attempts >= state.maxAttempts;
    const late = Date.now() > state.deadline;
    if (outOfAttempts || late) {
      const reason = outOfAttempts
        ? `not confirmed after ${state.attempts} starts`
        : `not confirmed by ${new Date(state.deadline).toISOString()}`;
      state = await rollBack(layout, state, reason);
    } else {
      state = { ...state, attempts: state.attempts + 1 };
      await writeJsonAtomic(layout.stateFile, state);
      await layout.record("attempt", { version: state.candidate, attempt: state.attempts, of: state.maxAttempts });
      state = await pinAtSwitch(layout, state, store);
    }
  }
  if (state?.state === "rolled_back" && !state.restored) {
    if (state.to !== null) await restoreQuietly(layout, state.to, store);
    state = { ...state, restored: true };
    await writeJsonAtomic(layout.stateFile, state);
  }
  const wanted = state === null
    ? null
    : state.state === "pending"
    ? state.candidate
    : state.state === "confirmed"
    ? state.version
    : state.to;
  if (wanted !== null && wanted !== await layout.currentVersion()) {
    await layout.switchTo(wanted);
    await layout.record("switched", { to: wanted, resumed: true });
  }
  return await layout.currentVersion();
}

/**
 * Before a candidate's first run (the service is stopped): pins the assignments of the release it
 * replaces, then restores the candidate's own (a release that was confirmed before, e.g. the target
 * of a manual rollback). Each step is recorded in the state before the next one runs.
 */
async function pinAtSwitch(
  layout: ReleaseLayout,
  pending: Extract<UpgradeState, { state: "pending" }>,
  store: StoreLocation,
): Promise<UpgradeState> {
  let state = pending;
  if (state.pinStep === undefined) {
    if (state.previous !== null) {
      await writePin(layout, state.previous, { store, when: "left" }).catch((error) =>
        layout.record("pin_failed", { version: state.previous, reason: (error as Error).message })
      );
    }
    state = { ...state, pinStep: "saved" };
    await writeJsonAtomic(layout.stateFile, state);
  }
  if (state.pinStep === "saved") {
    await restoreQuietly(layout, state.candidate, store);
    state = { ...state, pinStep: "restored" };
    await writeJsonAtomic(layout.stateFile, state);
  }
  return state;
}

/** A restore that fails is recorded and the release starts with the assignments as they are. */
async function restoreQuietly(layout: ReleaseLayout, version: string, store: StoreLocation): Promise<void> {
  try {
    await restorePin(layout, version, { store });
  } catch { /* recorded by restorePin */ }
}

/** Keeps the last `keep` confirmed releases and the current one; removes everything else. */
export async function prune(layout: ReleaseLayout, keep: number): Promise<void> {
  const current = await layout.currentVersion();
  const lastGood = await layout.lastGoodVersion();
  const kept = new Set([...(await layout.confirmed()).slice(-keep), current, lastGood]);
  const state = await readState(layout);
  if (state?.state === "pending") kept.add(state.candidate).add(state.previous);
  for (const version of await layout.versions()) {
    if (kept.has(version)) continue;
    await Deno.remove(layout.release(version), { recursive: true });
    await layout.record("pruned", { version });
  }
}
