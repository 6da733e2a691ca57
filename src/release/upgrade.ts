/**
 * Offline upgrade and rollback on top of the persisted state machine (`state.ts`). `upgrade`
 * takes the upgrade lock, verifies the new binary against its `.sha256` and `.release.json`,
 * stages it under `releases/<version>`, writes `pending` and switches `current`, restarts Outpost
 * (systemd unit, or the process in `outpost.pid`, started in its own session) and gates on the
 * candidate itself answering and confirming (`gate.ts`). It may be killed at any instant: the next
 * start of the service resumes the state machine and ends on a confirmed release. Every refusal is
 * recorded in `history.jsonl`.
 */
import { basename, join } from "node:path";
import type { SecretLocation } from "../config/config.ts";
import { sha256File } from "../sha256.ts";
import { type SignaturePolicy, verifyReleaseSignatures } from "./signature.ts";
import { CONFIRM_SETTLE_MS } from "./confirmation.ts";
import { gate, type GateResult, systemdMainPid } from "./gate.ts";
import { ReleaseLayout } from "./layout.ts";
import { tryLock } from "./lock.ts";
import { isSameProcess, logTail, pinExecutable, readPidFile, spawnDetached, stopRecorded } from "./process.ts";
import {
  beginPending,
  confirm,
  MAX_ATTEMPTS,
  prune,
  readState,
  resolveConfirmation,
  resumeAtStart,
  rollBack,
} from "./state.ts";

export interface UpgradeOptions {
  root: string;
  /** systemd unit to restart; without it the process in `outpost.pid` is replaced. */
  service?: string;
  readyUrl: string;
  /** The API's TLS files when it serves HTTPS (the gate pins its certificate). */
  readyTls?: { readonly certFile: string } | null;
  readyTimeoutMs: number;
  keep: number;
  /** Where the release writes its confirmation (the manifest's data dir). */
  dataDir: string;
  /** The store's key when it is encrypted: model assignments are pinned from the store (`pin.ts`). */
  encryptionKey: SecretLocation | null;
  /** The installed policy's trusted keys; without it no unsigned release is accepted (`signature.ts`). */
  signatures?: SignaturePolicy;
}
export class UpgradeError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UpgradeError";
  }
}

interface ReleaseManifest {
  version: string;
  target: string;
  binary: { file: string; sha256: string };
}

/** Checks `<binary>.sha256` and `<binary>.release.json` against the binary. */
export async function verifyRelease(binary: string): Promise<ReleaseManifest> {
  const actual = await sha256File(binary);
  let listed: string;
  let manifest: ReleaseManifest;
  try {
    listed = (await Deno.readTextFile(`${binary}.sha256`)).trim().split(/\s+/)[0];
    manifest = JSON.parse(await Deno.readTextFile(`${binary}.release.json`));
  } catch (error) {
    throw new UpgradeError(`${binary}: missing or unreadable .sha256 / .release.json beside it`, { cause: error });
  }
  if (listed !== actual) throw new UpgradeError(`${binary}: SHA-256 is ${actual}, ${binary}.sha256 says ${listed}`);
  if (manifest.binary?.sha256 !== actual) throw new UpgradeError(`${binary}: release.json names another binary`);
  if (!/^[0-9A-Za-z._-]+$/.test(manifest.version ?? "")) {
    throw new UpgradeError(`${binary}: bad version in release.json`);
  }
  const arch = Deno.build.arch;
  if (manifest.target && !manifest.target.startsWith(arch)) {
    throw new UpgradeError(`${binary}: built for ${manifest.target}, this device is ${arch}`);
  }
  return manifest;
}

