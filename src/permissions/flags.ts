import { dirname, join } from "node:path";
import { type Config, OUTPOST_ENV_VARS, secretFiles } from "../config/config.ts";
import { formatDestination } from "../egress/allowlist.ts";
import { HOST_TARGET, nativeAddonPaths, type NativeTarget, resolvedNativeAddonPaths } from "./native_addons.ts";

/** Variables read by the libraries we ship (libsql's loader checks LIBSQL_JS_DEV). */
const LIBRARY_ENV_VARS = ["LIBSQL_JS_DEV"];
/** libsql's loader calls detect-libc, which reads `process.report`: these are what that needs. */
const LIBRARY_SYS_APIS = ["cpus", "hostname", "networkInterfaces"];

/**
 * V8 heap limits for a 128 MB device: a 1 MB young generation and a 64 MB old generation keep
 * peak RSS near 100 MB under full ingest load instead of 160 MB (tests/bench, "RSS peak"),
 * for about 10% less throughput. The old generation holds ~15 MB of live data at idle.
 * `--optimize-for-size` makes V8 collect and shrink its heap sooner: 10,000 hostile requests
 * peaked at 120-123 MB instead of 127-132 MB (tests/hostile_http_test.ts).
 */
export const V8_FLAGS = "--v8-flags=--max-semi-space-size=1,--max-old-space-size=64,--optimize-for-size";

/**
 * Environment the service runs with, as the systemd unit sets it: glibc keeps at most two malloc
 * arenas instead of one per thread that ever allocated (measured: 2-4 MB less anonymous memory
 * under the realistic load of tests/bench/memory_bench.ts).
 */
export const SERVICE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };

export interface PermissionOptions {
  /** Folder that holds `models/`, `policies/` and `node_modules/`. */
  projectRoot: string;
  target?: NativeTarget;
  /** Override for the addon paths (a compiled binary extracts them elsewhere). */
  nativeAddons?: readonly string[];
  /**
   * A compiled, self-extracting binary: the release folder it runs from. Reads and native addons
   * are then scoped to that folder (where the embedded files are extracted) plus the data dir.
   */
  releaseDir?: string;
}

/** Every host:port Outpost may open or listen on, derived from the manifest. */
export function netAllowlist(config: Config): string[] {
  const entries = new Set<string>();
  const listen = config.api.listen;
  entries.add(formatDestination(listen));
  if (config.metrics.enabled && config.metrics.port !== listen.port) {
    entries.add(formatDestination({ host: listen.host, port: config.metrics.port }));
  }
  if (config.mqtt) entries.add(formatDestination(config.mqtt.broker));
  for (const destination of config.network.egressAllowed) entries.add(destination);
  return [...entries];
}

/** Everything `deno run` (and `deno compile`) needs besides the script: V8 limits and permissions. */
export function runtimeFlags(config: Config, options: PermissionOptions): string[] {
  return [V8_FLAGS, ...permissionFlags(config, options)];
}

/** The exact Deno permission flags for running Outpost with this config. */
export function permissionFlags(config: Config, options: PermissionOptions): string[] {
  const root = options.projectRoot;
  const release = options.releaseDir;
  const addons = release ? [release] : options.nativeAddons ?? nativeAddonPaths(root, options.target ?? HOST_TARGET);
  const readPaths = release
    ? [config.storage.dataDir, release]
    : [config.storage.dataDir, join(root, "models"), join(root, "policies"), config.manifestPath];
  return [
    "--no-prompt",
    `--allow-net=${netAllowlist(config).join(",")}`,
    `--allow-read=${unique([...readPaths, ...secretFiles(config)]).join(",")}`,
    `--allow-write=${config.storage.dataDir}`,
    `--allow-ffi=${addons.join(",")}`,
    `--allow-env=${[...OUTPOST_ENV_VARS, ...LIBRARY_ENV_VARS].join(",")}`,
    "--ignore-env",
    `--allow-sys=${LIBRARY_SYS_APIS.join(",")}`,
  ];
}

/**
 * One binary serves `run` and `upgrade`/`rollback`, so it also carries what those need, scoped:
 * read and write under the install root (new binaries go in `<root>/incoming/`), and running
 * `systemctl`, `ln` and `<root>/current/outpost`. The service cannot use them: its unit keeps
 * /opt read-only (ProtectSystem=strict) and it holds no privileges to restart units.
 */
export function withReleasePermissions(flags: string[], installRoot: string): string[] {
  const add = (flag: string, extra: string) => flag.replace(/=(.*)$/, (_, list) => `=${list},${extra}`);
  return [
    ...flags.map((flag) =>
      flag.startsWith("--allow-read=") || flag.startsWith("--allow-write=") ? add(flag, installRoot) : flag
    ),
    // setsid starts a release outside systemd in its own session; ps and readlink check a PID file's process.
    `--allow-run=systemctl,ln,setsid,ps,readlink,${join(installRoot, "current", "outpost")}`,
  ];
}

export interface ExpectedOptions {
  /** Folder of main.ts when Outpost runs under `deno run` (`deno task start`). */
  projectRoot: string;
  /**
   * The compiled binary's own path when Outpost runs as one (`Deno.build.standalone`): it lives at
   * `<root>/releases/<version>/outpost`, and compile/plan.ts baked in the release flags for that.
   */
  executable?: string;
}

/**
 * The flags this process should have been started with, for the self-check: what `deno task
 * start` passes, or, in a compiled binary, what compile/plan.ts baked in.
 */
export function expectedPermissionFlags(config: Config, options: ExpectedOptions): string[] {
  if (options.executable === undefined) {
    return permissionFlags(config, { projectRoot: options.projectRoot, nativeAddons: resolvedNativeAddonPaths() });
  }
  const releaseDir = dirname(options.executable);
  const installRoot = dirname(dirname(releaseDir));
  return withReleasePermissions(permissionFlags(config, { projectRoot: options.projectRoot, releaseDir }), installRoot);
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
