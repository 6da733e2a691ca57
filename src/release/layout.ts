import { basename, dirname, join } from "node:path";

/**
 * The device layout: `<root>/releases/<version>/outpost` (+ `release.json`), `<root>/current` a
 * symlink to one release, `<root>/history.jsonl` one JSON line per step, `<root>/outpost.pid`
 * when Outpost runs without systemd.
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

  get pidFile(): string {
    return join(this.root, "outpost.pid");
  }

  release(version: string): string {
    return join(this.releases, version);
  }

  /** The version `current` points at, or null before the first install. */
  async currentVersion(): Promise<string | null> {
    try {
      return basename(await Deno.readLink(this.current));
    } catch {
      return null;
    }
  }

  /**
   * Points `current` at a release atomically: a new link renamed over the old one. The link is
   * made with `ln -s` because Deno.symlink demands unscoped --allow-read and --allow-write.
   */
  async switchTo(version: string): Promise<void> {
    const temporary = join(dirname(this.current), `.current-${crypto.randomUUID()}`);
    const linked = await new Deno.Command("ln", { args: ["-s", join("releases", version), temporary], stderr: "piped" })
      .output();
    if (!linked.success) throw new Error(`ln -s failed: ${new TextDecoder().decode(linked.stderr)}`);
    await Deno.rename(temporary, this.current);
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
    await Deno.writeTextFile(join(this.root, "history.jsonl"), line + "\n", { append: true });
    console.error(line);
  }

  /** The last version that was live before `current` (from the history), if still installed. */
  async previousVersion(): Promise<string | null> {
    const current = await this.currentVersion();
    let text = "";
    try {
      text = await Deno.readTextFile(join(this.root, "history.jsonl"));
    } catch {
      return null;
    }
    const installed = new Set(await this.versions());
    const live = text.trim().split("\n").map((line) => JSON.parse(line))
      .filter((entry) => entry.step === "live" && entry.version !== current && installed.has(entry.version));
    return live.length === 0 ? null : live[live.length - 1].version;
  }
}