export async function upgrade(binary: string, options: UpgradeOptions): Promise<string> {
  const layout = new ReleaseLayout(options.root);
  using _lock = await lockOrRefuse(layout, "upgrade");
  let manifest: ReleaseManifest;
  try {
    manifest = await verifyRelease(binary);
    await verifyReleaseSignatures(binary, options.signatures ?? { trustedKeys: [], allowUnsigned: false })
      .catch((error) => Promise.reject(new UpgradeError(error.message, { cause: error })));
  } catch (error) {
    await refuse(layout, (error as Error).message, { binary });
    throw error;
  }
  const version = manifest.version;
  await layout.record("verified", { binary, version });
  try {
    await stage(layout, binary, version);
  } catch (error) {
    if (error instanceof UpgradeError) await refuse(layout, error.message, { binary, version });
    throw error;
  }
  const state = await resolveConfirmation(layout, options);
  if (state?.state === "confirmed" && state.version === version && await layout.currentVersion() === version) {
    await refuse(layout, `${version} is already current`, { version });
    throw new UpgradeError(`${version} is already current`);
  }
  return await transition(layout, version, await confirmedFallback(layout, state, version), options);
}

/** Returns to the newest confirmed release other than the current one, offline. */
export async function rollback(options: UpgradeOptions): Promise<string> {
  const layout = new ReleaseLayout(options.root);
  using _lock = await lockOrRefuse(layout, "rollback");
  const state = await resolveConfirmation(layout, options);
  const target = await layout.previousVersion();
  if (target === null) {
    await refuse(layout, "no confirmed release to roll back to", {});
    throw new UpgradeError("No previous confirmed release is installed to roll back to");
  }
  await layout.record("rollback_requested", { to: target });
  return await transition(layout, target, await confirmedFallback(layout, state, target), options);
}

/**
 * Starts the service outside systemd the way the unit would: resume the state machine, start the
 * release in its own session, gate; a start that fails counts as an attempt, and the state machine
 * rolls a candidate back once its attempts are used up. Returns the version that runs.
 */
export async function startService(options: UpgradeOptions): Promise<string> {
  const layout = new ReleaseLayout(options.root);
  const running = await readPidFile(layout);
  if (running !== null && running !== "unverifiable" && await isSameProcess(running)) {
    throw new UpgradeError(`Outpost ${running.version} already runs as pid ${running.pid}`);
  }
  for (let start = 0; start <= MAX_ATTEMPTS; start++) {
    const result = await startAndGate(layout, options);
    if (result.gate.ok) return result.version;
    await stopRecorded(layout);
  }
  throw new UpgradeError("Outpost did not become ready (see history.jsonl and logs/)");
}

export async function stopService(options: { root: string }): Promise<void> {
  await stopRecorded(new ReleaseLayout(options.root));
}

async function transition(
  layout: ReleaseLayout,
  version: string,
  previous: string | null,
  options: UpgradeOptions,
): Promise<string> {
  const deadlineMs = (options.readyTimeoutMs + CONFIRM_SETTLE_MS) * MAX_ATTEMPTS + 60_000;
  await beginPending(layout, version, { previous, deadlineMs });
  if (await layout.lastGoodVersion() === null) await layout.markLastGood(version);
  const started = await startAndGate(layout, options);
  if (started.gate.ok && started.version === version) {
    await layout.record("live", { version, instanceId: started.gate.instanceId, pid: started.gate.pid });
    await prune(layout, options.keep);
    return version;
  }
  const reason = started.gate.ok ? `${started.version} started instead` : started.gate.reason;
  const state = await readState(layout);
  if (state?.state === "pending") await rollBack(layout, state, reason);
  if (previous === null) {
    throw new UpgradeError(`${version} failed: ${reason}; there is no confirmed release to roll back to`);
  }
  const back = await startAndGate(layout, options);
  if (back.gate.ok) await layout.record("live", { version: back.version, instanceId: back.gate.instanceId });
  throw new UpgradeError(
    `${version} failed: ${reason}: rolled back to ${previous}${back.gate.ok ? "" : ` (which is not ready either)`}`,
  );
}

