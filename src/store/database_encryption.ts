/**
 * `outpost db encrypt|decrypt`: converts the store in a data dir between plaintext and libSQL's
 * encryption at rest, offline. The rules it keeps:
 *
 * - It holds the data dir's lock throughout, so it refuses to run while Outpost does.
 * - The original is replaced only by a complete, checked copy: `VACUUM INTO` writes the converted
 *   database beside it, the copy is opened as it will be opened (with the key, or without),
 *   checked (`quick_check`, row counts of every table equal to the original's) and synced, and
 *   only then renamed over the original. A crash leaves the original or the converted database,
 *   plus at most a leftover copy that the next run removes.
 * - The key comes from the configuration, as for `run`; decrypt therefore runs before the
 *   manifest's `spec.storage.encryption.enabled` is set back to false.
 * - Model bundles follow the database (src/detect/bundle_seal.ts): encrypt seals the bundle files
 *   written in clear, decrypt opens the sealed ones, so calibrated models keep loading after a
 *   decrypt or a key change. Folder names stay as they are (one written in clear names its model).
 *
 * What it cannot do: erase the old plaintext from the medium. The replaced file's blocks are freed,
 * not overwritten, and flash storage (SD cards) remaps writes, so they may stay readable on the
 * card. Only a store that was encrypted from its first start has never been written in clear.
 *
 * libSQL's `close()` leaves the native connection open until garbage collection, so the command
 * runs in a process that exits when it is done (main.ts), never inside a running Outpost.
 */
import type { Client } from "@libsql/client";
import { join } from "node:path";
import type { SecretLocation } from "../config/config.ts";
import { databaseUrl } from "../permissions/native_addons.ts";
import { DataDirLock } from "./data_dir_lock.ts";
import { giveToOwnerOf } from "./file_owner.ts";
import {
  connectTo,
  CONVERSION_COPY_FILES,
  CONVERSION_COPY_SUFFIX,
  DATABASE_FILE,
  databaseFileState,
  prepareConnection,
  type StoreLocation,
  withDatabaseFile,
} from "./database.ts";
import { DatabaseKey, describeKeyLocation } from "./encryption_key.ts";
import { BundleSealer, convertBundles } from "../detect/bundle_seal.ts";

export interface ConversionResult {
  database: string;
  /** `converted`: the file was rewritten; `unchanged`: it already was as asked; `none`: no database yet. */
  outcome: "converted" | "unchanged" | "none";
  encrypted: boolean;
  tables?: number;
  rows?: number;
  /** Model bundle files sealed (encrypt) or opened (decrypt) by this run (src/detect/bundle_seal.ts). */
  bundleFiles?: number;
}

/** Where detection keeps model bundles in the data dir (src/detect/detection.ts). */
const MODELS_DIR = "models";

/** The conversion failed before the original was replaced; the original is as it was. */
export class ConversionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConversionError";
  }
}

/**
 * Makes the store at `store.dataDir` encrypted with `key` (`to: "encrypted"`) or plaintext, read
 * with `key` (`to: "plaintext"`). Throws DataDirLockedError while Outpost runs, StoreEncryptionError
 * when the key does not open an encrypted file, ConversionError when the copy does not check out.
 */
export async function convertDatabase(
  dataDir: string,
  key: SecretLocation,
  options: { to: "encrypted" | "plaintext" },
): Promise<ConversionResult> {
  const databaseKey = await DatabaseKey.load(key);
  const lock = await DataDirLock.acquire(dataDir);
  const encrypt = options.to === "encrypted";
  try {
    const result = await convertFile(dataDir, databaseKey, encrypt);
    if (result.outcome === "none") return result;
    // After the database (a wrong key fails there first), also when it was already as asked: a
    // run that was interrupted between the two is finished by running it again.
    const sealer = await BundleSealer.fromSecret(databaseKey.reveal());
    const bundleFiles = await convertBundles(join(dataDir, MODELS_DIR), sealer, encrypt ? "sealed" : "clear");
    return { ...result, bundleFiles };
  } finally {
    lock.release();
  }
}

