import { type Client, createClient } from "@libsql/client";
import { join } from "node:path";
import type { SecretLocation } from "../config/config.ts";
import type { Logger } from "../observability/log.ts";
import { databaseUrl } from "../permissions/native_addons.ts";
import { DataDirLock } from "./data_dir_lock.ts";
import { DatabaseKey, describeKeyLocation } from "./encryption_key.ts";
import { StoreEncryptionError } from "./errors.ts";
import { MIGRATIONS, SCHEMA_VERSION } from "./migrations.ts";
import { WalCheckpoints } from "./wal_checkpoints.ts";

export const DATABASE_FILE = "outpost.db";

/**
 * When the WAL is checkpointed. A checkpoint blocks the event loop for its fsyncs (3-10 ms), and
 * the first commit after it starts the WAL again and fsyncs the WAL's header. The reading writer
 * checkpoints at INGEST_CHECKPOINT_PAGES just before one of its commits (src/store/wal_checkpoints.ts),
 * so both land on ingest commits, which wait for an fsync anyway, and a reading's flag (a scoring
 * pass's commit on the derived connection) is not held up by them. SQLite's automatic checkpoint,
 * inside whichever commit crosses AUTOMATIC_CHECKPOINT_PAGES, only comes into play when nothing
 * is ingested (a scorer catching up on a backlog, retention, rollups): the WAL then stays under
 * about 16.5 MB while checkpoints can complete. Both count WAL frames (a page written again is
 * another frame).
 */
export const INGEST_CHECKPOINT_PAGES = 1_000;
export const AUTOMATIC_CHECKPOINT_PAGES = 4_000;
/**
 * Two connections with fixed roles, each configured once when it opens (a libSQL client pools
 * connections unless `concurrency` is 1, and a pragma reaches only the connection it runs on):
 *
 * - `ingest`: WAL with `synchronous=FULL`. Every commit fsyncs the WAL before it returns, so a
 *   reading acknowledged after its commit survives a process crash and a power loss (on storage
 *   that honours fsync). Only the reading writer uses it. See README "Durability".
 * - `client` (derived data and reads): `synchronous=NORMAL`. A commit is durable against a
 *   process crash at once and against power loss at the next fsync'd commit or checkpoint; a
 *   power cut can undo the last derived commits together with the cursor that covers them, so
 *   the work is simply done again. No reading depends on it.
 *
 * Both wait up to `busy_timeout` for a lock held by another process instead of failing at once;
 * it is short because libSQL's calls are synchronous: the wait blocks the event loop (and
 * /healthz) for as long. A longer lock makes ingest answer 503 with Retry-After; the first
 * commit after the lock is released succeeds.
 */
const SHARED_PRAGMAS = [
  "PRAGMA busy_timeout=250",
  "PRAGMA cache_size=-1024",
  `PRAGMA wal_autocheckpoint=${AUTOMATIC_CHECKPOINT_PAGES}`,
  "PRAGMA journal_size_limit=67108864",
];
const INGEST_PRAGMAS = [...SHARED_PRAGMAS, "PRAGMA synchronous=FULL"];
const DERIVED_PRAGMAS = [...SHARED_PRAGMAS, "PRAGMA synchronous=NORMAL"];
/**
 * An encrypted database keeps SQLite's temporary files (sorts, statement journals, VACUUM) in
 * memory: they would otherwise go to the temp folder outside the encrypted file.
 */
const ENCRYPTED_PRAGMAS = ["PRAGMA temp_store=MEMORY"];

/** Where a store is and how it opens: the fields of `config.storage` the store needs. */
export interface StoreLocation {
  readonly dataDir: string;
  /** The key's file when the database is encrypted at rest (src/store/encryption_key.ts). */
  readonly encryptionKey: SecretLocation | null;
}

export interface Database {
  /** Derived data and reads (`synchronous=NORMAL`). */
  readonly client: Client;
  /** Readings only (`synchronous=FULL`). */
  readonly ingest: Client;
  /** Checkpoints the WAL before an ingest commit when due (src/store/wal_checkpoints.ts). */
  readonly checkpoints: WalCheckpoints;
  readonly path: string;
  readonly schemaVersion: number;
  close(): void;
}

/**
 * Opens (creating if needed) the libSQL file in `dataDir` and applies pending migrations, after
 * taking the data dir's lock: a second process on the same data dir fails here, naming the first.
 * With `encryptionKey` the file is encrypted with that key (a new file is created encrypted); a
 * file that does not match the configuration throws StoreEncryptionError and is left untouched.
 */
