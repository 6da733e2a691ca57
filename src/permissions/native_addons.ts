import { join } from "node:path";

/** A CPU/OS pair as Deno and npm name it. */
export interface NativeTarget {
  readonly os: "linux";
  readonly arch: "x64" | "arm64";
}

export const HOST_TARGET: NativeTarget = {
  os: "linux",
  arch: Deno.build.arch === "aarch64" ? "arm64" : "x64",
};

/**
 * The native addon files Outpost loads (`process.dlopen`), found in the local node_modules.
 * These are the only paths the `--allow-ffi` flag names.
 */
export function nativeAddonPaths(projectRoot: string, target: NativeTarget = HOST_TARGET): string[] {
  const store = join(projectRoot, "node_modules", ".deno");
  const libsql = `@libsql/${target.os}-${target.arch}-gnu`;
  const found: string[] = [];
  for (const entry of readDirNames(store)) {
    if (entry.startsWith(`${libsql.replace("/", "+")}@`)) {
      found.push(join(store, entry, "node_modules", libsql, "index.node"));
    }
  }
  if (found.length === 0) {
    throw new Error(
      `Native addon not installed: ${libsql} under ${store} (run "deno install" for this target first)`,
    );
  }
  return found.sort();
}

function readDirNames(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((entry) => entry.name);
  } catch {
    return [];
  }
}
