/**
 * `deno task compile [--dry-run] [--target T] [--manifest P] [--install-root DIR] [--out DIR] [--sign-key KEY]`
 *
 * Stages the sources and the target's npm packages in `<out>/build-<target>`, then builds
 * `<out>/outpost-<version>-<target>` with `deno compile` (flags from the manifest, foreign native
 * binaries excluded) and writes a `.sha256` and a `.release.json` next to it, the monitoring files
 * (Prometheus rules, Grafana dashboard) into `<out>/outpost-<version>-monitoring/`, and with `--sign-key`
 * (PKCS#8 Ed25519) their signatures `.sig` and `.release.json.sig`. `--dry-run` prints
 * the plan as JSON instead of building, and removes what it staged to make the plan (hundreds of
 * MB of npm packages per target) unless `--out` names where to keep it. Air-gapped: the denort base binary comes from DENORT_BIN
 * or a zip staged in $DENO_DIR; its ELF machine must match the target.
 */
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { parse } from "yaml";
import { parseArgs } from "node:util";
import { readPrivateKey, signFile } from "../src/release/signature.ts";
import { loadConfig } from "../src/config/config.ts";
import { sha256File, sha256Hex } from "../src/sha256.ts";
import { ConfigError } from "../src/config/errors.ts";
import { type CompilePlan, compilePlan, DENO_VERSION, MONITORING_FILES, reachablePackages } from "./plan.ts";
import { elfMachine, isTarget, type Target, TARGETS } from "./targets.ts";

const PROJECT_ROOT = resolve(import.meta.dirname!, "..");
const STAGED = ["main.ts", "src", "models", "deno.json", "deno.lock"];
/** The manifest for devices: like the default one, with the data dir systemd's StateDirectory gives. */
const DEVICE_MANIFEST = join(PROJECT_ROOT, "policies", "device.yaml");

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "dry-run": { type: "boolean" },
      target: { type: "string", multiple: true },
      manifest: { type: "string" },
      "install-root": { type: "string" },
      out: { type: "string" },
      "sign-key": { type: "string" },
    },
  });
  const targets = values.target ?? Object.keys(TARGETS);
  const unknown = targets.filter((target) => !isTarget(target));
  if (unknown.length > 0) {
    console.error(`Unknown target ${unknown.join(", ")}: use ${Object.keys(TARGETS).join(" or ")}`);
    return 2;
  }
  const manifest = resolve(values.manifest ?? DEVICE_MANIFEST);
  try {
    await loadConfig(manifest);
    const dataDir = parse(await Deno.readTextFile(manifest))?.spec?.storage?.dataDir;
    if (typeof dataDir !== "string" || !isAbsolute(dataDir)) {
      console.error(
        `${manifest}: a compiled release needs an absolute spec.storage.dataDir (e.g. /var/lib/outpost): ` +
          `its permission flags are baked in at build time`,
      );
      return 2;
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 2;
    }
    throw error;
  }
  let signer: Signer | undefined;
  if (values["sign-key"] && !values["dry-run"]) {
    // Fail before building when the key cannot sign.
    try {
      signer = await readPrivateKey(values["sign-key"]);
    } catch (error) {
      console.error((error as Error).message);
      return 2;
    }
  }
  const outDir = resolve(values.out ?? join(PROJECT_ROOT, "dist"));
  const denorts = new Map<Target, Record<string, string>>();
  if (!values["dry-run"]) {
    // Fail before any staging when a base binary is missing or wrong.
    for (const target of targets as Target[]) {
      const denort = await findDenort(target);
      if ("error" in denort) {
        console.error(denort.error);
        return 1;
      }
      denorts.set(target, denort.env);
    }
  }
  // A dry run builds nothing, so it keeps nothing, unless --out says where its staging should stay
  // (to inspect it, or to run main.ts from it under the plan's flags as the tests do).
  const discardStaging = values["dry-run"] === true && values.out === undefined;
  const outDirExisted = await Deno.stat(outDir).then(() => true, () => false);
  const plans: CompilePlan[] = [];
  try {
    for (const target of targets as Target[]) {
      const buildDir = join(outDir, `build-${target}`);
      await stage(buildDir, manifest, target);
      const config = await loadConfig(join(buildDir, "policies", "outpost.yaml"));
      const plan = compilePlan(config, target, {
        buildDir,
        installRoot: values["install-root"] ?? "/opt/outpost",
        outDir,
        reachable: await reachableFrom(buildDir),
      });
      plans.push(plan);
      console.error(
        `${target}: payload ${(await payloadBytes(plan) / 1e6).toFixed(1)} MB (embedded files after excludes)`,
      );
    }
    if (values["dry-run"]) {
      console.log(JSON.stringify(plans.length === 1 ? plans[0] : plans, null, 2));
      const staged = plans.map((plan) => plan.buildDir).join(", ");
      console.error(
        discardStaging
          ? "Dry run: nothing built, the staging removed (--out DIR keeps it there)"
          : `Dry run: nothing built; staged in ${staged} (kept: --out was given)`,
      );
      return 0;
    }
  } finally {
    if (discardStaging) await removeStaging(outDir, targets as Target[], outDirExisted);
  }
  for (const plan of plans) {
    const code = await build(plan, denorts.get(plan.target)!, signer);
    if (code !== 0) return code;
  }
  return 0;
}