/** The database file's half of convertDatabase, under its lock. */
async function convertFile(dataDir: string, databaseKey: DatabaseKey, encrypt: boolean): Promise<ConversionResult> {
  const path = join(dataDir, DATABASE_FILE);
  const state = await databaseFileState(path);
  if (state === "none") return { database: path, outcome: "none", encrypted: false };
  const sourceKey = state === "encrypted" ? databaseKey : null;
  if ((state === "encrypted") === encrypt) {
    // Already as asked: an encrypted file must still open with the key (or this is the wrong key).
    if (sourceKey) await withConnection(path, sourceKey, async () => {});
    return { database: path, outcome: "unchanged", encrypted: encrypt };
  }
  const copy = path + CONVERSION_COPY_SUFFIX;
  for (const suffix of CONVERSION_COPY_FILES) await removeIfPresent(path + suffix);
  const counts = await withConnection(path, sourceKey, async (client) => {
    const checkpoint = await client.execute("PRAGMA wal_checkpoint(TRUNCATE)");
    if (Number(checkpoint.rows[0]?.busy ?? 0) !== 0) {
      throw new ConversionError(`Cannot checkpoint ${path}: another process has it open`);
    }
    const before = await tableCounts(client);
    const target = encrypt ? `hexkey=${databaseKey.revealHex()}` : "key=";
    await client.execute(`VACUUM INTO '${`${databaseUrl(copy)}?${target}`.replaceAll("'", "''")}'`);
    return before;
  });
  const after = await withConnection(copy, encrypt ? databaseKey : null, async (client) => {
    const check = await client.execute("PRAGMA quick_check");
    const verdict = String(check.rows[0]?.[0] ?? "");
    if (verdict !== "ok") throw new ConversionError(`The converted copy ${copy} fails quick_check: ${verdict}`);
    return await tableCounts(client);
  });
  const expected = JSON.stringify(counts);
  if (JSON.stringify(after) !== expected) {
    throw new ConversionError(`The converted copy ${copy} does not hold the original's rows: ${expected}`);
  }
  if ((await databaseFileState(copy)) !== (encrypt ? "encrypted" : "plaintext")) {
    throw new ConversionError(`The converted copy ${copy} is not ${encrypt ? "encrypted" : "plaintext"}`);
  }
  await syncFile(copy);
  giveToOwnerOf(copy, path);
  // The original's WAL was checkpointed into it: nothing of it is lost with these.
  for (const suffix of ["-wal", "-shm"]) await removeIfPresent(path + suffix);
  await Deno.rename(copy, path);
  for (const suffix of CONVERSION_COPY_FILES) await removeIfPresent(path + suffix);
  await syncFile(dataDir);
  const rows = Object.values(counts).reduce((sum, count) => sum + count, 0);
  return { database: path, outcome: "converted", encrypted: encrypt, tables: Object.keys(counts).length, rows };
}

/** `outpost db encrypt|decrypt` for main.ts: prints the result as JSON; exit 0, 1 on failure, 2 without a key. */
export async function runDatabaseCommand(store: StoreLocation, action: "encrypt" | "decrypt"): Promise<number> {
  if (store.encryptionKey === null) {
    console.error(
      `outpost db ${action} needs the database key: set spec.storage.encryption.enabled: true and give the key ` +
        "(OUTPOST_DB_KEY_FILE, systemd's credential db-key, or spec.storage.encryption.keyFile)" +
        (action === "decrypt" ? "; turn encryption off only after the database is decrypted" : ""),
    );
    return 2;
  }
  try {
    const result = await convertDatabase(store.dataDir, store.encryptionKey, {
      to: action === "encrypt" ? "encrypted" : "plaintext",
    });
    console.log(JSON.stringify({ ok: true, ...result }));
    if (result.outcome === "converted" && action === "encrypt") {
      console.error(
        "Encrypted. The plaintext file's old blocks may remain on the medium (flash remaps writes); " +
          'see README "Encryption at rest"',
      );
    }
    if (result.outcome === "converted" && action === "decrypt") {
      console.error("Decrypted: set spec.storage.encryption.enabled: false before the next start");
    }
    return 0;
  } catch (error) {
    console.error(`outpost db ${action} failed: ${(error as Error).message}`);
    return 1;
  }
}

/**
 * For `check --deployment`: whether the database file is encrypted as `store` says it should be,
 * and, when it is, whether the configured key opens it (a read-only connection beside the service).
 */
export async function encryptionAtRest(store: StoreLocation): Promise<{ pass: boolean; reason: string }> {
  const path = join(store.dataDir, DATABASE_FILE);
  let state;
  try {
    state = await databaseFileState(path);
  } catch (error) {
    const denied = error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable;
    return { pass: false, reason: `${denied ? "permission denied reading" : "cannot read"} ${path}` };
  }
  const key = store.encryptionKey;
  if (state === "none") {
    return { pass: true, reason: `no database yet at ${path}; it will be created ${key ? "encrypted" : "in clear"}` };
  }
  if (key === null) {
    return state === "plaintext"
      ? {
        pass: true,
        reason: `${path} is not encrypted at rest, as configured (spec.storage.encryption.enabled: false): ` +
          "whoever has the disk can read the buffer",
      }
      : {
        pass: false,
        reason: `${path} is encrypted, but spec.storage.encryption is not enabled: Outpost cannot open it`,
      };
  }
  if (state === "plaintext") {
    return {
      pass: false,
      reason: `${path} is not encrypted although spec.storage.encryption is enabled: run "outpost db encrypt"`,
    };
  }
  try {
    await withDatabaseFile(store, async () => {});
  } catch (error) {
    return { pass: false, reason: (error as Error).message };
  }
  return {
    pass: true,
    reason: `${path} is encrypted at rest (libSQL, AES-256-CBC) and opens with the key ${describeKeyLocation(key)}`,
  };
}

async function withConnection<T>(path: string, key: DatabaseKey | null, fn: (client: Client) => Promise<T>) {
  const client = connectTo(path, key);
  try {
    await prepareConnection(client, ["PRAGMA busy_timeout=1000"], path, key);
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Rows per table (sqlite_sequence included), by name: the copy must hold the same. */
async function tableCounts(client: Client): Promise<Record<string, number>> {
  const tables = await client.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
  const counts: Record<string, number> = {};
  for (const row of tables.rows) {
    const name = String(row.name);
    const result = await client.execute(`SELECT count(*) AS n FROM "${name.replaceAll('"', '""')}"`);
    counts[name] = Number(result.rows[0].n);
  }
  return counts;
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

async function syncFile(path: string): Promise<void> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.sync();
  } finally {
    file.close();
  }
}
