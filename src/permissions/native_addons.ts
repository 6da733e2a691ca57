import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

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
 * The native addon files Outpost loads (`process.dlopen`), found in the local node_modules:
 * libsql's `index.node` and onnxruntime's binding (which loads `libonnxruntime.so.1` from its own
 * folder natively, unchecked by Deno). These are the only paths the `--allow-ffi` flag names.
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
  const ortFolder = `onnxruntime-node/bin/napi-v6/${target.os}/${target.arch}`;
  const ort: string[] = [];
  for (const entry of readDirNames(store)) {
    if (entry.startsWith("onnxruntime-node@")) {
      ort.push(join(store, entry, "node_modules", ortFolder, "onnxruntime_binding.node"));
    }
  }
  if (found.length === 0 || ort.length === 0) {
    throw new Error(
      `Native addon not installed: ${found.length === 0 ? libsql : "onnxruntime-node"} under ${store} ` +
        `(run "deno install" for this target first)`,
    );
  }
  return [...found.sort(), ...ort.sort()];
}

/**
 * The same addon files as `nativeAddonPaths`, found the way the loaders find them (npm module
 * resolution from this file), which needs no read permission on node_modules: for the self-check
 * inside a process confined to its derived flags.
 */
export function resolvedNativeAddonPaths(target: NativeTarget = HOST_TARGET): string[] {
  const require = createRequire(import.meta.url);
  const libsql = createRequire(createRequire(require.resolve("@libsql/client")).resolve("libsql"))
    .resolve(`@libsql/${target.os}-${target.arch}-gnu/index.node`);
  const ort = createRequire(require.resolve("onnxruntime-node"))
    .resolve(`../bin/napi-v6/${target.os}/${target.arch}/onnxruntime_binding.node`);
  return [libsql, ort];
}

/**
 * The libSQL URL for a database file. libsql decodes `%XX` in a `file:` URL and reads `?` and `#`
 * as query and fragment, so `file:${path}` with a data dir such as `/srv/data/%2e%2e` opens
 * `/srv/outpost.db`: native code writing outside `--allow-write`, which names the literal folder.
 * A `file://` URL with every such character escaped opens exactly `path`.
 */
export function databaseUrl(path: string): string {
  return pathToFileURL(path).href;
}

function readDirNames(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((entry) => entry.name);
  } catch {
    return [];
  }
}
