/**
 * Offline, health-gated upgrade and rollback. `upgrade` verifies the new binary against its
 * `.sha256` and `.release.json`, stages it under `releases/<version>`, switches `current`
 * atomically, restarts Outpost (systemd unit, or the process recorded in `outpost.pid`), waits for
 * /readyz, and switches back by itself when the new release does not become ready. `current`
 * always points at a complete release, so a crash at any step leaves a consistent install.
 * The embedded manifest (policy) and models travel inside the binary and roll back with it.
 */
import { basename, join } from "node:path";
import { sha256File } from "../sha256.ts";
import { ReleaseLayout } from "./layout.ts";

export interface UpgradeOptions {
  root: string;
  /** systemd unit to restart; without it the process in `outpost.pid` is replaced. */
  service?: string;
  readyUrl: string;
  readyTimeoutMs: number;
  keep: number;
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
  const manifest = await verifyRelease(binary);
  const version = manifest.version;
  await layout.record("verified", { binary, version });
  await stage(layout, binary, version);
  const previous = await layout.currentVersion();
  if (previous === version) throw new UpgradeError(`${version} is already current`);
  await layout.switchTo(version);
  await layout.record("switched", { from: previous, to: version });
  if (await restartAndWait(layout, options)) {
    await layout.record("live", { version });
    await prune(layout, options.keep, previous);
    return version;
  }
  await layout.record("not_ready", { version, timeoutMs: options.readyTimeoutMs });
  if (previous === null) throw new UpgradeError(`${version} did not become ready and there is nothing to roll back to`);
  await layout.switchTo(previous);
  await layout.record("rolled_back", { from: version, to: previous });
  if (await restartAndWait(layout, options)) await layout.record("live", { version: previous });
  throw new UpgradeError(
    `${version} did not become ready within ${options.readyTimeoutMs} ms: rolled back to ${previous}`,
  );
}

export async function rollback(options: UpgradeOptions): Promise<string> {
  const layout = new ReleaseLayout(options.root);
  const current = await layout.currentVersion();
  const previous = await layout.previousVersion();
  if (previous === null) throw new UpgradeError("No previous release is installed to roll back to");
  await layout.switchTo(previous);
  await layout.record("switched", { from: current, to: previous, manual: true });
  if (!(await restartAndWait(layout, options))) {
    await layout.record("not_ready", { version: previous });
    throw new UpgradeError(`${previous} did not become ready after the rollback`);
  }
  await layout.record("live", { version: previous });
  return previous;
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
  await Deno.rename(staging, target);
  await layout.record("staged", { version, path: target, from: basename(binary) });
}

async function restartAndWait(layout: ReleaseLayout, options: UpgradeOptions): Promise<boolean> {
  if (options.service) {
    const restarted = await new Deno.Command("systemctl", { args: ["restart", options.service] }).output();
    await layout.record("restarted", { service: options.service, ok: restarted.success });
  } else {
    await stopProcess(layout);
    const child = new Deno.Command(join(layout.current, "outpost"), {
      args: ["run"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    child.unref();
    await Deno.writeTextFile(layout.pidFile, String(child.pid));
    await layout.record("restarted", { pid: child.pid });
  }
  return await waitReady(options.readyUrl, options.readyTimeoutMs);
}

async function stopProcess(layout: ReleaseLayout): Promise<void> {
  let pid: number;
  try {
    pid = Number(await Deno.readTextFile(layout.pidFile));
  } catch {
    return;
  }
  if (!alive(pid)) return;
  Deno.kill(pid, "SIGTERM");
  const deadline = Date.now() + 25_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  if (alive(pid)) Deno.kill(pid, "SIGKILL");
  await layout.record("stopped", { pid });
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

async function waitReady(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.status === 200) return true;
    } catch { /* not up yet */ }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}

/** Keeps the newest `keep` releases, and always the current and the previous one. */
async function prune(layout: ReleaseLayout, keep: number, previous: string | null): Promise<void> {
  const current = await layout.currentVersion();
  const versions = await layout.versions();
  const removable = versions.slice(0, Math.max(0, versions.length - keep))
    .filter((version) => version !== current && version !== previous);
  for (const version of removable) {
    await Deno.remove(layout.release(version), { recursive: true });
    await layout.record("pruned", { version });
  }
}
