/**
 * A destination outside any sane allowlist (TEST-NET-2, RFC 5737): if Deno would let us reach
 * it, network access is broader than the manifest.
 */
const CANARY_HOST = "198.51.100.7:9";

/**
 * Permissions the process holds beyond what the manifest derives (for example `-A` or a bare
 * `--allow-net`). Empty when the process is confined as `permissionFlags` describes.
 */
export async function broaderPermissions(netAllowlist: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  const granted = async (descriptor: Deno.PermissionDescriptor) =>
    (await Deno.permissions.query(descriptor)).state === "granted";
  if (await granted({ name: "net" })) {
    problems.push("net: every host (expected only the manifest's addresses)");
  } else if (!netAllowlist.includes(CANARY_HOST) && await granted({ name: "net", host: CANARY_HOST })) {
    problems.push(`net: reaches ${CANARY_HOST}, which the manifest does not allow`);
  }
  if (await granted({ name: "run" })) problems.push("run: any program (Outpost runs none)");
  if (await granted({ name: "write" })) problems.push("write: the whole file system (expected the data dir)");
  if (await granted({ name: "ffi" })) problems.push("ffi: any library (expected the native addons by path)");
  return problems;
}
