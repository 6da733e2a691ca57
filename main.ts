import { basename, dirname, join } from "node:path";
import { type Command, parseCommand, UsageError } from "./src/config/cli.ts";
import { type Config, loadConfig } from "./src/config/config.ts";
import { loopbackFetch, ownApiUrl } from "./src/egress/loopback_fetch.ts";
import { ConfigError } from "./src/config/errors.ts";
import { createLogger } from "./src/observability/log.ts";
import { expectedPermissionFlags, netAllowlist, V8_FLAGS } from "./src/permissions/flags.ts";
import { broaderPermissions, describeBroadening } from "./src/permissions/self_check.ts";
import { SCHEMA_VERSION } from "./src/store/migrations.ts";
import { VERSION } from "./src/version.ts";

/** How long an orderly shutdown may take before the process exits anyway. */
const SHUTDOWN_GRACE_MS = 10_000;
const PROJECT_ROOT = import.meta.dirname!;

async function main(): Promise<number> {
  let command: Command;
  try {
    command = parseCommand();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${error.usage}`);
    return 2;
  }
  switch (command.name) {
    case "help":
      console.log(command.text);
      return 0;
    case "version":
      return await printVersion(command.manifest);
    case "sign":
    case "keygen":
      return await signing(command);
    case "check":
      return command.deployment
        ? await checkDeploymentCommand(command)
        : await check(command.manifest, command.dataDir);
    case "policy-show": {
      const config = await loadOrReport(command.manifest);
      if (!config) return 2;
      const { policyDiagram } = await import("./src/release/policy_show.ts");
      console.log(policyDiagram(config));
      return 0;
    }
    case "run":
      return await run(command.manifest, command.dataDir, command.unsafeBroadPermissions);
    case "tokens":
      return await tokens(command);
    case "audit-verify":
      return await auditVerify(command);
    case "audit-export":
      return await auditExport(command);
    case "db": {
      const config = await loadOrReport(command.manifest, command.dataDir);
      if (!config) return 2;
      const { runDatabaseCommand } = await import("./src/store/database_encryption.ts");
      return await runDatabaseCommand(config.storage, command.action);
    }
    case "wait-ready":
      return command.root
        ? await waitConfirmed(command.manifest, command.root, command.timeoutSeconds, command.pid)
        : await waitReady(command.manifest, command.timeoutSeconds);
    case "upgrade":
    case "rollback":
    case "resume":
    case "service":
      return await release(command);
  }
}

/**
 * The flags this process should run with: a release runs as a compiled binary, or (tests, and the
 * launchers standing in for binaries) as main.ts under `deno run` from its release folder with the
 * flags compile/plan.ts bakes in; otherwise what `deno task start` derives.
 */
function ownExpectedFlags(config: Config): string[] {
  const inReleaseFolder = basename(dirname(PROJECT_ROOT)) === "releases";
  const executable = Deno.build.standalone
    ? Deno.execPath()
    : inReleaseFolder
    ? join(PROJECT_ROOT, "outpost")
    : undefined;
  return expectedPermissionFlags(config, { projectRoot: PROJECT_ROOT, executable });
}

async function loadOrReport(manifest: string, dataDir?: string): Promise<Config | null> {
  try {
    return await loadConfig(manifest, { dataDir });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    // Not the manifest's fault: this process was not granted reading it.
    if (error.cause instanceof Deno.errors.NotCapable) {
      console.error(`Cannot read the manifest ${error.file}: Deno grants no read access to it\n${permissionHint()}`);
    } else {
      console.error(error.message);
    }
    return null;
  }
}

/** What to do about an access Deno refused (Deno's own advice would be a broader flag). */
function permissionHint(): string {
  return Deno.build.standalone
    ? "This release reads only its own folder, the data dir and the secret files its manifest names"
    : 'From a checkout, run commands as "deno task outpost <command>": it derives the flags each one needs ' +
      "from the manifest";
}

/** A command that ends on an access Deno refused: name it and the way to run it, exit 2. */
function refusedAccess(error: unknown): number {
  if (!(error instanceof Deno.errors.NotCapable)) throw error;
  console.error(`${error.message.replace(/, run again with the --allow-\S+ flag$/, "")}\n${permissionHint()}`);
  return 2;
}

async function check(manifest: string, dataDir?: string): Promise<number> {
  const config = await loadOrReport(manifest, dataDir);
  if (!config) return 2;
  let flags: string[] | string;
  try {
    // Found the way the loaders find the native addons, which needs no read access to
    // node_modules: `check` under its derived flags (deno task outpost check) has none.
    flags = ownExpectedFlags(config);
  } catch (error) {
    flags = `unavailable: ${(error as Error).message}`;
  }
  const { renderNetworkRules } = await import("./src/egress/os_rules.ts");
  const rules = await renderNetworkRules(config);
  const underSystemd = Deno.env.get("INVOCATION_ID") !== undefined;
  const layers = {
    deno: {
      active: true,
      guarantees:
        "JavaScript (fetch, node:net, Deno.connect, mqtt.js) reaches only --allow-net; checked again at startup",
      allowNet: netAllowlist(config),
    },
    egressModule: {
      active: true,
      guarantees: "every outbound attempt checked against egressAllowed, rate limited, circuit-broken, audited",
    },
    os: {
      active: underSystemd,
      detail: underSystemd
        ? "running under systemd: the unit's IPAddressDeny/IPAddressAllow apply to native code too"
        : "not running under systemd: the OS rules below are rendered but not applied",
      guarantees: "native addons (libsql, onnxruntime) reach only these addresses (any port); resolved at render time",
      directives: rules.directives,
      unresolved: rules.unresolved,
    },
  };
  console.log(JSON.stringify(
    { valid: true, manifest: config.manifestPath, config, permissionFlags: flags, v8Flags: V8_FLAGS, layers },
    null,
    2,
  ));
  return 0;
}

/** `outpost tokens ...` on the data dir's token file (a running service picks the change up). */
async function tokens(command: Extract<Command, { name: "tokens" }>): Promise<number> {
  const config = await loadOrReport(command.manifest, command.dataDir);
  if (!config) return 2;
  const { runTokenCommand } = await import("./src/api/token_cli.ts");
  return runTokenCommand(config, command.request);
}

/** Prints the result as JSON and the problem by name on stderr; exit 0 intact, 1 not. Never throws. */
async function auditVerify(command: Extract<Command, { name: "audit-verify" }>): Promise<number> {
  const config = await loadOrReport(command.manifest, command.dataDir);
  if (!config) return 2;
  const { verifyAuditFile, verifyExportFile } = await import("./src/egress/audit_file.ts");
  const result = command.file
    ? await verifyExportFile(command.file, config.storage.auditKey)
    : await verifyAuditFile(config.storage, config.storage.auditKey);
  console.log(JSON.stringify(result, null, 2));
  if (result.ok) return 0;
  console.error(`Audit log not intact: ${result.problem}: ${result.reason}`);
  return 1;
}

async function auditExport(command: Extract<Command, { name: "audit-export" }>): Promise<number> {
  const config = await loadOrReport(command.manifest, command.dataDir);
  if (!config) return 2;
  const { exportAudit } = await import("./src/egress/audit_file.ts");
  try {
    const written = await exportAudit(config.storage, command.out);
    console.error(JSON.stringify({ ok: true, out: command.out, ...written }));
    return 0;
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable
      ? ": Outpost may write only under its data dir; use --out - and redirect standard output"
      : "";
    console.error(`Audit export failed: ${(error as Error).message}${hint}`);
    return 1;
  }
}

async function checkDeploymentCommand(command: Extract<Command, { name: "check" }>): Promise<number> {
  const config = await loadOrReport(command.manifest, command.dataDir);
  if (!config) return 2;
  const { checkDeployment } = await import("./src/release/deployment_check.ts");
  const criteria = await checkDeployment(config, {
    root: command.root,
    service: command.service,
    derivedFlags: ownExpectedFlags(config),
  });
  for (const criterion of criteria) {
    console.log(`${criterion.pass ? "PASS" : "FAIL"}  ${criterion.name}: ${criterion.reason}`);
  }
  return criteria.every((criterion) => criterion.pass) ? 0 : 1;
}

async function release(command: Extract<Command, { name: "upgrade" | "rollback" | "resume" | "service" }>) {
  const args = command.release;
  const config = await loadOrReport(args.manifest);
  if (!config) return 2;
  const readyUrl = args.readyUrl ?? ownApiUrl(config.api, "/readyz");
  const { rollback, startService, stopService, upgrade, UpgradeError } = await import("./src/release/upgrade.ts");
  const options = {
    root: args.root,
    service: args.service,
    readyUrl,
    readyTls: config.api.tls,
    readyTimeoutMs: args.readyTimeoutSeconds * 1000,
    keep: args.keep,
    dataDir: config.storage.dataDir,
    encryptionKey: config.storage.encryptionKey,
    signatures: { trustedKeys: config.release.trustedKeys, allowUnsigned: args.allowUnsigned },
  };
  try {
    if (command.name === "resume") {
      const { ReleaseLayout } = await import("./src/release/layout.ts");
      const { resumeAtStart } = await import("./src/release/state.ts");
      console.log(
        JSON.stringify({ ok: true, start: await resumeAtStart(new ReleaseLayout(args.root), options) }),
      );
      return 0;
    }
    if (command.name === "service" && command.action !== "start") {
      if (command.action === "stop") await stopService(options);
      else await printServiceStatus(args.root);
      return 0;
    }
    const version = command.name === "upgrade"
      ? await upgrade(command.binary, options)
      : command.name === "rollback"
      ? await rollback(options)
      : await startService(options);
    console.log(JSON.stringify({ ok: true, live: version }));
    return 0;
  } catch (error) {
    if (!(error instanceof UpgradeError)) throw error;
    console.error(error.message);
    return 1;
  }
}

/** The versions, and the running release's signature checked against the manifest's trusted keys. */
async function printVersion(manifest: string): Promise<number> {
  const { releaseIdentity } = await import("./src/version.ts");
  const config = await loadConfig(manifest).catch(() => null);
  const identity = await releaseIdentity(manifest, config?.release.trustedKeys ?? []);
  console.log(JSON.stringify({
    outpost: VERSION,
    release: identity.version,
    deno: Deno.version.deno,
    schema: SCHEMA_VERSION,
    signature: identity.signature,
  }));
  return 0;
}

/** `sign` and `keygen`: the build side of signed releases (src/release/signature.ts). */
async function signing(command: Extract<Command, { name: "sign" | "keygen" }>): Promise<number> {
  const { generateKeyPair, readPrivateKey, signFile } = await import("./src/release/signature.ts");
  if (command.name === "keygen") {
    const pair = await generateKeyPair();
    await Deno.writeTextFile(command.out, pair.privateKeyPem, { mode: 0o600, createNew: true });
    console.log(`# ${command.out}: private key (keep it off devices). For the policy:
spec:
  release:
    trustedKeys:
      - { id: ${pair.keyId}, publicKey: ${pair.publicKey} }`);
    return 0;
  }
  let signer;
  try {
    signer = await readPrivateKey(command.key);
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
  for (const file of command.files) {
    const written = await signFile(file, signer, { kind: command.kind });
    console.log(
      JSON.stringify({ file: `${file}.sig`, kind: written.kind, sha256: written.sha256, keyId: written.keyId }),
    );
  }
  return 0;
}

async function printServiceStatus(root: string): Promise<void> {
  const { ReleaseLayout } = await import("./src/release/layout.ts");
  const { isSameProcess, readPidFile } = await import("./src/release/process.ts");
  const { readState } = await import("./src/release/state.ts");
  const layout = new ReleaseLayout(root);
  const pid = await readPidFile(layout);
  const running = pid !== null && pid !== "unverifiable" && await isSameProcess(pid);
  console.log(JSON.stringify(
    { running, pid: running ? pid : null, current: await layout.currentVersion(), state: await readState(layout) },
    null,
    2,
  ));
}

/**
 * The unit's ExecStartPost: the release `current` points at (and systemd's $MAINPID) must be the one
 * answering, and a pending upgrade to it is confirmed once that instance confirms itself.
 */
async function waitConfirmed(manifest: string, root: string, timeoutSeconds: number, pid?: number) {
  const config = await loadOrReport(manifest);
  if (!config) return 2;
  const { ReleaseLayout } = await import("./src/release/layout.ts");
  const { gate } = await import("./src/release/gate.ts");
  const { startTime } = await import("./src/release/process.ts");
  const { confirm, readState } = await import("./src/release/state.ts");
  const layout = new ReleaseLayout(root);
  const version = await layout.currentVersion();
  const starttime = pid === undefined ? null : await startTime(pid);
  const result = await gate({
    readyUrl: ownApiUrl(config.api, "/readyz"),
    readyTls: config.api.tls,
    version: version ?? "",
    dataDir: config.storage.dataDir,
    timeoutMs: timeoutSeconds * 1000,
    process: pid === undefined ? undefined : { pid, starttime: starttime ?? "gone", exe: null, version: version ?? "" },
  });
  if (!result.ok) {
    await layout.record("not_ready", { version, reason: result.reason, pid });
    console.error(`Not ready: ${result.reason}`);
    return 1;
  }
  const state = await readState(layout);
  if (state?.state === "pending" && state.candidate === version) {
    await confirm(layout, version, { instanceId: result.instanceId, store: config.storage });
  }
  await layout.record("live", { version, instanceId: result.instanceId, pid: result.pid });
  return 0;
}

async function waitReady(manifest: string, timeoutSeconds: number): Promise<number> {
  const config = await loadOrReport(manifest);
  if (!config) return 2;
  const url = ownApiUrl(config.api, "/readyz");
  const started = Date.now();
  const deadline = started + timeoutSeconds * 1000;
  let last = "no answer";
  while (Date.now() < deadline) {
    try {
      const response = await loopbackFetch(url, {
        timeoutMs: 2_000,
        apiListen: config.api.listen,
        tls: config.api.tls,
      });
      last = `answered ${response.status} ${await response.text()}`;
      if (response.status === 200) {
        console.log(`Ready: ${url} answered 200 after ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return 0;
      }
    } catch (error) {
      last = unreachable(url, error as Error);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  console.error(`Not ready after ${timeoutSeconds} s: ${url} ${last}`);
  return 1;
}

