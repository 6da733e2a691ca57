import { type Client, createClient } from "@libsql/client";
import { join } from "node:path";
import type { Logger } from "../observability/log.ts";
import { databaseUrl } from "../permissions/native_addons.ts";
import { DataDirLock } from "./data_dir_lock.ts";
import { MIGRATIONS, SCHEMA_VERSION } from "./migrations.ts";

export const DATABASE_FILE = "outpost.db";

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
  "PRAGMA wal_autocheckpoint=1000",
  "PRAGMA journal_size_limit=67108864",
];
const INGEST_PRAGMAS = [...SHARED_PRAGMAS, "PRAGMA synchronous=FULL"];
const DERIVED_PRAGMAS = [...SHARED_PRAGMAS, "PRAGMA synchronous=NORMAL"];

export interface Database {
  /** Derived data and reads (`synchronous=NORMAL`). */
  readonly client: Client;
  /** Readings only (`synchronous=FULL`). */
  readonly ingest: Client;
  readonly path: string;
  readonly schemaVersion: number;
  close(): void;
}

/**
 * Opens (creating if needed) the libSQL file in `dataDir` and applies pending migrations, after
 * taking the data dir's lock: a second process on the same data dir fails here, naming the first.
 */
export async function openDatabase(dataDir: string, log: Logger): Promise<Database> {
  await Deno.mkdir(dataDir, { recursive: true });
  const lock = await DataDirLock.acquire(dataDir);
  const path = join(dataDir, DATABASE_FILE);
  const opened: Client[] = [];
  const closeAll = () => {
    for (const each of opened) each.close();
    lock.release();
  };
  try {
    const client = await openConnection(path, DERIVED_PRAGMAS, opened);
    await client.execute("PRAGMA journal_mode=WAL");
    const schemaVersion = await migrate(client, log);
    const ingest = await openConnection(path, INGEST_PRAGMAS, opened);
    return { client, ingest, path, schemaVersion, close: closeAll };
  } catch (error) {
    closeAll();
    throw error;
  }
}

/**
 * One connection (`concurrency: 1`, so the pool never opens a second) with its pragmas applied,
 * replaced by a fresh one after any failed call. A statement that fails with SQLITE_BUSY is not
 * always reset by the client, and its connection then refuses every later commit ("SQL
 * statements in progress") until garbage collection finalises it: a lock held for a moment by
 * another process would keep ingest failing long after it was released.
 */
async function openConnection(path: string, pragmas: readonly string[], opened: Client[]): Promise<Client> {
  const connect = async () => {
    const client = createClient({ url: databaseUrl(path), concurrency: 1 });
    for (const pragma of pragmas) await client.execute(pragma);
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
 * Runs `fn` on a separate connection to the store in `dataDir`, without its lock or migrations
 * (a running Outpost may keep writing): for commands such as `audit verify`. Throws NotFound when
 * there is no database.
 */
export async function withDatabaseFile<T>(dataDir: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const path = join(dataDir, DATABASE_FILE);
  await Deno.stat(path);
  const client = createClient({ url: databaseUrl(path), concurrency: 1 });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}