/** Copies the sources and the manifest into `buildDir` and installs the target's npm packages there. */
async function stage(buildDir: string, manifest: string, target: Target): Promise<void> {
  await Deno.remove(buildDir, { recursive: true }).catch(() => {});
  await Deno.mkdir(join(buildDir, "policies"), { recursive: true });
  for (const entry of STAGED) await copy(join(PROJECT_ROOT, entry), join(buildDir, entry));
  await Deno.copyFile(manifest, join(buildDir, "policies", "outpost.yaml"));
  await Deno.mkdir(join(buildDir, "monitoring"));
  for (const file of MONITORING_FILES) {
    await Deno.copyFile(join(PROJECT_ROOT, "compile", "monitoring", file), join(buildDir, "monitoring", file));
  }
  const { os, arch } = TARGETS[target];
  const install = await new Deno.Command(Deno.execPath(), {
    args: ["install", "--frozen", "--quiet", "--os", os, "--arch", arch],
    cwd: buildDir,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!install.success) throw new Error(`deno install for ${target} failed`);
}

/** Removes the build folders a dry run staged, and the out dir when the run created it. */
async function removeStaging(outDir: string, targets: Target[], outDirExisted: boolean): Promise<void> {
  for (const target of targets) {
    await Deno.remove(join(outDir, `build-${target}`), { recursive: true }).catch(() => {});
  }
  if (!outDirExisted) await Deno.remove(outDir).catch(() => {}); // only when empty
}

async function reachableFrom(buildDir: string): Promise<Set<string>> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "main.ts"],
    cwd: buildDir,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!info.success) throw new Error("deno info failed");
  return reachablePackages(JSON.parse(new TextDecoder().decode(info.stdout)));
}

async function copy(from: string, to: string): Promise<void> {
  const info = await Deno.stat(from);
  if (!info.isDirectory) return await Deno.copyFile(from, to);
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) await copy(join(from, entry.name), join(to, entry.name));
}

async function payloadBytes(plan: CompilePlan): Promise<number> {
  const excluded = new Set(plan.excludes.map((path) => join(plan.buildDir, path)));
  const walk = async (path: string): Promise<number> => {
    if (excluded.has(path)) return 0;
    const info = await Deno.lstat(path);
    if (!info.isDirectory) return info.isFile ? info.size : 0;
    let total = 0;
    for await (const entry of Deno.readDir(path)) total += await walk(join(path, entry.name));
    return total;
  };
  let total = 0;
  for (const entry of ["main.ts", "src", "models", "policies", "node_modules"]) {
    total += await walk(join(plan.buildDir, entry));
  }
  return total;
}

