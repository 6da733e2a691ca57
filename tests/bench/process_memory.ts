/**
 * VmRSS, VmHWM (peak RSS) and RssAnon of a process, in bytes. Deno asks for --allow-all to read /proc
 * directly, so the file is read through `cat` under --allow-run.
 */
export async function processMemory(pid: number): Promise<{ rss: number; peak: number; anonymous: number }> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdout: "piped" }).output();
  const status = new TextDecoder().decode(output.stdout);
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM"), anonymous: kb("RssAnon") };
}

export const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
