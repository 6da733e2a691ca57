/**
 * What each part of Outpost costs in memory, measured the way issue 11 asks: a bare Deno process
 * under Outpost's V8 flags, then the same process after importing one dependency (and, for the
 * native ones, after using it once). Each figure is the child's own RSS after a GC, printed next
 * to the bare process and the 128 MB budget.
 */
import { V8_FLAGS } from "../../src/permissions/flags.ts";
import { mb } from "./process_memory.ts";

const BUDGET = 128 * 1024 * 1024;
const ROOT = new URL("../..", import.meta.url).pathname;

/** Module code run in the child: the import, and what it does once imported. */
const PARTS: Record<string, string> = {
  "bare deno": "",
  "node compatibility layer (node:buffer, node:http)": `await import("node:buffer"); await import("node:http");`,
  "hono": `await import("hono");`,
  "@hono/node-server + node:http": `await import("@hono/node-server"); await import("node:http");`,
  "zod": `await import("zod");`,
  "yaml": `await import("yaml");`,
  "Prometheus exposition (src/observability/prometheus.ts, was prom-client)":
    `await import("${ROOT}src/observability/prometheus.ts");`,
  "mqtt-packet": `await import("mqtt-packet");`,
  "@libsql/client (open a file)": `const { createClient } = await import("@libsql/client");
    const dir = await Deno.makeTempDir(); const c = createClient({ url: "file:" + dir + "/x.db" });
    await c.execute("CREATE TABLE t (x)"); c.close();`,
  "onnxruntime-node (import)": `await import("onnxruntime-node");`,
  "onnx-proto": `await import("onnx-proto");`,
  "Outpost's whole runtime graph": `await import("${ROOT}src/runtime.ts");`,
};

async function measure(code: string): Promise<number> {
  const script = `${code}
    for (let i = 0; i < 3; i++) { (globalThis as { gc?: () => void }).gc?.(); await new Promise((r) => setTimeout(r, 50)); }
    console.log(Deno.memoryUsage().rss);`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", "--cached-only", `${V8_FLAGS},--expose-gc`, "--ext=ts", script],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout).trim().split("\n").pop()!;
  if (!output.success) throw new Error(new TextDecoder().decode(output.stderr).slice(0, 500));
  return Number(text);
}

export async function benchImportCosts(): Promise<void> {
  const bare = await measure("");
  const compat = await measure(PARTS["node compatibility layer (node:buffer, node:http)"]);
  console.log(`| part | RSS after import | over bare Deno | over bare Deno + node compat | budget |`);
  console.log(`| --- | --- | --- | --- | --- |`);
  for (const [name, code] of Object.entries(PARTS)) {
    const rss = name === "bare deno" ? bare : await measure(code);
    const overCompat = rss > compat && !name.startsWith("node") ? mb(rss - compat) : "";
    console.log(`| ${name} | ${mb(rss)} | ${rss > bare ? mb(rss - bare) : ""} | ${overCompat} | ${mb(BUDGET)} |`);
  }
}

if (import.meta.main) await benchImportCosts();