export async function openDatabase(
  dataDir: string,
  log: Logger,
  options: { encryptionKey?: SecretLocation | null } = {},
): Promise<Database> {
  const key = options.encryptionKey ? await DatabaseKey.load(options.encryptionKey) : null;
  await Deno.mkdir(dataDir, { recursive: true });
  const lock = await DataDirLock.acquire(dataDir);
  const path = join(dataDir, DATABASE_FILE);
  const opened: Client[] = [];
  const closeAll = () => {
    for (const each of opened) each.close();
    lock.release();
  };
  try {
    await removeConversionLeftovers(path, log);
    await expectEncryption(path, key);
    const client = await openConnection(path, DERIVED_PRAGMAS, opened, key);
    await client.execute("PRAGMA journal_mode=WAL");
    const schemaVersion = await migrate(client, log);
    const ingest = await openConnection(path, INGEST_PRAGMAS, opened, key);
    const checkpoints = new WalCheckpoints(path, ingest, INGEST_CHECKPOINT_PAGES, log);
    const close = () => {
      closeAll();
      // Only now: closing it while a connection is open would drop SQLite's locks on the file.
      checkpoints.close();
    };
    return { client, ingest, checkpoints, path, schemaVersion, close };
  } catch (error) {
    closeAll();
    throw error;
  }
}

/** The copy `outpost db encrypt|decrypt` writes beside the database before it replaces it. */
export const CONVERSION_COPY_SUFFIX = ".converting";
/** The copy's own files. */
export const CONVERSION_COPY_FILES = ["", "-wal", "-shm", "-journal"].map((end) => CONVERSION_COPY_SUFFIX + end);

/**
 * Removes what an interrupted `db encrypt|decrypt` left beside the database. The data dir's lock is
 * held, so no conversion runs, and a conversion only renames a complete copy: a leftover is never
 * the only good copy. An interrupted decrypt leaves a plaintext copy of the whole buffer, which
 * must not stay on the card of a store that remains encrypted.
 */
async function removeConversionLeftovers(path: string, log: Logger): Promise<void> {
  for (const suffix of CONVERSION_COPY_FILES) {
    const leftover = path + suffix;
    try {
      await Deno.remove(leftover);
      log.warn("store.conversion_leftover_removed", { path: leftover });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        log.warn("store.conversion_leftover_kept", { path: leftover, error });
      }
    }
  }
}

/**
 * One connection (`concurrency: 1`, so the pool never opens a second) with its pragmas applied,
 * replaced by a fresh one after any failed call. A statement that fails with SQLITE_BUSY is not
 * always reset by the client, and its connection then refuses every later commit ("SQL
 * statements in progress") until garbage collection finalises it: a lock held for a moment by
 * another process would keep ingest failing long after it was released.
 */
async function openConnection(
  path: string,
  pragmas: readonly string[],
  opened: Client[],
  key: DatabaseKey | null,
): Promise<Client> {
  const connect = async () => {
    const client = connectTo(path, key);
    try {
      await prepareConnection(client, pragmas, path, key);
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  };
  let current = await connect();
  let failed = false;
  const healing = <K extends "execute" | "batch">(method: K) => async (...args: Parameters<Client[K]>) => {
    if (failed) {
      current.close();
      current = await connect();
      failed = false;
    }
    try {
      // deno-lint-ignore no-explicit-any
      return await (current[method] as (...args: any[]) => ReturnType<Client[K]>)(...args);
    } catch (error) {
      failed = true;
      throw error;
    }
  };
  const methods = { execute: healing("execute"), batch: healing("batch") };
  const client = new Proxy(current, {
    get(_target, property) {
      if (property === "execute" || property === "batch") return methods[property];
      const value = Reflect.get(current, property);
      return typeof value === "function" ? value.bind(current) : value;
    },
  });
  opened.push(client);
  return client;
}

async function migrate(client: Client, log: Logger): Promise<number> {
  await client.execute(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
  );
  const result = await client.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migrations");
  const current = Number(result.rows[0].version);
  if (current > SCHEMA_VERSION) {
    log.warn("store.schema_newer", { databaseVersion: current, knownVersion: SCHEMA_VERSION });
    return current;
  }
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue;
    await client.batch([
      ...migration.statements,
      {
        sql: "INSERT INTO schema_migrations (version, description, applied_ms) VALUES (?, ?, ?)",
        args: [migration.version, migration.description, Date.now()],
      },
    ], "write");
    log.info("store.migrated", { version: migration.version, description: migration.description });
  }
  return Math.max(current, SCHEMA_VERSION);
}

