/**
 * A memory cgroup with the limit systemd's `MemoryMax=` sets, for running the real program the way
 * the unit runs it: every page it maps or caches is charged to the group, and at the limit the
 * kernel reclaims file-backed pages first and kills the process only when anonymous memory alone
 * does not fit. cgroup v2 (`memory.max`, `memory.high`, `memory.events`) where its memory
 * controller is enabled at /sys/fs/cgroup, else the v1 memory controller (`memory.limit_in_bytes`;
 * v1 has no `memory.high`). `createMemoryCgroup` answers null where neither can be written (not
 * root, or a container without a writable cgroup file system).
 */

export interface MemoryCgroup {
  readonly path: string;
  readonly version: 1 | 2;
  /** Highest charge of the group (all pages: anonymous, file-backed, kernel), bytes. */
  peakBytes(): number;
  /** Anonymous memory charged now, bytes. */
  anonymousBytes(): number;
  /** Processes of the group the kernel's OOM killer ended. */
  oomKills(): number;
  /** Times the group met its limit and had to reclaim. */
  limitHits(): number;
  /** Removes the group; its processes must have ended. */
  remove(): Promise<void>;
}

// Deno asks for --allow-all to touch /sys and /proc, so a shell does (the tests have --allow-run).
function shell(script: string, ...args: string[]): { ok: boolean; stdout: string } {
  const output = new Deno.Command("sh", { args: ["-c", script, "sh", ...args], stderr: "null" }).outputSync();
  return { ok: output.success, stdout: new TextDecoder().decode(output.stdout) };
}

function read(path: string): string {
  const { ok, stdout } = shell('cat "$1"', path);
  if (!ok) throw new Error(`Cannot read ${path}`);
  return stdout;
}

function write(path: string, value: string): void {
  if (!shell('printf %s "$2" > "$1"', path, value).ok) throw new Error(`Cannot write ${value} to ${path}`);
}

function readNumber(path: string): number {
  return Number(read(path).trim());
}

function keyed(path: string, key: string): number {
  const match = new RegExp(`^${key} (\\d+)$`, "m").exec(read(path));
  return match ? Number(match[1]) : 0;
}

function writable(path: string): boolean {
  return shell('mkdir "$1"', path).ok;
}

function removeGroup(path: string): Promise<void> {
  if (!shell('rmdir "$1"', path).ok) throw new Error(`Cannot remove the cgroup ${path}`);
  return Promise.resolve();
}

export function createMemoryCgroup(
  name: string,
  limits: { maxBytes: number; highBytes?: number },
): MemoryCgroup | null {
  const unique = `${name}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  let controllers = "";
  try {
    controllers = read("/sys/fs/cgroup/cgroup.subtree_control");
  } catch { /* not a v2 root */ }
  if (/\bmemory\b/.test(controllers) && writable(`/sys/fs/cgroup/${unique}`)) {
    const path = `/sys/fs/cgroup/${unique}`;
    write(`${path}/memory.max`, String(limits.maxBytes));
    if (limits.highBytes) write(`${path}/memory.high`, String(limits.highBytes));
    write(`${path}/memory.swap.max`, "0");
    return {
      path,
      version: 2,
      peakBytes: () => readNumber(`${path}/memory.peak`),
      anonymousBytes: () => keyed(`${path}/memory.stat`, "anon"),
      oomKills: () => keyed(`${path}/memory.events`, "oom_kill"),
      limitHits: () => keyed(`${path}/memory.events`, "max"),
      remove: () => removeGroup(path),
    };
  }
  const v1 = `/sys/fs/cgroup/memory/${unique}`;
  if (!writable(v1)) return null;
  write(`${v1}/memory.limit_in_bytes`, String(limits.maxBytes));
  return {
    path: v1,
    version: 1,
    peakBytes: () => readNumber(`${v1}/memory.max_usage_in_bytes`),
    anonymousBytes: () => keyed(`${v1}/memory.stat`, "rss"),
    oomKills: () => keyed(`${v1}/memory.oom_control`, "oom_kill"),
    limitHits: () => readNumber(`${v1}/memory.failcnt`),
    remove: () => removeGroup(v1),
  };
}

/** Drops a file's pages from the page cache (pages some process maps stay). */
async function dropFromPageCache(path: string): Promise<void> {
  const { success } = await new Deno.Command("dd", { args: [`if=${path}`, "iflag=nocache", "count=0"], stderr: "null" })
    .output();
  if (!success) throw new Error(`Could not drop ${path} from the page cache`);
}

/**
 * Cold pages, as at boot on the device, so that what Outpost maps is charged to its group: a copy of
 * the Deno executable that nobody maps (the test runner maps this one, and its pages are charged to
 * the runner's group) and the native libraries of this platform dropped from the page cache. The
 * libraries this process maps itself stay charged to it (in `deno task test`, earlier test files load
 * libSQL and onnxruntime in the runner): they are answered as `warm`, so a test can say so.
 * `executable` is the copy's path, to pass to `startOutpost`.
 */
export async function coldExecutable(
  dir: string,
  projectRoot: string,
): Promise<{ executable: string; warm: string[] }> {
  const copy = `${dir}/deno`;
  await Deno.copyFile(Deno.execPath(), copy);
  // Written pages are dirty and stay cached (charged to the writer) until they reach the disk.
  using file = await Deno.open(copy, { read: true });
  await file.syncData();
  const platform = `${Deno.build.os}-${Deno.build.arch === "x86_64" ? "x64" : "arm64"}`;
  const native = [copy];
  for (const entry of Deno.readDirSync(`${projectRoot}/node_modules/.deno`)) {
    if (entry.name.startsWith(`@libsql+${platform}-gnu@`)) {
      native.push(`${projectRoot}/node_modules/.deno/${entry.name}/node_modules/@libsql/${platform}-gnu/index.node`);
    }
    if (entry.name.startsWith("onnxruntime-node@")) {
      const folder = `${projectRoot}/node_modules/.deno/${entry.name}/node_modules/onnxruntime-node/bin/napi-v6/` +
        `${Deno.build.os}/${platform.split("-")[1]}`;
      for (const file of Deno.readDirSync(folder)) native.push(`${folder}/${file.name}`);
    }
  }
  for (const path of native) await dropFromPageCache(path);
  const maps = await new Deno.Command("cat", { args: [`/proc/${Deno.pid}/maps`], stdout: "piped" }).output();
  const mapped = new TextDecoder().decode(maps.stdout);
  const warm = native.filter((path) => mapped.includes(path)).map((path) => path.split("/").pop()!);
  return { executable: copy, warm };
}
