/**
 * Small tmpfs mounts for full-disk and read-only tests; null where mounting is not permitted
 * (not root), so the tests that need one are ignored there.
 */
export async function mountTmpfs(sizeMb: number, prefix = "outpost-disk-"): Promise<string | null> {
  const dir = await Deno.makeTempDir({ prefix });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${sizeMb}m`, "tmpfs", dir],
    stderr: "null",
  })
    .output().catch(() => null);
  if (!mount?.success) {
    await Deno.remove(dir);
    return null;
  }
  return dir;
}

/** Unmounts lazily (a failed libSQL connection may hold a file until garbage collection), then removes the dir. */
export async function unmountTmpfs(dir: string): Promise<void> {
  await new Deno.Command("umount", { args: ["--lazy", dir] }).output();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