/** Bytes in use by live pages (free pages left by deletes are reused, so they do not count). */
export async function usedBytes(client: Client): Promise<number> {
  const result = await client.execute(
    "SELECT (page_count - freelist_count) * page_size AS used FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
  );
  return Number(result.rows[0].used);
}

/**
 * Runs `fn` on a separate connection to the store at `store`, without its lock or migrations (a
 * running Outpost may keep writing): for commands such as `audit verify`. Throws NotFound when
 * there is no database, StoreEncryptionError when it does not match `store.encryptionKey`.
 */
export async function withDatabaseFile<T>(store: StoreLocation, fn: (client: Client) => Promise<T>): Promise<T> {
  const path = join(store.dataDir, DATABASE_FILE);
  await Deno.stat(path);
  const key = store.encryptionKey ? await DatabaseKey.load(store.encryptionKey) : null;
  await expectEncryption(path, key);
  const client = connectTo(path, key);
  try {
    await prepareConnection(client, [], path, key);
    return await fn(client);
  } finally {
    client.close();
  }
}

/** One libSQL connection to `path`, encrypted with `key` when there is one. */
export function connectTo(path: string, key: DatabaseKey | null): Client {
  return createClient({ url: databaseUrl(path), concurrency: 1, ...(key ? { encryptionKey: key.reveal() } : {}) });
}

/** The first bytes of every plaintext SQLite file; an encrypted file's first page is ciphertext. */
const PLAINTEXT_HEADER = "SQLite format 3\0";

/**
 * What the file at `path` is, from its first 16 bytes: `none` (missing or empty: a new database
 * takes the configured encryption), `plaintext`, or `encrypted` (anything else: libSQL's
 * encryption, or a file that is not a database at all).
 */
export async function databaseFileState(path: string): Promise<"none" | "plaintext" | "encrypted"> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "none";
    throw error;
  }
  try {
    const header = new Uint8Array(PLAINTEXT_HEADER.length);
    let read = 0;
    while (read < header.length) {
      const count = await file.read(header.subarray(read));
      if (count === null) break;
      read += count;
    }
    if (read === 0) return "none";
    return new TextDecoder().decode(header.subarray(0, read)) === PLAINTEXT_HEADER ? "plaintext" : "encrypted";
  } finally {
    file.close();
  }
}

/** Refuses a file whose encryption differs from the configuration, naming the case and the way out. */
async function expectEncryption(path: string, key: DatabaseKey | null): Promise<void> {
  const state = await databaseFileState(path);
  if (key && state === "plaintext") {
    throw new StoreEncryptionError(
      `The database ${path} is not encrypted, but spec.storage.encryption is enabled: with Outpost stopped, ` +
        `run "outpost db encrypt" to encrypt it with the key ${describeKeyLocation(key.location)}, ` +
        "or set spec.storage.encryption.enabled: false",
      path,
      "not_encrypted",
    );
  }
  if (!key && state === "encrypted") {
    throw new StoreEncryptionError(
      `The database ${path} is encrypted (or is not a database), but spec.storage.encryption is not enabled: ` +
        "enable it with the key the database was encrypted with",
      path,
      "encrypted",
    );
  }
}

/**
 * Runs a new connection's first statements; with a key, then reads the schema, which proves the
 * key: a key that does not open the file makes libSQL answer SQLITE_NOTADB to the first read.
 */
export async function prepareConnection(
  client: Client,
  statements: readonly string[],
  path: string,
  key: DatabaseKey | null,
): Promise<void> {
  const proof = key ? [...ENCRYPTED_PRAGMAS, "SELECT count(*) FROM sqlite_schema"] : [];
  try {
    for (const statement of [...statements, ...proof]) await client.execute(statement);
  } catch (error) {
    if (!key || (error as { code?: string }).code !== "SQLITE_NOTADB") throw error;
    throw new StoreEncryptionError(
      `The database ${path} does not open with the key ${describeKeyLocation(key.location)}: ` +
        "wrong key, or the file is not an Outpost database; configure the key it was encrypted with",
      path,
      "wrong_key",
      { cause: error },
    );
  }
}
