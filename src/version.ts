import { dirname, join } from "node:path";

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
}

/**
 * A compiled release reads `release.json` beside its binary (`releases/<version>/`); a release run
 * from source (the test stand-ins) reads it beside its manifest. Unreadable means "not a release".
 */
export async function releaseIdentity(manifestPath: string): Promise<ReleaseIdentity> {
  let version = VERSION;
  for (const folder of [dirname(Deno.execPath()), dirname(manifestPath)]) {
    try {
      const manifest = JSON.parse(await Deno.readTextFile(join(folder, "release.json")));
      if (typeof manifest?.version === "string") {
        version = manifest.version;
        break;
      }
    } catch { /* not beside this one */ }
  }
  return Object.freeze({ version, source: VERSION, instanceId: crypto.randomUUID(), pid: Deno.pid });
}
