/**
 * `outpost check --deployment`: the secure-edge pattern's success criteria, checked on the device
 * against the running instance, the install root and this process's own permissions (which are
 * the release's baked flags).
 */
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import { isLoopback } from "../egress/allowlist.ts";
import { verifyAuditFile } from "../egress/audit_file.ts";
import { loopbackFetch, ownApiUrl } from "../egress/loopback_fetch.ts";
import { broaderPermissions, describeBroadening } from "../permissions/self_check.ts";
import { encryptionAtRest } from "../store/database_encryption.ts";
import { ReleaseLayout } from "./layout.ts";
import { pinFile, readPin } from "./pin.ts";
import { executable, isSameProcess, readPidFile } from "./process.ts";

export interface Criterion {
  name: string;
  pass: boolean;
  reason: string;
}

const HARDENING = ["ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "IPAddressDeny="];

export async function checkDeployment(
  config: Config,
  /** `derivedFlags`: the flags this release runs with, as derived from the manifest (main.ts). */
  options: { root: string; service: string; derivedFlags: readonly string[] },
): Promise<Criterion[]> {
  const base = ownApiUrl(config.api, "");
  const get = async (path: string) => {
    try {
      const response = await loopbackFetch(`${base}${path}`, {
        timeoutMs: 3_000,
        apiListen: config.api.listen,
        tls: config.api.tls,
      });
      return { status: response.status, body: await response.text() };
    } catch (error) {
      return { status: 0, body: (error as Error).message };
    }
  };
  const [healthz, readyz, metrics] = [await get("/healthz"), await get("/readyz"), await get("/metrics")];
  const criteria: Criterion[] = [];

  const egressOff = config.network.egressAllowed.length === 0;
  // With egress off the broker can only be on loopback (config.ts refuses a remote one).
  const broker = config.mqtt
    ? isLoopback(config.mqtt.broker.host)
      ? "; MQTT broker on loopback (not egress)"
      : `; MQTT broker ${config.mqtt.broker.host}:${config.mqtt.broker.port} is an egress destination`
    : "";
  const layout = new ReleaseLayout(options.root);
  const flags = await serviceNetFlags(layout, options.service, config.api.listen.host);
  const flagsOk = egressOff ? flags.reaches !== null && flags.reaches.length === 0 : flags.reaches !== null;
  criteria.push({
    name: "operates with egress disabled",
    pass: readyz.status === 200 && flagsOk,
    reason: readyz.status !== 200
      ? `instance not ready: ${readyz.status} ${readyz.body.slice(0, 200)}`
      : flags.reaches === null
      ? flags.detail
      : egressOff
      ? flags.reaches.length === 0
        ? `egress is disabled, the instance is ready (forwarding paused${broker}) and ${flags.detail}`
        : `egress is disabled in the manifest but the running service can reach ${flags.reaches.join(", ")} ` +
          `(${flags.detail})`
      : `readiness never depends on the uplink: forwarding failures show as degraded, not unready${broker}; ` +
        flags.detail,
  });

  const audit = await verifyAuditFile(config.storage, config.storage.auditKey).catch((error) => ({
    ok: false as const,
    reason: String(error),
  }));
  criteria.push({
    name: "all external calls logged and auditable",
    pass: audit.ok,
    reason: audit.ok
      ? `audit chain intact (${"rows" in audit ? audit.rows : 0} rows)`
      : `audit chain broken: ${"reason" in audit ? audit.reason : ""}`,
  });

  const denied = await deniedReading([layout.root, layout.releases, layout.confirmedFile, layout.current]);
  const current = await layout.currentVersion();
  const previous = denied ? null : await layout.previousVersion();
  criteria.push({
    name: "rollback possible offline",
    pass: previous !== null,
    reason: denied ??
      (previous !== null
        ? `previous release ${previous} (with its embedded policy and models) is installed beside ${current}`
        : `no previous release under ${join(options.root, "releases")} (current: ${current ?? "none"})`),
  });

  criteria.push(await whatRollsBack(layout, previous, denied));

  const monitoring = healthz.status === 200 && metrics.status === 200 &&
    metrics.body.includes("outpost_readings_total");
  criteria.push({
    name: "local monitoring reachable",
    pass: monitoring,
    reason: monitoring
      ? `${base}/healthz, /readyz and /metrics answer`
      : `healthz ${healthz.status}, metrics ${metrics.status}`,
  });

  criteria.push(apiExposure(config));

  // This command runs with the release's own flags: what it may do, the release may do.
  const broader = broaderPermissions(options.derivedFlags).map(describeBroadening);
  criteria.push({
    name: "permissions no broader than the policy",
    pass: broader.length === 0,
    reason: broader.length === 0 ? "this release's Deno permissions match the manifest" : broader.join("; "),
  });

  criteria.push({ name: "store encrypted at rest as configured", ...await encryptionAtRest(config.storage) });

  criteria.push(await systemdHardening(options.service, await get("/v1/status")));
  return criteria;
}

/** Who can write data: loopback only, or beyond it with TLS and device-bound ingest tokens. */
export function apiExposure(config: Config): Criterion {
  const name = "ingest authenticated and encrypted beyond loopback";
  const { listen, tls, ingestAuth } = config.api;
  const address = `${listen.host}:${listen.port}`;
  const protections = `${tls ? "TLS" : "no TLS"}, ${
    ingestAuth === "token" ? "device-bound ingest tokens" : "no ingest tokens"
  }`;
  if (isLoopback(listen.host)) {
    return { name, pass: true, reason: `the API listens on ${address} only (loopback; ${protections})` };
  }
  if (tls && ingestAuth === "token") {
    return { name, pass: true, reason: `the API listens on ${address} with ${protections}` };
  }
  return {
    name,
    pass: false,
    reason: `the API listens on ${address} beyond loopback with ${protections} (spec.api.insecureListen): ` +
      "anyone who can reach it can write readings and read tokens in clear",
  };
}

/**
 * Under systemd the service itself reports it (INVOCATION_ID); the unit's hardening is the one
 * `deno task systemd-unit` renders (checked by systemd-analyze in CI). Where `systemctl` may be run,
 * the installed unit's directives are read too.
 */
async function systemdHardening(service: string, status: { status: number; body: string }): Promise<Criterion> {
  const name = "systemd hardening in place";
  let runsUnderSystemd = false;
  try {
    runsUnderSystemd = JSON.parse(status.body).service?.underSystemd === true;
  } catch { /* no status */ }
  if (!runsUnderSystemd) return { name, pass: false, reason: "the running instance is not a systemd service" };
  try {
    const output = await new Deno.Command("systemctl", { args: ["cat", service], stdout: "piped", stderr: "null" })
      .output();
    const unit = new TextDecoder().decode(output.stdout);
    const missing = HARDENING.filter((directive) => !unit.split("\n").some((line) => line.startsWith(directive)));
    if (missing.length > 0) return { name, pass: false, reason: `${service} lacks ${missing.join(", ")}` };
    return { name, pass: true, reason: `${service} runs with ${HARDENING.join(", ")}` };
  } catch {
    return { name, pass: true, reason: `runs under systemd as ${service} (unit directives not readable from here)` };
  }
}

/** What a rollback to `previous` brings back (its pin) and what stays as it is. */
async function whatRollsBack(
  layout: ReleaseLayout,
  previous: string | null,
  denied: string | null,
): Promise<Criterion> {
  const name = "what rolls back";
  if (denied) return { name, pass: false, reason: denied };
  if (previous === null) return { name, pass: false, reason: "no confirmed release to roll back to" };
  const pinDenied = await deniedReading([pinFile(layout, previous)]);
  if (pinDenied) return { name, pass: false, reason: pinDenied };
  const pin = await readPin(layout, previous).catch(() => null);
  const stays = "stays: readings, events, outbox and audit rows, and every model bundle in the data dir";
  if (pin?.assignments == null) {
    return {
      name,
      pass: false,
      reason: `${previous}: binary with its embedded manifest and models; no pinned model assignments ` +
        `(${pin?.problem ?? "no pin.json"}), so they would stay as they are; ${stays}`,
    };
  }
  const short = (hash: string | null) => hash?.slice(0, 12) ?? "unknown";
  const assigned = pin.assignments.map((each) => `${each.scope}=${each.name}@${short(each.modelSha256)}`);
  return {
    name,
    pass: true,
    reason: `${previous}: binary ${short(pin.binarySha256)}, manifest ${short(pin.manifestSha256)}, ` +
      `${pin.shippedModels.length} shipped models, model assignments (${pin.pinnedWhen} ${pin.at}): ` +
      `${assigned.length > 0 ? assigned.join(", ") : "none"}, other scopes unassigned; ${stays}`,
  };
}

function isDenied(error: unknown): boolean {
  return error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable;
}

/**
 * "permission denied reading <path>" for the first path this process may not read, else null. A
 * missing path is not an error here: the callers report absence themselves.
 */
async function deniedReading(paths: string[]): Promise<string | null> {
  for (const path of paths) {
    try {
      const info = await Deno.lstat(path);
      if (info.isDirectory) { for await (const _ of Deno.readDir(path)) break; }
      else if (info.isFile) (await Deno.open(path, { read: true })).close();
    } catch (error) {
      if (isDenied(error)) return `permission denied reading ${path}`;
      // NotFound (and anything else) is left to the caller's own reading.
    }
  }
  return null;
}

async function commandText(program: string, args: string[]): Promise<string | null> {
  try {
    const output = await new Deno.Command(program, { args, stdout: "piped", stderr: "null" }).output();
    const text = new TextDecoder().decode(output.stdout).trim();
    return output.success && text !== "" ? text : null;
  } catch {
    return null;
  }
}

/** The running service's PID: the install root's PID file (if still that process), else systemd's MainPID. */
async function servicePid(layout: ReleaseLayout, service: string): Promise<number | null> {
  const record = await readPidFile(layout);
  if (record !== null && record !== "unverifiable" && await isSameProcess(record)) return record.pid;
  const main = Number(await commandText("systemctl", ["show", "-p", "MainPID", "--value", service]));
  return Number.isInteger(main) && main > 0 ? main : null;
}

/** `host` of `host`, `host:port`, `[v6]:port` or a bare IPv6 address. */
function hostOf(entry: string): string {
  if (entry.startsWith("[")) return entry.slice(0, entry.indexOf("]") + 1);
  return (entry.match(/:/g) ?? []).length === 1 ? entry.slice(0, entry.indexOf(":")) : entry;
}

/**
 * What the running service's `--allow-net` lets it reach beyond loopback and the API's own listen
 * address (`reaches`), or `reaches: null` when that cannot be told, with `detail` saying why.
 */
export async function serviceNetFlags(
  layout: ReleaseLayout,
  service: string,
  listenHost: string,
): Promise<{ reaches: string[] | null; detail: string }> {
  const denied = await deniedReading([layout.pidFile]);
  const pid = await servicePid(layout, service);
  if (pid === null && denied) return { reaches: null, detail: `${denied}: cannot check the service's flags` };
  if (pid === null) return { reaches: null, detail: "service not running: cannot check its flags" };
  const args = (await commandText("ps", ["-o", "args=", "-p", String(pid)]))?.split(/\s+/);
  if (!args) return { reaches: null, detail: `cannot read the command line of PID ${pid}: cannot check its flags` };
  if (args.includes("-A") || args.includes("--allow-all") || args.includes("--allow-net")) {
    return { reaches: ["any host"], detail: `PID ${pid} runs with unrestricted network access` };
  }
  const flag = args.find((arg) => arg.startsWith("--allow-net="));
  if (flag === undefined) {
    // A compiled release carries its flags baked in: the same binary as this one has this one's.
    const exe = await executable(pid);
    return exe !== null && exe === Deno.execPath()
      ? { reaches: [], detail: `PID ${pid} runs this binary, whose baked --allow-net is checked below` }
      : {
        reaches: null,
        detail: `PID ${pid} (${exe ?? args[0]}) has no --allow-net on its command line: cannot check its flags`,
      };
  }
  const hosts = flag.slice("--allow-net=".length).split(",").filter((entry) => entry !== "");
  const reaches = [...new Set(hosts.filter((entry) => !isLoopback(hostOf(entry)) && hostOf(entry) !== listenHost))];
  return {
    reaches,
    detail: reaches.length === 0
      ? `PID ${pid}'s --allow-net reaches only loopback${hosts.length > 0 ? ` (${hosts.join(", ")})` : ""}`
      : `PID ${pid}'s --allow-net=${hosts.join(",")}`,
  };
}
