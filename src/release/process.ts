/**
 * Outpost as a process outside systemd: started in its own session (so Ctrl-C of whoever started
 * it does not reach it), its output appended to `<root>/logs/<version>.log`, and remembered in
 * `outpost.pid` as `{pid, starttime, exe}`. A PID is only trusted when its start time (and, once
 * known, /proc/<pid>/exe) still match: after PID reuse an unrelated process is never signalled.
 * Deno refuses to read /proc/<pid>/ without --allow-all, so `ps` and `readlink` read them: neither
 * can read a file's contents, so allowing them (a compiled release's --allow-run) opens no way
 * around --allow-read, as `cat` would.
 */
import { dirname, join } from "node:path";
import { readJson, type ReleaseLayout, writeJsonAtomic } from "./layout.ts";

export interface PidRecord {
  pid: number;
  /** `ps -o lstart`: when the process started, to the second; survives exec, changes with PID reuse. */
  starttime: string;
  /** /proc/<pid>/exe once the process runs the release (null right after spawn, while sh execs). */
  exe: string | null;
  version: string;
}

async function procText(program: "ps" | "readlink", args: string[]): Promise<string | null> {
  try {
    const output = await new Deno.Command(program, { args, stdout: "piped", stderr: "null" }).output();
    return output.success ? new TextDecoder().decode(output.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** State letter and start time of a process, or null when there is no such process. */
async function statOf(pid: number): Promise<{ state: string; starttime: string } | null> {
  const line = await procText("ps", ["-o", "stat=,lstart=", "-p", String(pid)]);
  const match = line === null ? null : /^(\S)\S*\s+(.+)$/.exec(line);
  return match ? { state: match[1], starttime: match[2].replace(/\s+/g, " ") } : null;
}

export async function startTime(pid: number): Promise<string | null> {
  return (await statOf(pid))?.starttime ?? null;
}

export async function executable(pid: number): Promise<string | null> {
  return await procText("readlink", [`/proc/${pid}/exe`]);
}

/** True only if `record.pid` is still the very process that was recorded (and has not exited). */
export async function isSameProcess(record: PidRecord): Promise<boolean> {
  const stat = await statOf(record.pid);
  if (stat === null || stat.starttime !== record.starttime || stat.state === "Z") return false;
  if (record.exe !== null) {
    const exe = await executable(record.pid);
    if (exe !== null && exe !== record.exe) return false;
  }
  return true;
}

export async function readPidFile(layout: ReleaseLayout): Promise<PidRecord | "unverifiable" | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(layout.pidFile);
  } catch {
    return null;
  }
  try {
    const record = JSON.parse(text);
    if (typeof record?.pid === "number" && typeof record?.starttime === "string") return record as PidRecord;
  } catch { /* an older plain-number PID file */ }
  return "unverifiable";
}

/**
 * Stops the process in `outpost.pid` if it is still the recorded one (SIGTERM, then SIGKILL after
 * 25 s). A PID file that cannot be verified is refused, recorded, and left alone.
 */
export async function stopRecorded(layout: ReleaseLayout): Promise<void> {
  const record = await readPidFile(layout);
  if (record === null) return;
  if (record === "unverifiable") {
    await layout.record("refused", {
      reason: "outpost.pid has no start time: not signalling a PID that may be reused",
    });
    return;
  }
  if (!(await isSameProcess(record))) {
    await layout.record("stale_pid", { pid: record.pid, version: record.version });
    await Deno.remove(layout.pidFile).catch(() => {});
    return;
  }
  Deno.kill(record.pid, "SIGTERM");
  const deadline = Date.now() + 25_000;
  while ((await isSameProcess(record)) && Date.now() < deadline) await delay(50);
  if (await isSameProcess(record)) Deno.kill(record.pid, "SIGKILL");
  while (await isSameProcess(record)) await delay(20);
  await Deno.remove(layout.pidFile).catch(() => {});
  await layout.record("stopped", { pid: record.pid, version: record.version });
}

/**
 * Starts `<root>/current/outpost run` in a new session with its output in the release's log file
 * and writes the PID file. The process is not this one's child for long: `setsid` makes it a
 * session leader, so a terminal's SIGINT to the upgrade's process group never reaches it.
 */
export async function spawnDetached(layout: ReleaseLayout, version: string): Promise<PidRecord> {
  const log = layout.logFile(version);
  await Deno.mkdir(dirname(log), { recursive: true });
  await Deno.writeTextFile(log, `--- ${new Date().toISOString()} start ${version}\n`, { append: true });
  const child = new Deno.Command("setsid", {
    args: ["sh", "-c", 'exec "$0" run >>"$1" 2>&1 </dev/null', join(layout.release(version), "outpost"), log],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  // The exit status is collected so the process does not linger as a zombie of this one.
  child.status.catch(() => {});
  let starttime: string | null = null;
  for (let i = 0; i < 100 && starttime === null; i++) {
    starttime = await startTime(child.pid);
    if (starttime === null) await delay(10);
  }
  const record: PidRecord = { pid: child.pid, starttime: starttime ?? "unknown", exe: null, version };
  await writeJsonAtomic(layout.pidFile, record);
  return record;
}

/** Records the executable once the process is known to run the release (it answered as itself). */
export async function pinExecutable(layout: ReleaseLayout, record: PidRecord): Promise<void> {
  const exe = await executable(record.pid);
  if (exe === null || !(await isSameProcess(record))) return;
  record.exe = exe;
  const onDisk = await readJson<PidRecord>(layout.pidFile);
  if (onDisk?.pid === record.pid) await writeJsonAtomic(layout.pidFile, record);
}

/** The last `lines` lines of a release's log file. */
export async function logTail(layout: ReleaseLayout, version: string, lines = 20): Promise<string[]> {
  try {
    const text = await Deno.readTextFile(layout.logFile(version));
    return text.trimEnd().split("\n").slice(-lines);
  } catch {
    return [];
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
