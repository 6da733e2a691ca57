import { dirname, join } from "node:path";
import { SignatureError, type TrustedKey, verifyFile } from "./release/signature.ts";

/** Outpost's source version; `outpost version` prints it beside the release version. */
export const VERSION = "0.1.0";

/**
 * No real clock reads earlier than the day this source was released: a wall clock before it is
 * known to be wrong (a Raspberry Pi without an RTC boots at its last saved time or 1970), and
 * checks against the wall clock are skipped until it is plausible.
 */
export const EARLIEST_PLAUSIBLE_MS = Date.parse("2026-11-23T00:00:00Z");

/** Who answers on /healthz and /readyz: the upgrade gate checks all three. */
export interface ReleaseIdentity {
  /** The release version from the `release.json` this process was installed with, else the source version. */
  version: string;
  source: string;
  /** New on every start: tells two runs of the same release apart. */
  instanceId: string;
  pid: number;
  /**
   * The signature of this release's `release.json` (which names the binary's SHA-256), checked at
   * start against the policy's trusted keys: `verified` with the key, `unsigned`, or `invalid` with
   * the reason. Null when this process does not run from a release.
   */
  signature: ReleaseSignature | null;
}

export type ReleaseSignature =
  | { status: "verified"; key: string; keyId: string; sha256: string }
  | { status: "unsigned" }
  | { status: "invalid"; reason: string };

/**
 * A compiled release reads `release.json` beside its binary (`releases/<version>/`); a release run
 * from source (the test stand-ins) reads it beside its manifest. Unreadable means "not a release".
 */
export async function releaseIdentity(
  manifestPath: string,
  trustedKeys: readonly TrustedKey[] = [],
): Promise<ReleaseIdentity> {
  let version = VERSION;
  let signature: ReleaseSignature | null = null;
  for (const folder of [dirname(Deno.execPath()), dirname(manifestPath)]) {
    try {
      const manifest = JSON.parse(await Deno.readTextFile(join(folder, "release.json")));
      if (typeof manifest?.version === "string") {
        version = manifest.version;
        signature = await releaseSignature(join(folder, "release.json"), trustedKeys);
        break;
      }
    } catch { /* not beside this one */ }
  }
  return Object.freeze({ version, source: VERSION, instanceId: crypto.randomUUID(), pid: Deno.pid, signature });
}

async function releaseSignature(file: string, trustedKeys: readonly TrustedKey[]): Promise<ReleaseSignature> {
  try {
    const verified = await verifyFile(file, "release", trustedKeys, { anyName: true });
    return { status: "verified", key: verified.key, keyId: verified.keyId, sha256: verified.sha256 };
  } catch (error) {
    if (!(error instanceof SignatureError)) return { status: "invalid", reason: (error as Error).message };
    return error.reason === "unsigned" ? { status: "unsigned" } : { status: "invalid", reason: error.message };
  }
}
