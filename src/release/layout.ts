import { basename, dirname, join } from "node:path";

/**
 * The device layout:
 *
 * ```
 * <root>/releases/<version>/outpost (+ release.json)
 * <root>/current            symlink: the release the next start runs
 * <root>/last-good          symlink: the last confirmed release (the first install until one confirms);
 *                           its binary resumes an interrupted upgrade (systemd's ExecStartPre)
 * <root>/upgrade-state.json the upgrade state machine (pending → confirmed | rolled_back)
 * <root>/confirmed.json     every confirmed release, oldest first: the only rollback targets
 * <root>/history.jsonl      one JSON line per step, refusals included
 * <root>/outpost.pid        {pid, starttime, exe} when Outpost runs without systemd
 * <root>/logs/<version>.log stdout/stderr of a release started without systemd
 * <root>/upgrade.lock       flock()ed by the one upgrade or rollback running
 * ```
 *
 * Every state file is written whole to a temporary file, fsynced, renamed over the old one and the
 * folder fsynced, so a crash leaves the old or the new content, never a mix.
 */
export class ReleaseLayout {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  get releases(): string {
    return join(this.root, "releases");
  }

  get current(): string {
    return join(this.root, "current");
  }

  get lastGood(): string {
    return join(this.root, "last-good");
  }

  get pidFile(): string {
    return join(this.root, "outpost.pid");
  }

  get stateFile(): string {
    return join(this.root, "upgrade-state.json");
  }

  get confirmedFile(): string {
    return join(this.root, "confirmed.json");
  }

  get lockFile(): string {
    return join(this.root, "upgrade.lock");
  }

  logFile(version: string): string {
    return join(this.root, "logs", `${version}.log`);
  }

  release(version: string): string {
    return join(this.releases, version);
  }

  /** The version `current` points at, or null before the first install. */
  async currentVersion(): Promise<string | null> {
    return await linkTarget(this.current);
  }

  async lastGoodVersion(): Promise<string | null> {
    return await linkTarget(this.lastGood);
  }

  /** Points `current` at a release atomically: a new link renamed over the old one. */
  async switchTo(version: string): Promise<void> {
    await relink(this.current, version);
  }

  async markLastGood(version: string): Promise<void> {
    await relink(this.lastGood, version);
  }

  /** Installed versions, oldest first (by when they were staged). */
  async versions(): Promise<string[]> {
    const found: { name: string; mtime: number }[] = [];
    try {
      for await (const entry of Deno.readDir(this.releases)) {
        if (!entry.isDirectory || entry.name.includes(".staging-")) continue;
        const info = await Deno.stat(join(this.releases, entry.name));
        found.push({ name: entry.name, mtime: info.mtime?.getTime() ?? 0 });
      }
    } catch { /* no releases yet */ }
    return found.sort((a, b) => a.mtime - b.mtime).map((entry) => entry.name);
  }

  async record(step: string, fields: Record<string, unknown> = {}): Promise<void> {
    const line = JSON.stringify({ ts: new Date().toISOString(), step, ...fields });
    await Deno.mkdir(this.root, { recursive: true });
    const file = await Deno.open(join(this.root, "history.jsonl"), { append: true, create: true });
    try {
      await file.write(new TextEncoder().encode(line + "\n"));
      await file.sync();
    } finally {
      file.close();
    }
    console.error(line);
  }

  /** Confirmed releases still installed, oldest confirmation first. */
  async confirmed(): Promise<string[]> {
    const list = await readJson<{ version: string; at: string }[]>(this.confirmedFile) ?? [];
    const installed = new Set(await this.versions());
    const order = list.map((entry) => entry.version).filter((version) => installed.has(version));
    // A release confirmed twice counts from its last confirmation.
    return order.filter((version, index) => order.lastIndexOf(version) === index);
  }

  async addConfirmed(version: string): Promise<void> {
    const list = await readJson<{ version: string; at: string }[]>(this.confirmedFile) ?? [];
    list.push({ version, at: new Date().toISOString() });
    await writeJsonAtomic(this.confirmedFile, list.slice(-50));
  }

  /** The newest confirmed release other than `current`: the only kind of rollback target. */
  async previousVersion(): Promise<string | null> {
    const current = await this.currentVersion();
    const confirmed = (await this.confirmed()).filter((version) => version !== current);
    return confirmed.at(-1) ?? null;
  }
}

async function linkTarget(path: string): Promise<string | null> {
  try {
    return basename(await Deno.readLink(path));
  } catch {
    return null;
  }
}

/** Made with `ln -s` because Deno.symlink demands unscoped --allow-read and --allow-write. */
async function relink(link: string, version: string): Promise<void> {
  const temporary = join(dirname(link), `.${basename(link)}-${crypto.randomUUID()}`);
  const linked = await new Deno.Command("ln", { args: ["-s", join("releases", version), temporary], stderr: "piped" })
    .output();
  if (!linked.success) throw new Error(`ln -s failed: ${new TextDecoder().decode(linked.stderr)}`);
  await Deno.rename(temporary, link);
  await syncFolder(dirname(link));
}

export async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    if (error instanceof SyntaxError) return null;
    throw error;
  }
}

/** Temporary file, fsync, rename over, fsync the folder. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}-${crypto.randomUUID()}`);
  const file = await Deno.open(temporary, { write: true, createNew: true, mode: 0o644 });
  try {
    await file.write(new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n"));
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(temporary, path);
  await syncFolder(dirname(path));
}

async function syncFolder(path: string): Promise<void> {
  try {
    const folder = await Deno.open(path, { read: true });
    try {
      await folder.sync();
    } finally {
      folder.close();
    }
  } catch { /* some file systems refuse fsync on a folder; the rename is still atomic */ }
}