/** The rollback target for a new candidate: the newest confirmed release that is not the candidate. */
async function confirmedFallback(
  layout: ReleaseLayout,
  state: Awaited<ReturnType<typeof readState>>,
  candidate: string,
): Promise<string | null> {
  if (state?.state === "pending" && state.previous !== candidate) return state.previous;
  const confirmed = (await layout.confirmed()).filter((version) => version !== candidate);
  const current = await layout.currentVersion();
  return confirmed.includes(current ?? "") ? current : confirmed.at(-1) ?? null;
}

/** One start of the service, state machine first, then the gate; a confirmed candidate is recorded. */
async function startAndGate(
  layout: ReleaseLayout,
  options: UpgradeOptions,
): Promise<{ version: string; gate: GateResult }> {
  let version: string | null;
  let result: GateResult;
  const common = {
    readyUrl: options.readyUrl,
    readyTls: options.readyTls ?? null,
    dataDir: options.dataDir,
    timeoutMs: options.readyTimeoutMs,
  };
  if (options.service) {
    // The unit's ExecStartPre resumes the state machine.
    const restarted = await new Deno.Command("systemctl", { args: ["restart", options.service] }).output();
    await layout.record("restarted", { service: options.service, ok: restarted.success });
    version = await layout.currentVersion();
    result = await gate({ ...common, version: version ?? "", mainPid: systemdMainPid(options.service) });
  } else {
    await stopRecorded(layout);
    version = await resumeAtStart(layout, options);
    if (version === null) throw new UpgradeError("No release is installed");
    const process = await spawnDetached(layout, version);
    await layout.record("restarted", { version, pid: process.pid });
    result = await gate({ ...common, version, process });
    if (result.ok) await pinExecutable(layout, process);
  }
  if (!result.ok) {
    await layout.record("not_ready", {
      version,
      reason: result.reason,
      ...(options.service ? {} : { log: await logTail(layout, version ?? "") }),
    });
  } else {
    const state = await readState(layout);
    if (state?.state === "pending" && state.candidate === version) {
      await confirm(layout, version, { instanceId: result.instanceId, store: options });
    }
  }
  return { version: version ?? "", gate: result };
}

async function lockOrRefuse(layout: ReleaseLayout, what: string): Promise<Disposable> {
  const lock = await tryLock(layout);
  if (lock !== null) return lock;
  await refuse(layout, `another upgrade or rollback holds ${layout.lockFile}`, { command: what });
  throw new UpgradeError(`Another upgrade or rollback is running (${layout.lockFile} is locked)`);
}

async function refuse(layout: ReleaseLayout, reason: string, fields: Record<string, unknown>): Promise<void> {
  await layout.record("refused", { reason, ...fields });
}

/** Copies the binary into `releases/<version>` through a staging folder renamed at the end. */
async function stage(layout: ReleaseLayout, binary: string, version: string): Promise<void> {
  const target = layout.release(version);
  if (await Deno.stat(target).then(() => true, () => false)) {
    if ((await sha256File(join(target, "outpost"))) === (await sha256File(binary))) return;
    throw new UpgradeError(`Release ${version} is installed with a different binary`);
  }
  await Deno.mkdir(layout.releases, { recursive: true });
  for await (const entry of Deno.readDir(layout.releases)) {
    if (entry.name.includes(".staging-")) await Deno.remove(join(layout.releases, entry.name), { recursive: true });
  }
  const staging = `${target}.staging-${crypto.randomUUID()}`;
  await Deno.mkdir(staging);
  await Deno.copyFile(binary, join(staging, "outpost"));
  await Deno.chmod(join(staging, "outpost"), 0o755);
  await Deno.copyFile(`${binary}.release.json`, join(staging, "release.json"));
  for (const [from, to] of [[`${binary}.sig`, "outpost.sig"], [`${binary}.release.json.sig`, "release.json.sig"]]) {
    await Deno.copyFile(from, join(staging, to)).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
  await Deno.rename(staging, target);
  await layout.record("staged", { version, path: target, from: basename(binary) });
}
