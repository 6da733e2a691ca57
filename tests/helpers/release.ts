import { join } from "node:path";
import { loadConfig } from "../../src/config/config.ts";
import { runtimeFlags } from "../../src/permissions/flags.ts";
import { sha256Hex } from "../../src/sha256.ts";
import { generateKeyPair, keyFingerprint, signFile, type TrustedKey } from "../../src/release/signature.ts";
import { MAIN, PROJECT_ROOT } from "./outpost_process.ts";

/**
 * A stand-in for a compiled release binary: a launcher that runs main.ts under `deno run` with
 * the flags derived from the release's manifest (what `deno compile` would bake in), with the
 * `.sha256` and `.release.json` that `deno task compile` writes beside a binary.
 * `broken: true` makes a release that starts but never becomes ready. Releases are signed with
 * `signingKey` (default: this process's test key; null: unsigned), and their manifest trusts
 * `trustedKeys` (default: the test key) in `spec.release.trustedKeys`.
 */
export async function buildRelease(
  dir: string,
  version: string,
  options: {
    manifest: string;
    root: string;
    broken?: boolean;
    signingKey?: TestKey | null;
    trustedKeys?: readonly TrustedKey[];
  },
): Promise<string> {
  const folder = join(dir, "incoming", version);
  await Deno.mkdir(folder, { recursive: true });
  const manifest = join(folder, "outpost.yaml");
  const signingKey = options.signingKey === undefined ? await testKey() : options.signingKey;
  const trustedKeys = options.trustedKeys ?? [(await testKey()).trusted];
  await Deno.writeTextFile(
    manifest,
    (await Deno.readTextFile(options.manifest)).trimEnd() + "\n" + (trustedKeys.length === 0 ? "" : [
      "  release:",
      "    trustedKeys:",
      ...trustedKeys.map((key) => `      - { id: ${key.id}, publicKey: "${key.publicKey}" }`),
      "",
    ].join("\n")),
  );
  const config = await loadConfig(manifest);
  // A compiled release reads release.json beside itself (its folder is readable); run from source it
  // reads the one beside its manifest, so that single file is added to the read grant.
  const identityFile = join(folder, "release.json");
  const releaseFlags = runtimeFlags(config, { projectRoot: PROJECT_ROOT });
  const runFlags = releaseFlags
    .map((flag) => flag.startsWith("--allow-read=") ? `${flag},${identityFile},${identityFile}.sig` : flag)
    .map(quote).join(" ");
  const adminFlags = [
    "--allow-read",
    // The data dir too: a switch restores the model assignments of the release about to run.
    `--allow-write=${options.root},${config.storage.dataDir}`,
    "--allow-ffi",
    ...releaseFlags.filter((flag) => flag.startsWith("--allow-sys")),
    "--allow-run",
    "--allow-net=127.0.0.1",
    "--ignore-env",
  ].map(quote).join(" ");
  const deno = quote(Deno.execPath());
  const script = `#!/bin/sh
# Stand-in for outpost ${version}: main.ts under the release's flags.
case "$1" in
  upgrade|rollback|wait-ready|resume|service) exec ${deno} run --cached-only ${adminFlags} ${
    quote(MAIN)
  } "$@" --manifest ${quote(manifest)} ;;
  run) ${
    options.broken
      ? `exec ${deno} run ${quote(join(folder, "hang.js"))}`
      : `exec ${deno} run --cached-only ${runFlags} ${quote(MAIN)} run --manifest ${quote(manifest)}`
  } ;;
  *) exec ${deno} run --cached-only ${runFlags} ${quote(MAIN)} "$@" ;;
esac
`;
  // The broken release's process: never answers, and its command line names the drill's folder.
  await Deno.writeTextFile(join(folder, "hang.js"), "setInterval(() => {}, 1 << 30);\n");
  const binary = join(folder, "outpost");
  await Deno.writeTextFile(binary, script, { mode: 0o755 });
  const sha256 = sha256Hex(script);
  await Deno.writeTextFile(`${binary}.sha256`, `${sha256}  outpost\n`);
  const release = JSON.stringify({
    version,
    target: `${Deno.build.arch}-unknown-linux-gnu`,
    binary: { file: "outpost", sha256 },
    manifest: { path: "policies/outpost.yaml", sha256: sha256Hex(await Deno.readTextFile(manifest)) },
    models: [],
  });
  await Deno.writeTextFile(`${binary}.release.json`, release);
  await Deno.writeTextFile(identityFile, release);
  if (signingKey !== null) {
    await signFile(binary, signingKey);
    await signFile(`${binary}.release.json`, signingKey);
    await Deno.copyFile(`${binary}.release.json.sig`, `${identityFile}.sig`);
  }
  return binary;
}

/** A signing key for test releases: its private key (also as a PEM file) and its policy entry. */
export interface TestKey {
  key: CryptoKey;
  publicKey: string;
  pem: string;
  trusted: TrustedKey;
}

let shared: Promise<TestKey> | null = null;

/** The process's default release key (`id` names it in the policy). */
export function testKey(): Promise<TestKey> {
  return shared ??= newTestKey("test-release");
}

export async function newTestKey(id: string): Promise<TestKey> {
  const pair = await generateKeyPair();
  const der = Uint8Array.from(
    atob(pair.privateKeyPem.replace(/-----[^-]+-----|\s/g, "")),
    (char) => char.charCodeAt(0),
  );
  const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  return {
    key,
    publicKey: pair.publicKey,
    pem: pair.privateKeyPem,
    trusted: { id, publicKey: pair.publicKey },
  };
}

export { keyFingerprint };

function quote(value: string): string {
  return `'${value.replaceAll("'", `'"'"'`)}'`;
}
