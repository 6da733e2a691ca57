import { join } from "node:path";

export const LOCK_FILE = "outpost.lock";

/** Another process holds the data dir. */
export class DataDirLockedError extends Error {
  readonly dataDir: string;
  readonly holderPid: number | null;
  constructor(dataDir: string, holderPid: number | null) {
    super(
      `Data dir ${dataDir} is in use by another Outpost (PID ${holderPid ?? "unknown"}): ` +
        "one instance per data dir",
    );
    this.name = "DataDirLockedError";
    this.dataDir = dataDir;
    this.holderPid = holderPid;
  }
}

/**
 * An exclusive advisory lock (flock) on `<dataDir>/outpost.lock`, holding the owner's PID. The
 * kernel releases it when the process ends, however it ends, so a crash never leaves it stale.
 */
export class DataDirLock {
  readonly #file: Deno.FsFile | null;

  private constructor(file: Deno.FsFile | null) {
    this.#file = file;
  }

  /** Takes the lock or throws DataDirLockedError naming the holder. */
  static async acquire(dataDir: string): Promise<DataDirLock> {
    const path = join(dataDir, LOCK_FILE);
    let file: Deno.FsFile;
    let writable = true;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true });
    } catch (error) {
      // A read-only data dir: nobody can write to it, so a shared hold of an existing lock file
      // is enough; the store then reports itself not ready instead of the process dying.
      if ((error as { code?: string }).code !== "EROFS") throw error;
      writable = false;
      file = await Deno.open(path, { read: true }).catch(() => null) as Deno.FsFile;
      if (!file) return new DataDirLock(null);
    }
    if (!await file.tryLock(writable)) {
      file.close();
      const holder = Number.parseInt(await Deno.readTextFile(path).catch(() => ""), 10);
      throw new DataDirLockedError(dataDir, Number.isInteger(holder) ? holder : null);
    }
    if (writable) {
      await file.truncate(0);
      await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    }
    return new DataDirLock(file);
  }

  release(): void {
    this.#file?.close();
  }
}
