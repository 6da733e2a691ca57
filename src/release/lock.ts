import type { ReleaseLayout } from "./layout.ts";

/**
 * The upgrade lock: `flock()` on `<root>/upgrade.lock`, so only one upgrade or rollback changes the
 * install at a time. The kernel drops it when its holder dies (even by SIGKILL), so a killed
 * upgrade never leaves a stale lock behind.
 */
export async function tryLock(layout: ReleaseLayout): Promise<Disposable | null> {
  await Deno.mkdir(layout.root, { recursive: true });
  const file = await Deno.open(layout.lockFile, { read: true, write: true, create: true });
  if (!(await file.tryLock(true))) {
    file.close();
    return null;
  }
  await file.truncate();
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  return { [Symbol.dispose]: () => file.close() };
}
