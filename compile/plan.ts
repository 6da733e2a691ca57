/**
 * The exact `deno compile` invocation for one target, derived from the manifest by the same code
 * that `deno task start` uses (src/permissions/flags.ts). `deno task compile --dry-run` prints it.
 */
import { join, relative } from "node:path";
import type { Config } from "../src/config/config.ts";
import { runtimeFlags, withReleasePermissions } from "../src/permissions/flags.ts";
import { VERSION } from "../src/version.ts";
import { type Target, TARGETS } from "./targets.ts";

export const DENO_VERSION = "2.9.5";

export interface CompilePlan {
  target: Target;
  version: string;
  /** Folder the sources are staged in and the target's npm packages installed into. */
  buildDir: string;
  install: string[];
  argv: string[];
  includes: string[];
  excludes: string[];
  output: string;
  /** Where the release runs from on the device; reads and native addons are scoped to it. */
  releaseDir: string;
  flags: string[];
  /**
   * Shipped beside the binaries, not embedded: the Prometheus rules and Grafana dashboard (for the
   * monitoring host, not the device), from their staged copy to `<outDir>/outpost-<version>-monitoring/`.
   * `release.json` lists each with its SHA-256.
   */
  monitoring: { source: string; output: string }[];
}

/** The files of compile/monitoring/ a release ships (the rules' own unit tests stay in the repository). */
export const MONITORING_FILES = ["outpost.rules.yml", "grafana-dashboard.json"] as const;

export interface PlanOptions {
  buildDir: string;
  installRoot: string;
  outDir: string;
  /** npm packages (name@version) that main.ts can reach; the others (test tools) are left out. */
  reachable?: ReadonlySet<string>;
}

/** The npm packages main.ts's module graph reaches, with their dependencies, from `deno info --json`. */
export function reachablePackages(info: {
  modules: { kind?: string; npmPackage?: string }[];
  npmPackages: Record<string, { dependencies?: string[] }>;
}): Set<string> {
  const seen = new Set<string>();
  const stack = info.modules.flatMap((module) => module.kind === "npm" && module.npmPackage ? [module.npmPackage] : []);
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    stack.push(...(info.npmPackages[id]?.dependencies ?? []));
  }
  return seen;
}

/**
 * Folders inside reachable packages that Outpost never loads: protobufjs's command-line tools and
 * prebuilt browser bundles (onnx-proto needs only `protobufjs/minimal`, which lives in `src/`).
 */
const UNUSED_PACKAGE_FOLDERS: Record<string, string[]> = { protobufjs: ["cli", "dist"] };

function unusedPackageFolders(buildDir: string): string[] {
  const store = join(buildDir, "node_modules", ".deno");
  return safeReadDir(store).flatMap((entry) => {
    const name = /^(@?[^@]+)@/.exec(entry)?.[1].replace("+", "/");
    return (name && UNUSED_PACKAGE_FOLDERS[name] || []).map((folder) =>
      join(store, entry, "node_modules", name!, folder)
    );
  });
}

/** node_modules/.deno folders of packages main.ts never loads. */
function unreachableFolders(buildDir: string, reachable: ReadonlySet<string>): string[] {
  const store = join(buildDir, "node_modules", ".deno");
  return safeReadDir(store).filter((entry) => {
    const match = /^(@?[^@]+)@([^_]+)/.exec(entry);
    if (!match) return false;
    const id = `${match[1].replace("+", "/")}@${match[2]}`;
    return !reachable.has(id);
  }).map((entry) => join(store, entry));
}

/** Every folder of a foreign platform's native code under the build dir's node_modules. */
export function foreignNativeFolders(buildDir: string, target: Target): string[] {
  const { os, arch } = TARGETS[target];
  const store = join(buildDir, "node_modules", ".deno");
  const excludes: string[] = [];
  for (const entry of safeReadDir(store)) {
    // Only libsql's platform packages (@libsql/linux-arm64-gnu, ...), not its JS packages.
    const libsql = /^@libsql\+(linux|darwin|win32)-(x64|arm64|arm)(?:-(gnu|musl|msvc))?@/.exec(entry);
    if (libsql && !(libsql[1] === os && libsql[2] === arch && libsql[3] === "gnu")) {
      excludes.push(join(store, entry));
    }
    if (entry.startsWith("onnxruntime-node@")) {
      const bin = join(store, entry, "node_modules", "onnxruntime-node", "bin", "napi-v6");
      for (const platform of safeReadDir(bin)) {
        if (platform !== os) {
          excludes.push(join(bin, platform));
          continue;
        }
        for (const cpu of safeReadDir(join(bin, platform))) if (cpu !== arch) excludes.push(join(bin, platform, cpu));
      }
    }
  }
  return excludes.sort();
}

export function compilePlan(config: Config, target: Target, options: PlanOptions): CompilePlan {
  const releaseDir = join(options.installRoot, "releases", VERSION);
  const flags = withReleasePermissions(
    runtimeFlags(config, { projectRoot: options.buildDir, releaseDir }),
    options.installRoot,
  );
  const manifest = join(options.buildDir, "policies", "outpost.yaml");
  const includes = [join(options.buildDir, "models"), manifest];
  const excludes = [
    ...foreignNativeFolders(options.buildDir, target),
    ...(options.reachable ? unreachableFolders(options.buildDir, options.reachable) : []),
    ...unusedPackageFolders(options.buildDir),
  ].sort();
  const output = join(options.outDir, `outpost-${VERSION}-${target}`);
  const { os, arch } = TARGETS[target];
  return {
    target,
    version: VERSION,
    buildDir: options.buildDir,
    install: ["deno", "install", "--frozen", "--os", os, "--arch", arch],
    argv: [
      "deno",
      "compile",
      "--self-extracting",
      "--no-check",
      "--cached-only",
      "--target",
      target,
      "--output",
      output,
      ...includes.flatMap((path) => ["--include", path]),
      ...excludes.flatMap((path) => ["--exclude", path]),
      ...flags,
      join(options.buildDir, "main.ts"),
    ],
    includes: includes.map((path) => relative(options.buildDir, path)),
    excludes: excludes.map((path) => relative(options.buildDir, path)),
    output,
    releaseDir,
    flags,
    monitoring: MONITORING_FILES.map((file) => ({
      source: join(options.buildDir, "monitoring", file),
      output: join(options.outDir, `outpost-${VERSION}-monitoring`, file),
    })),
  };
}

function safeReadDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((entry) => entry.name).sort();
  } catch {
    return [];
  }
}