/** The denort base binary: DENORT_BIN (checked against the target) or a zip staged in DENO_DIR. */
async function findDenort(target: Target): Promise<{ env: Record<string, string> } | { error: string }> {
  const fromEnv = Deno.env.get("DENORT_BIN");
  const expected = TARGETS[target];
  if (fromEnv) {
    const machine = await elfMachine(fromEnv).catch(() => null);
    if (machine !== expected.elfMachine) {
      return {
        error: `DENORT_BIN=${fromEnv} is not an ${expected.elfName} ELF binary (e_machine ${
          machine === null ? "unreadable" : `0x${machine.toString(16)}`
        }); ${target} needs denort for ${expected.elfName}`,
      };
    }
    return { env: { DENORT_BIN: fromEnv } };
  }
  const denoDir = Deno.env.get("DENO_DIR") ?? join(Deno.env.get("HOME") ?? "/root", ".cache", "deno");
  const zip = join(denoDir, "dl", "release", `v${DENO_VERSION}`, `denort-${target}.zip`);
  if (await Deno.stat(zip).then(() => true, () => false)) return { env: {} };
  const reachable = await fetch(`https://dl.deno.land/release/v${DENO_VERSION}/denort-${target}.zip`, {
    method: "HEAD",
    signal: AbortSignal.timeout(3_000),
  }).then((response) => response.ok, () => false);
  if (reachable) return { env: {} };
  return {
    error: `No denort for ${target} and the Deno release host cannot be reached. Stage it, then rerun:\n` +
      `  DENORT_BIN=/path/to/denort (an ${expected.elfName} denort ${DENO_VERSION}), or\n` +
      `  copy denort-${target}.zip to ${zip}`,
  };
}

type Signer = Awaited<ReturnType<typeof readPrivateKey>>;

async function build(plan: CompilePlan, denortEnv: Record<string, string>, signer?: Signer): Promise<number> {
  const compiled = await new Deno.Command(Deno.execPath(), {
    args: plan.argv.slice(1),
    cwd: plan.buildDir,
    env: denortEnv,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!compiled.success) return compiled.code || 1;
  await shipMonitoring(plan);
  const binary = await Deno.readFile(plan.output);
  const sha256 = sha256Hex(binary);
  await Deno.writeTextFile(`${plan.output}.sha256`, `${sha256}  ${basename(plan.output)}\n`);
  await Deno.writeTextFile(
    `${plan.output}.release.json`,
    JSON.stringify(await releaseManifest(plan, sha256), null, 2) + "\n",
  );
  console.error(`${plan.output}: ${(binary.length / 1e6).toFixed(1)} MB, sha256 ${sha256}`);
  if (signer) {
    const signed = await signFile(plan.output, signer, { kind: "binary" });
    await signFile(`${plan.output}.release.json`, signer, { kind: "release" });
    console.error(`${plan.output}: signed with key ${signed.keyId} (.sig, .release.json.sig)`);
  } else {
    console.error(`${plan.output}: unsigned (--sign-key KEY, or outpost sign): devices refuse unsigned releases`);
  }
  return 0;
}

/** Copies the monitoring files from the staging to their place beside the binaries. */
export async function shipMonitoring(plan: CompilePlan): Promise<void> {
  for (const { source, output } of plan.monitoring) {
    await Deno.mkdir(dirname(output), { recursive: true });
    await Deno.copyFile(source, output);
  }
}

/** What a release carries, checked by `outpost upgrade` before it switches. */
export async function releaseManifest(plan: CompilePlan, sha256: string) {
  const models: { path: string; sha256: string }[] = [];
  for await (const entry of Deno.readDir(join(plan.buildDir, "models"))) {
    if (entry.isFile) {
      models.push({
        path: `models/${entry.name}`,
        sha256: await sha256File(join(plan.buildDir, "models", entry.name)),
      });
    }
  }
  return {
    version: plan.version,
    target: plan.target,
    deno: DENO_VERSION,
    binary: { file: basename(plan.output), sha256 },
    manifest: {
      path: "policies/outpost.yaml",
      sha256: await sha256File(join(plan.buildDir, "policies", "outpost.yaml")),
    },
    models,
    // For the monitoring host: relative to the binary's folder, e.g. outpost-<version>-monitoring/outpost.rules.yml.
    monitoring: await Promise.all(plan.monitoring.map(async ({ source, output }) => ({
      path: relative(dirname(plan.output), output),
      sha256: await sha256File(source),
    }))),
    releaseDir: plan.releaseDir,
    flags: plan.flags,
  };
}

if (import.meta.main) Deno.exit(await main());
