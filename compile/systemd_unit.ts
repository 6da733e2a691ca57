/**
 * `deno task systemd-unit [--manifest P] [--install-root DIR]`: prints the hardened systemd unit for
 * a manifest. The network rules come from the same allowlist as the Deno flags
 * (src/egress/os_rules.ts), with host names resolved now, at render time.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type Config, loadConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/errors.ts";
import { type NetworkRules, renderNetworkRules } from "../src/egress/os_rules.ts";
import { SERVICE_ENV } from "../src/permissions/flags.ts";

const STATE_ROOT = "/var/lib/";

export interface UnitOptions {
  installRoot: string;
  rules: NetworkRules;
  renderedAt: string;
}

export function renderUnit(config: Config, options: UnitOptions): string {
  const dataDir = config.storage.dataDir;
  const current = join(options.installRoot, "current");
  const state = dataDir.startsWith(STATE_ROOT) && !dataDir.slice(STATE_ROOT.length).includes("/")
    ? [`StateDirectory=${dataDir.slice(STATE_ROOT.length)}`, "StateDirectoryMode=0750"]
    : [`ReadWritePaths=${dataDir}`];
  const unresolved = options.rules.unresolved.map((entry) =>
    `# NOT RESOLVED at render time, so blocked by the OS: ${entry.host} (${entry.error})`
  );
  return [
    `# Outpost ${config.name}: rendered from ${config.manifestPath} (sha256 ${config.manifestSha256.slice(0, 16)})`,
    `# on ${options.renderedAt}. IPAddressAllow holds the addresses the allowlist's names resolved to`,
    "# at that time: render again when they change.",
    "[Unit]",
    `Description=Outpost edge runtime (${config.name})`,
    "After=network-online.target",
    "Wants=network-online.target",
    "StartLimitIntervalSec=600",
    "StartLimitBurst=5",
    "",
    "[Service]",
    "Type=exec",
    // Every start resumes the upgrade state machine first (src/release/state.ts): a candidate out of
    // starts or past its deadline is switched back to the last confirmed release before it runs.
    // Run by the last confirmed release's binary ("+": with the privileges to move `current` under
    // the read-only /opt), so a broken candidate cannot stop its own rollback.
    `ExecStartPre=+${join(options.installRoot, "last-good", "outpost")} resume --root ${options.installRoot}`,
    `ExecStart=${join(current, "outpost")} run`,
    // Health-driven start: the unit is only "started" once the release `current` points at, as
    // $MAINPID, answers /readyz and confirms itself; a pending upgrade is confirmed here. Otherwise
    // systemd stops it and Restart= tries again, which counts against the candidate's starts
    // (3, below StartLimitBurst, so the rollback start still happens).
    `ExecStartPost=+${join(current, "outpost")} wait-ready --timeout 30 --root ${options.installRoot} --pid $MAINPID`,
    `WorkingDirectory=${current}`,
    "EnvironmentFile=-/etc/outpost/outpost.env",
    // The environment `deno task start` and the tests give the service (src/permissions/flags.ts).
    ...Object.entries(SERVICE_ENV).map(([name, value]) => `Environment=${name}=${value}`),
    "Restart=on-failure",
    "RestartSec=5s",
    "TimeoutStartSec=60s",
    "TimeoutStopSec=20s",
    "KillMode=mixed",
    "DynamicUser=yes",
    ...state,
    "UMask=0077",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "DevicePolicy=closed",
    "KeyringMode=private",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged",
    "SystemCallErrorNumber=EPERM",
    ...options.rules.directives,
    ...unresolved,
    // Above MemoryHigh the kernel reclaims (file-backed pages first) and throttles before
    // MemoryMax's OOM kill.
    "MemoryHigh=112M",
    "MemoryMax=128M",
    // Far above spec.limits.connections: refused connections are accepted and closed at once.
    // Should it run out anyway, the listener's watchdog refuses and recovers (src/api/accept_watchdog.ts).
    "LimitNOFILE=65536",
    "CPUQuota=50%",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { manifest: { type: "string" }, "install-root": { type: "string" } },
  });
  const manifest = resolve(values.manifest ?? join(import.meta.dirname!, "..", "policies", "device.yaml"));
  let config: Config;
  try {
    config = await loadConfig(manifest);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    return 2;
  }
  const rules = await renderNetworkRules(config);
  for (const entry of rules.unresolved) {
    console.error(`warning: ${entry.host} did not resolve (${entry.error}): the OS will block it`);
  }
  console.log(
    renderUnit(config, {
      installRoot: values["install-root"] ?? "/opt/outpost",
      rules,
      renderedAt: new Date().toISOString(),
    }),
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