/** Why `url` gave no answer: fetch's own "fetch failed" says nothing, its cause does. */
function unreachable(url: string, error: Error): string {
  const cause = error.cause instanceof Error ? error.cause.message : error.message;
  return `did not answer: ${cause.replace(`error sending request for url (${url}): `, "")}`;
}

async function run(manifest: string, dataDir: string | undefined, unsafeBroad: boolean): Promise<number> {
  const config = await loadOrReport(manifest, dataDir);
  if (!config) return 2;
  const log = createLogger(config.logLevel);
  const broader = broaderPermissions(ownExpectedFlags(config)).map(describeBroadening);
  if (broader.length > 0 && !unsafeBroad) {
    log.error("permissions.too_broad", { problems: broader });
    console.error(
      `Refusing to start: Deno grants more than the manifest allows:\n  ${broader.join("\n  ")}\n` +
        `Start Outpost with "deno task start" (flags derived from the manifest), or pass ` +
        `--unsafe-broad-permissions to override.`,
    );
    return 3;
  }
  if (broader.length > 0) {
    log.warn("permissions.too_broad_overridden", { problems: broader });
    console.error(
      `WARNING: --unsafe-broad-permissions: running with grants the manifest does not allow:\n  ${
        broader.join("\n  ")
      }`,
    );
  }

  const shutdown = new AbortController();
  const onSignal = () => shutdown.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let runtime;
  try {
    // Loaded here so that check, version and help need no native addon and no permission for it.
    const { startRuntime } = await import("./src/runtime.ts");
    runtime = await startRuntime(config, log, shutdown.signal);
  } catch (error) {
    log.error("runtime.start_failed", { error });
    console.error(`Outpost could not start: ${(error as Error).message}`);
    return 1;
  }
  log.info("outpost.started", { version: VERSION, manifest: config.manifestPath, dataDir: config.storage.dataDir });
  await new Promise<void>((resolve) => shutdown.signal.addEventListener("abort", () => resolve(), { once: true }));
  const forced = setTimeout(() => {
    log.error("outpost.shutdown_timeout", { graceMs: SHUTDOWN_GRACE_MS });
    Deno.exit(1);
  }, SHUTDOWN_GRACE_MS);
  await runtime.finished;
  clearTimeout(forced);
  // The listeners stay until the process exits: a Ctrl-C reaches it twice (the terminal signals
  // the whole group, and the launcher forwards its own), and one arriving after a removal would
  // turn a clean stop into a death by SIGINT (exit 130).
  return 0;
}

if (import.meta.main) Deno.exit(await main().catch(refusedAccess));
