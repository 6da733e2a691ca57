import { join } from "node:path";
import { loadConfig } from "../../src/config/config.ts";
import { runtimeFlags, SERVICE_ENV } from "../../src/permissions/flags.ts";
import { freePort } from "./ports.ts";

export const PROJECT_ROOT = join(import.meta.dirname!, "..", "..");
export const MAIN = join(PROJECT_ROOT, "main.ts");

export interface ManifestOptions {
  apiPort?: number;
  metricsPort?: number;
  mqttUrl?: string;
  topics?: string[];
  maxSizeMB?: number;
  bodyLimitBytes?: number;
  egressAllowed?: string[];
  logLevel?: string;
  circuitOpenSeconds?: number;
  /** YAML lines placed under `spec.detection:`. */
  detection?: string[];
  /** YAML lines placed under `spec.forwarding:` (indented by the helper). */
  forwarding?: string[];
  /** YAML lines placed under `spec.limits:` (indented by the helper). */
  limits?: string[];
}

/** Writes a manifest for a test into `dir` and returns its path. */
export async function writeManifest(dir: string, options: ManifestOptions = {}): Promise<string> {
  const apiPort = options.apiPort ?? await freePort();
  const lines = [
    "apiVersion: fde/v1",
    "kind: Deployment",
    "metadata:",
    "  name: outpost-test",
    "spec:",
    "  network:",
    `    egressAllowed: ${JSON.stringify(options.egressAllowed ?? [])}`,
    ...(options.circuitOpenSeconds ? [`    circuitBreaker: { openSeconds: ${options.circuitOpenSeconds} }`] : []),
    "  observability:",
    `    logLevel: ${options.logLevel ?? "info"}`,
    ...(options.metricsPort ? [`    metricsPort: ${options.metricsPort}`] : []),
    "  api:",
    `    listen: 127.0.0.1:${apiPort}`,
    ...(options.bodyLimitBytes ? [`    bodyLimitBytes: ${options.bodyLimitBytes}`] : []),
    "  ingest:",
    "    mqtt:",
    ...(options.mqttUrl ? [`      url: ${options.mqttUrl}`] : []),
    `      topics: ${JSON.stringify(options.topics ?? ["outpost/+/readings"])}`,
    "      clientId: outpost-test",
    "      keepaliveSeconds: 5",
    "  storage:",
    `    dataDir: ${join(dir, "data")}`,
    `    maxSizeMB: ${options.maxSizeMB ?? 1024}`,
    ...(options.forwarding ? ["  forwarding:", ...options.forwarding.map((line) => `    ${line}`)] : []),
    ...(options.detection ? ["  detection:", ...options.detection.map((line) => `    ${line}`)] : []),
    ...(options.limits ? ["  limits:", ...options.limits.map((line) => `    ${line}`)] : []),
  ];
  const path = join(dir, "outpost.yaml");
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return path;
}

export interface OutpostProcess {
  readonly url: string;
  readonly manifest: string;
  readonly dataDir: string;
  readonly process: Deno.ChildProcess;
  /** Everything the process wrote to stderr so far (its JSON log). */
  log(): string;
  /** SIGTERM, then waits; returns the exit code. */
  stop(): Promise<number>;
  /** SIGKILL, then waits. */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** Extra flags before main.ts (e.g. "-A"); replaces the derived flags when `replaceFlags`. */
  flags?: string[];
  replaceFlags?: boolean;
  args?: string[];
  waitReady?: boolean;
  env?: Record<string, string>;
  /** A cgroup folder the process starts in (tests/helpers/memory_cgroup.ts), as the unit's MemoryMax= does. */
  cgroup?: string;
  /** The Deno executable to run (default: this one). */
  executable?: string;
}

/** Starts `main.ts run` as a child with the manifest's derived permission flags. */
export async function startOutpost(manifest: string, options: StartOptions = {}): Promise<OutpostProcess> {
  const config = await loadConfig(manifest);
  const derived = runtimeFlags(config, { projectRoot: PROJECT_ROOT });
  const flags = options.replaceFlags ? options.flags ?? [] : [...derived, ...(options.flags ?? [])];
  const command = [
    options.executable ?? Deno.execPath(),
    "run",
    "--cached-only",
    ...flags,
    MAIN,
    "run",
    "--manifest",
    manifest,
  ];
  command.push(...(options.args ?? []));
  // In a cgroup from its first page: the shell joins it, then becomes Outpost (same PID).
  const [program, ...args] = options.cgroup
    ? ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', options.cgroup, ...command]
    : command;
  const process = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...SERVICE_ENV, ...options.env },
  }).spawn();
  let output = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk, { stream: true });
  };
  const drained = Promise.all([drain(process.stdout), drain(process.stderr)]);
  const url = `http://${config.api.listen.host}:${config.api.listen.port}`;
  const handle: OutpostProcess = {
    url,
    manifest,
    dataDir: config.storage.dataDir,
    process,
    log: () => output,
    async stop() {
      try {
        process.kill("SIGTERM");
      } catch { /* gone */ }
      const status = await process.status;
      await drained;
      return status.code;
    },
    async kill() {
      try {
        process.kill("SIGKILL");
      } catch { /* gone */ }
      await process.status;
      await drained;
    },
  };
  if (options.waitReady ?? true) {
    try {
      await waitForReady(url, process.status);
    } catch (error) {
      await handle.kill();
      throw new Error(`Outpost did not become ready: ${(error as Error).message}\n${output}`);
    }
  }
  return handle;
}

/**
 * Runs `main.ts <args> --manifest <manifest>` to its end under the manifest's derived flags, as an
 * operator would run a command next to the service.
 */
export async function runOutpostCommand(
  manifest: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const config = await loadConfig(manifest);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--cached-only",
      ...runtimeFlags(config, { projectRoot: PROJECT_ROOT }),
      MAIN,
      ...args,
      "--manifest",
      manifest,
    ],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** Polls `/readyz` until it answers 200; fails if the process exits first. */
export async function waitForReady(
  url: string,
  exited: Promise<Deno.CommandStatus>,
  timeoutMs = 20_000,
): Promise<void> {
  let gone = false;
  exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gone) throw new Error("process exited");
    try {
      const response = await fetch(`${url}/readyz`);
      await response.body?.cancel();
      if (response.status === 200) return;
    } catch { /* not listening yet */ }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`not ready after ${timeoutMs} ms`);
}

/** POSTs JSON to the API. */
export async function postJson(url: string, body: unknown, contentType = "application/json"): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    headers: { "content-type": contentType },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/**
 * Waits until Outpost's MQTT ingest is connected and subscribed (`/readyz` reports the broker
 * "connected"): a QoS 1 message published before its first subscription is not kept for it.
 */
export async function waitForMqttIngest(url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const body = await (await fetch(`${url}/readyz`)).json() as { checks: { name: string; detail: string }[] };
    if (body.checks.some((check) => check.name === "mqtt_broker" && check.detail === "connected")) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`MQTT ingest did not connect within ${timeoutMs} ms`);
}
